"""hyphal.control.xds: the ADS server (xDS v3, state of the world) over grpc.aio.

Public API: `Snapshot`, `NodeInfo`, `SnapshotSource`, `StaticSource` and the type URLs from
`snapshot`; `AdsServer` and `ConnectionInfo` from `server`; `build_server` from `serve`.
"""
