"""Python SDK for Veriscope authentication scanners."""

__version__ = "0.1.0"
