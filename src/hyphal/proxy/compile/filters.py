"""Compile the inbound request filters (`envoy.filters.http.jwt_authn`,
`envoy.filters.http.local_ratelimit`) into hyphal.proxy.filters objects."""

from __future__ import annotations

from typing import Any

from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2
from envoy.type.v3 import percent_pb2

from hyphal.proxy.compile.common import Where, join
from hyphal.proxy.filters.jwt import (
    DEFAULT_LOCATIONS,
    JwkError,
    JwtFilter,
    JwtProvider,
    TokenLocation,
    parse_jwks,
)
from hyphal.proxy.filters.ratelimit import BucketSpec, RateLimitConfig, RateLimitFilter

PRINCIPAL_DESCRIPTOR = "source.principal"


def _fraction(rfp: Any, w: Where, path: str) -> float:
    if not rfp.HasField("default_value"):
        return 1.0
    fp = rfp.default_value
    denominators = {percent_pb2.FractionalPercent.HUNDRED: 100,
                    percent_pb2.FractionalPercent.TEN_THOUSAND: 10_000,
                    percent_pb2.FractionalPercent.MILLION: 1_000_000}
    if fp.denominator not in denominators:
        raise w.error(join(path, "default_value.denominator"), "unknown denominator")
    return min(1.0, float(fp.numerator) / denominators[fp.denominator])


def _bucket(tb: Any, w: Where, path: str) -> BucketSpec:
    interval = tb.fill_interval.seconds + tb.fill_interval.nanos / 1e9
    per_fill = tb.tokens_per_fill.value if tb.HasField("tokens_per_fill") else 1
    try:
        return BucketSpec(tb.max_tokens, per_fill, interval)
    except ValueError as exc:
        raise w.error(path, str(exc)) from None


def local_ratelimit(any_msg: Any, w: Where, path: str, listener: str) -> RateLimitFilter:
    rl = w.unpack(any_msg, local_rate_limit_pb2.LocalRateLimit, path)
    w.only(rl, {"stat_prefix", "status", "token_bucket", "filter_enabled", "filter_enforced",
                "descriptors", "enable_x_ratelimit_headers", "max_dynamic_descriptors"}, path)
    if rl.HasField("status") and rl.status.code not in (0, 429):
        raise w.error(join(path, "status"), "only 429 is supported")
    total = _bucket(rl.token_bucket, w, join(path, "token_bucket")) \
        if rl.HasField("token_bucket") else None
    identity: BucketSpec | None = None
    overrides: list[tuple[str, BucketSpec]] = []
    for i, d in enumerate(rl.descriptors):
        dpath = join(path, f"descriptors[{i}]")
        if len(d.entries) != 1 or d.entries[0].key != PRINCIPAL_DESCRIPTOR:
            raise w.error(join(dpath, "entries"), "the hyphal sidecar supports one entry keyed "
                          f"{PRINCIPAL_DESCRIPTOR!r} (the caller's SPIFFE id; empty value: a "
                          "bucket per caller)")
        bucket = _bucket(d.token_bucket, w, join(dpath, "token_bucket"))
        if d.entries[0].value:
            overrides.append((d.entries[0].value, bucket))
        else:
            identity = bucket
    config = RateLimitConfig(
        stat_prefix=listener,
        total=total,
        identity=identity,
        overrides=tuple(overrides),
        max_identities=rl.max_dynamic_descriptors.value or 20,  # Envoy's default is 20
        enabled=_fraction(rl.filter_enabled, w, join(path, "filter_enabled")),
        enforced=_fraction(rl.filter_enforced, w, join(path, "filter_enforced")),
        x_ratelimit_headers=rl.enable_x_ratelimit_headers == ratelimit_pb2.DRAFT_VERSION_03,
    )
    return RateLimitFilter.for_config(config)


def _provider(name: str, p: Any, w: Where, path: str) -> JwtProvider:
    w.only(p, {"issuer", "audiences", "local_jwks", "forward", "from_headers", "from_params",
               "forward_payload_header", "clock_skew_seconds", "payload_in_metadata"}, path)
    if not p.issuer:
        raise w.error(join(path, "issuer"), "required")
    source = p.local_jwks.WhichOneof("specifier")
    if source not in ("inline_string", "inline_bytes"):
        raise w.error(join(path, "local_jwks"), "inline JWKS only (the control plane fetches "
                      "jwksUri; the sidecar never does)")
    text = p.local_jwks.inline_string if source == "inline_string" else \
        p.local_jwks.inline_bytes.decode("utf-8", "replace")
    try:
        keys = parse_jwks(text)
    except JwkError as exc:
        raise w.error(join(path, "local_jwks"), str(exc)) from None
    locations = tuple(TokenLocation(h.name.lower(), h.value_prefix) for h in p.from_headers)
    locations += tuple(TokenLocation(param=q) for q in p.from_params)
    return JwtProvider(
        name=name,
        issuer=p.issuer,
        keys=keys,
        audiences=frozenset(p.audiences),
        locations=locations or DEFAULT_LOCATIONS,
        forward=p.forward,
        payload_header=p.forward_payload_header.lower() or None,
        clock_skew_s=float(p.clock_skew_seconds or 60),
    )


def jwt_authn(any_msg: Any, w: Where, path: str) -> JwtFilter:
    auth = w.unpack(any_msg, jwt_pb2.JwtAuthentication, path)
    w.only(auth, {"providers", "rules"}, path)
    providers = {n: _provider(n, auth.providers[n], w, join(path, f"providers[{n!r}]"))
                 for n in sorted(auth.providers)}
    if len(auth.rules) != 1:
        raise w.error(join(path, "rules"), "exactly one rule (match prefix \"/\") is supported")
    rule = auth.rules[0]
    rpath = join(path, "rules[0]")
    if rule.match.WhichOneof("path_specifier") != "prefix" or rule.match.prefix != "/":
        raise w.error(join(rpath, "match"), 'only prefix "/" is supported')
    req = rule.requires
    kind = req.WhichOneof("requires_type")
    names: list[str] = []
    allow_missing = allow_failed = False
    items = list(req.requires_any.requirements) if kind == "requires_any" else [req]
    for i, r in enumerate(items):
        rk = r.WhichOneof("requires_type")
        if rk == "provider_name":
            if r.provider_name not in providers:
                raise w.error(join(rpath, f"requires[{i}].provider_name"),
                              f"{r.provider_name!r} is not a provider")
            names.append(r.provider_name)
        elif rk == "allow_missing":
            allow_missing = True
        elif rk == "allow_missing_or_failed":
            allow_failed = True
        else:
            raise w.error(join(rpath, f"requires[{i}]"), f"{rk} is not supported "
                          "(provider_name, allow_missing, allow_missing_or_failed)")
    return JwtFilter(tuple(providers[n] for n in names), allow_missing=allow_missing,
                     allow_failed=allow_failed)
