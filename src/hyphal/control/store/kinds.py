"""Resource kinds by every name a user may type: singular, plural, short form, any case."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class KindInfo:
    kind: str
    group: str
    plural: str
    short: tuple[str, ...] = ()
    namespaced: bool = True

    @property
    def resource_name(self) -> str:
        """kubectl's `virtualservice.networking.istio.io` spelling."""
        return f"{self.kind.lower()}.{self.group}"


KINDS: tuple[KindInfo, ...] = (
    KindInfo("VirtualService", "networking.istio.io", "virtualservices", ("vs",)),
    KindInfo("DestinationRule", "networking.istio.io", "destinationrules", ("dr",)),
    KindInfo("ServiceEntry", "networking.istio.io", "serviceentries", ("se",)),
    KindInfo("Gateway", "networking.istio.io", "gateways", ("gw",)),
    KindInfo("Sidecar", "networking.istio.io", "sidecars", ()),
    KindInfo("AuthorizationPolicy", "security.istio.io", "authorizationpolicies", ("ap",)),
    KindInfo("PeerAuthentication", "security.istio.io", "peerauthentications", ("pa",)),
    KindInfo("RequestAuthentication", "security.istio.io", "requestauthentications", ("ra",)),
    KindInfo("HTTPRoute", "gateway.networking.k8s.io", "httproutes", ()),
    KindInfo("GRPCRoute", "gateway.networking.k8s.io", "grpcroutes", ()),
    KindInfo("Service", "hyphal.dev", "services", ("svc",)),
    KindInfo("Workload", "hyphal.dev", "workloads", ("wl",)),
    KindInfo("RateLimitPolicy", "hyphal.dev", "ratelimitpolicies", ("rlp",)),
)

_BY_NAME: dict[str, KindInfo] = {}
for _info in KINDS:
    for _alias in (_info.kind, _info.plural, *_info.short):
        _BY_NAME[_alias.lower()] = _info


def lookup(name: str) -> KindInfo | None:
    """The kind a user meant by `name` (`vs`, `VirtualServices`, `virtualservice`...)."""
    key = name.strip().lower()
    if "." in key:  # `virtualservice.networking.istio.io` or `vs.networking.istio.io`
        key = key.split(".", 1)[0]
    return _BY_NAME.get(key)


def resolve(name: str) -> str:
    """Canonical kind for `name`; ValueError listing the known kinds if there is none."""
    info = lookup(name)
    if info is None:
        known = ", ".join(
            f"{k.kind} ({'/'.join((k.plural, *k.short))})" for k in KINDS
        )
        raise ValueError(f"unknown resource kind {name!r}; known kinds: {known}")
    return info.kind


def group_of(kind: str, api_version: str | None = None) -> str:
    if api_version and "/" in api_version:
        return api_version.split("/", 1)[0]
    info = lookup(kind)
    return info.group if info else ""
