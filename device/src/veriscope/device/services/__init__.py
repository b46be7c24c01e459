"""gRPC servicers. They only translate between the wire (veriscope.v1) and the daemon's layers."""
