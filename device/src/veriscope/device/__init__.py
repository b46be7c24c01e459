"""The Veriscope device daemon: hardware behind interfaces, the capture and verdict pipeline, and the gRPC API."""

__version__ = "0.1.0"
