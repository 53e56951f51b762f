"""`hyphal.dev/v1alpha1` RateLimitPolicy: local (per-sidecar) rate limits on a destination.

Shaped like Linkerd's HTTPLocalRateLimitPolicy, because Istio has no first-class rate-limit
resource (its users write EnvoyFilter, which hyphal does not accept). Enforced by the
destination's inbound sidecars, so a limit holds whoever the caller is.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, PlainValidator, model_validator

from hyphal.config.models.base import Model, ResourceModel, choice, exactly_one, fail, int_range
from hyphal.config.models.hyphal import HYPHAL_API_VERSIONS
from hyphal.config.models.security import WorkloadSelector

__all__ = [
    "ClientRef",
    "IdentityLimit",
    "RateLimitOverride",
    "RateLimitPolicy",
    "RateLimitPolicySpec",
    "RateLimitTargetRef",
    "TotalLimit",
]

Rate = Annotated[int, PlainValidator(int_range(1, 1_000_000), json_schema_input_type=int)]


class RateLimitTargetRef(Model):
    """The Service (every Workload it selects) or the Workload the limit applies to."""

    kind: Annotated[Literal["Service", "Workload"], choice(("Service", "Workload"))]
    name: str = Field(min_length=1)


class TotalLimit(Model):
    """One bucket for all callers of one sidecar: `burst` tokens, refilled at the rate."""

    requests_per_second: Rate
    burst: Rate | None = None


class IdentityLimit(Model):
    """A bucket per caller identity (SPIFFE id; plaintext callers share one bucket)."""

    requests_per_second: Rate


class ClientRef(Model):
    kind: Annotated[Literal["ServiceAccount"], choice(("ServiceAccount",))] = "ServiceAccount"
    name: str = Field(min_length=1)
    namespace: str | None = None  # default: the policy's namespace


class RateLimitOverride(Model):
    """A per-identity rate for the listed clients, instead of `identity`'s."""

    requests_per_second: Rate
    client_refs: tuple[ClientRef, ...] = Field(min_length=1)


class RateLimitPolicySpec(Model):
    target_ref: RateLimitTargetRef | None = None
    selector: WorkloadSelector | None = None
    total: TotalLimit | None = None
    identity: IdentityLimit | None = None
    overrides: tuple[RateLimitOverride, ...] = ()

    @model_validator(mode="after")
    def _shape(self) -> RateLimitPolicySpec:
        exactly_one(self, ("target_ref", "selector"))
        if self.total is None and self.identity is None and not self.overrides:
            raise fail("set at least one of total, identity, overrides")
        return self


class RateLimitPolicy(ResourceModel):
    KIND: ClassVar[str] = "RateLimitPolicy"
    API_VERSIONS: ClassVar[tuple[str, ...]] = HYPHAL_API_VERSIONS
    kind: Literal["RateLimitPolicy"] = "RateLimitPolicy"
    spec: RateLimitPolicySpec
