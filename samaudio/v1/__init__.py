"""Python modules generated from proto/samaudio/v1 (protoc; regenerate with `python -m samaudio.v1.generate`)."""
