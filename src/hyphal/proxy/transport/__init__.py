"""Transports for the sidecar: TLS material and contexts, peer identity."""
