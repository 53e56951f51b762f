"""HTTP/1.1 for the sidecar: sans-I/O codec and header rules, and the asyncio server protocol."""
