"""Generated protobuf and gRPC code for Istio's certificate service (istio.v1.auth)."""
