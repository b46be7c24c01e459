"""veriscope-tool: flashing, update bundles, provisioning and diagnostics for Veriscope units."""

__version__ = "0.1.0"
