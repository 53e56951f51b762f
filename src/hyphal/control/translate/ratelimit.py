"""RateLimitPolicy -> Envoy `envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit`
for the inbound listeners of the workloads it selects.

`total` is the filter's token bucket; `identity` and `overrides` are descriptors keyed
`source.principal` (hyphal's descriptor key: the caller's verified SPIFFE id): an empty value
is a bucket per distinct caller (Envoy's dynamic descriptors, bounded by
`max_dynamic_descriptors`), a SPIFFE id is that caller's own rate.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2
from envoy.type.v3 import http_status_pb2, token_bucket_pb2

from hyphal.config.models import RateLimitPolicy
from hyphal.config.models.ratelimit import ClientRef
from hyphal.control.translate.inputs import MeshIndex
from hyphal.control.translate.pb import Message, base_pb2, duration, hcm_pb2, pack, percent_pb2
from hyphal.identity.spiffe import spiffe_uri

LOCAL_RATELIMIT_FILTER = "envoy.filters.http.local_ratelimit"
PRINCIPAL_DESCRIPTOR = "source.principal"
MAX_IDENTITIES = 10_000
STAT_PREFIX = "http_local_rate_limiter"


def selects(policy: RateLimitPolicy, index: MeshIndex, namespace: str, workload: str,
            labels: Mapping[str, str]) -> bool:
    """Whether `policy` applies to a workload (its namespace only: limits are not mesh-wide)."""
    if policy.namespace != namespace:
        return False
    ref = policy.spec.target_ref
    if ref is not None and ref.kind == "Workload":
        return ref.name == workload
    if ref is not None:
        svc = next((s for s in index.services.values()
                    if s.mesh and s.name == ref.name and s.namespace == namespace), None)
        return bool(svc is not None and svc.selector
                    and all(labels.get(k) == v for k, v in svc.selector.items()))
    sel = policy.spec.selector
    return sel is not None and all(labels.get(k) == v for k, v in sel.match_labels.items())


def _bucket(rps: int, burst: int | None = None) -> Message:
    b = token_bucket_pb2.TokenBucket()
    b.max_tokens = burst or rps
    b.tokens_per_fill.value = rps
    b.fill_interval.CopyFrom(duration(1.0))
    return b


def _all(percent: int = 100) -> Message:
    return base_pb2.RuntimeFractionalPercent(
        default_value=percent_pb2.FractionalPercent(
            numerator=percent, denominator=percent_pb2.FractionalPercent.HUNDRED
        ),
    )


def _descriptor(value: str, rps: int) -> Message:
    return ratelimit_pb2.LocalRateLimitDescriptor(
        entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key=PRINCIPAL_DESCRIPTOR, value=value)],
        token_bucket=_bucket(rps),
    )


def _client_id(ref: ClientRef, policy_ns: str, trust_domain: str) -> str:
    return spiffe_uri(trust_domain, ref.namespace or policy_ns, ref.name)


def build_local_ratelimit(policy: RateLimitPolicy, trust_domain: str) -> Message:
    """The LocalRateLimit filter config for one policy."""
    spec = policy.spec
    rl = local_rate_limit_pb2.LocalRateLimit(
        stat_prefix=STAT_PREFIX,
        status=http_status_pb2.HttpStatus(code=http_status_pb2.TooManyRequests),
        filter_enabled=_all(),
        filter_enforced=_all(),
        enable_x_ratelimit_headers=ratelimit_pb2.DRAFT_VERSION_03,
    )
    rl.filter_enabled.runtime_key = "hyphal.local_rate_limit_enabled"
    rl.filter_enforced.runtime_key = "hyphal.local_rate_limit_enforced"
    if spec.total is not None:
        rl.token_bucket.CopyFrom(_bucket(spec.total.requests_per_second, spec.total.burst))
    if spec.identity is not None:
        rl.descriptors.append(_descriptor("", spec.identity.requests_per_second))
    seen: set[str] = set()
    for o in spec.overrides:
        for ref in o.client_refs:
            sid = _client_id(ref, policy.namespace, trust_domain)
            if sid not in seen:  # the first override naming a client wins
                seen.add(sid)
                rl.descriptors.append(_descriptor(sid, o.requests_per_second))
    if rl.descriptors:
        rl.max_dynamic_descriptors.value = MAX_IDENTITIES
    return rl


def local_ratelimit_filter(config: Message) -> Message:
    return hcm_pb2.HttpFilter(name=LOCAL_RATELIMIT_FILTER, typed_config=pack(config))


def for_workload(policies: Iterable[RateLimitPolicy], index: MeshIndex, namespace: str,
                 workload: str, labels: Mapping[str, str], trust_domain: str
                 ) -> Message | None:
    """The filter for a workload: the first selecting policy by name (one policy per
    workload; others are ignored, as Linkerd does with several on one target)."""
    for p in sorted(policies, key=lambda p: p.name):
        if selects(p, index, namespace, workload, labels):
            return local_ratelimit_filter(build_local_ratelimit(p, trust_domain))
    return None
