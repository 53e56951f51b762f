"""Secret (SDS) builders: the trust bundle `ROOTCA`. The workload's own `default` is never sent."""

from __future__ import annotations

from hyphal.control.translate import naming
from hyphal.control.translate.pb import Message, secret_pb2


def build_root_ca(ca_bundle_pem: bytes) -> Message:
    """`ROOTCA`: a validation context trusting every root in the PEM bundle."""
    if b"-----BEGIN CERTIFICATE-----" not in ca_bundle_pem:
        raise ValueError("the CA bundle holds no PEM certificate; pass the trust-bundle.pem bytes")
    s = secret_pb2.Secret(name=naming.ROOTCA)
    s.validation_context.trusted_ca.inline_bytes = ca_bundle_pem
    return s
