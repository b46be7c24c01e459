"""Generated bindings of the veriscope.v1 API. Do not edit: run `make protos`."""
