"""Fault filter (Envoy HTTPFault): decide delay and abort for one request (pure)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from hyphal.proxy.runtime.tables import FaultSpec

# gRPC status → HTTP status used when a grpc abort hits an HTTP/1.1 request.
_GRPC_TO_HTTP = {1: 499, 2: 500, 3: 400, 4: 504, 5: 404, 7: 403, 8: 429, 12: 501, 13: 500,
                 14: 503, 16: 401}


@dataclass(frozen=True, slots=True)
class FaultDecision:
    delay_s: float | None
    abort_status: int | None


def decide(fault: FaultSpec, rng: random.Random) -> FaultDecision:
    delay = None
    if fault.delay_s is not None and fault.delay_fraction > 0:
        if rng.random() < fault.delay_fraction:
            delay = fault.delay_s
    abort = None
    if fault.abort_fraction > 0 and rng.random() < fault.abort_fraction:
        if fault.abort_status is not None:
            abort = fault.abort_status
        elif fault.abort_grpc_status is not None:
            abort = _GRPC_TO_HTTP.get(fault.abort_grpc_status, 500)
    return FaultDecision(delay, abort)
