"""HTTP/2 and gRPC through the sidecar: downstream and upstream connections over the `h2` library.

`detect` picks the protocol of a new connection (the h2c preface, a CONNECT tunnel, ALPN),
`server` is the downstream connection, `upstream` the multiplexed upstream connections and
their pool, `stream` one request stream through route, policy and upstream attempts, `grpc`
the gRPC rules (status codes, local replies). `endpoint` is the flow-controlled send side
that both connection kinds share.
"""
