"""HTTP filters of the sidecar, one module each."""
