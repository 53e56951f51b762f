"""Policy end to end, real processes on 127.0.0.1: a RateLimitPolicy, a RequestAuthentication
with an AuthorizationPolicy requiring a request principal, and PERMISSIVE mTLS.

`hyphal control` and four workloads in namespace `demo` (echo apps that also echo the request
headers they got, each behind its own `hyphal proxy`): `web` (the caller), `limited` (20 rps,
burst 20), `secure` (JWT: an Ed25519 key whose JWKS is inline; `requestPrincipals` required;
the verified payload goes to the app in `x-jwt-payload`) and `free` (no limit, PERMISSIVE).
"""

from __future__ import annotations

import base64
import http.client
import json
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from mesh_harness import APP_SOURCE, Mesh, http_get, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

NS = "demo"
ISSUER = "https://issuer.e2e"
KEY = ed25519.Ed25519PrivateKey.generate()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(claims: dict[str, Any], key: ed25519.Ed25519PrivateKey = KEY) -> str:
    head = b64(json.dumps({"alg": "EdDSA", "typ": "JWT", "kid": "e2e"}).encode())
    body = b64(json.dumps(claims).encode())
    return f"{head}.{body}.{b64(key.sign(f'{head}.{body}'.encode()))}"


RAW = KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
JWKS = json.dumps({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "e2e", "x": b64(RAW)}]})

# The harness's echo app, also answering with the headers it received.
HEADERS_APP = APP_SOURCE.replace(
    '"xfcc": self.headers.get("x-forwarded-client-cert", "")}',
    '"xfcc": self.headers.get("x-forwarded-client-cert", ""), '
    '"headers": {k.lower(): v for k, v in self.headers.items()}}',
)
assert HEADERS_APP != APP_SOURCE


def service(name: str) -> str:
    return f"""\
apiVersion: hyphal.dev/v1alpha1
kind: Service
metadata: {{name: {name}, namespace: demo}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: 8080, protocol: HTTP}}]
---
apiVersion: hyphal.dev/v1alpha1
kind: Workload
metadata: {{name: {name}, namespace: demo}}
spec:
  labels: {{app: {name}}}
  serviceAccount: {name}
  ports: [{{name: http, port: 8080, protocol: HTTP}}]
"""


POLICIES = f"""\
apiVersion: hyphal.dev/v1alpha1
kind: RateLimitPolicy
metadata: {{name: limited, namespace: demo}}
spec:
  targetRef: {{kind: Service, name: limited}}
  total: {{requestsPerSecond: 20}}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: secure, namespace: demo}}
spec:
  selector: {{matchLabels: {{app: secure}}}}
  jwtRules:
  - issuer: {ISSUER}
    audiences: [secure]
    jwks: '{JWKS}'
    outputPayloadToHeader: x-jwt-payload
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: secure, namespace: demo}}
spec:
  selector: {{matchLabels: {{app: secure}}}}
  rules: [{{from: [{{source: {{requestPrincipals: ['{ISSUER}/*']}}}}]}}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: free, namespace: demo}}
spec:
  selector: {{matchLabels: {{app: free}}}}
  mtls: {{mode: PERMISSIVE}}
"""

RESOURCES = "---\n".join([*(service(n) for n in ("web", "limited", "secure", "free")), POLICIES])


def routes_to(mesh: Mesh, host: str) -> bool:
    status, _, _ = get(mesh, f"http://{host}:8080/ready-check")
    return status not in (0, 404, 503)


def get(mesh: Mesh, url: str, headers: dict[str, str] | None = None,
        conn: http.client.HTTPConnection | None = None
        ) -> tuple[int, dict[str, str], bytes]:
    """Proxy-form GET through web's sidecar: (status, lower-case headers, body)."""
    own = conn is None
    c = conn or http.client.HTTPConnection("127.0.0.1", mesh.workloads["web"].outbound_port,
                                           timeout=5)
    try:
        c.request("GET", url, headers=headers or {})
        resp = c.getresponse()
        body = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    except OSError:
        return 0, {}, b""
    finally:
        if own:
            c.close()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    m = Mesh(tmp_path_factory.mktemp("policy-mesh"))
    try:
        (m.root / "echo_app.py").write_text(HEADERS_APP)
        m.start_control(RESOURCES)
        for name in ("web", "limited", "secure", "free"):
            m.add_workload(name, NS, name, {"app": name})
        m.wait_ready()
        for host in ("secure", "free"):
            wait_until(f"web routes to {host}", partial(routes_to, m, host), 20)
        yield m
    finally:
        m.stop()


def test_rate_limit_on_a_service_and_not_on_another(mesh: Mesh) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", mesh.workloads["web"].outbound_port,
                                      timeout=5)
    wait_until("limited is routed", lambda: get(mesh, "http://limited:8080/", conn=conn)[0]
               in (200, 429), 20)
    time.sleep(1.2)  # let the bucket refill after the readiness probes
    codes: list[int] = []
    limited_headers: dict[str, str] = {}
    started = time.monotonic()
    for _ in range(200):
        status, headers, body = get(mesh, "http://limited:8080/burst", conn=conn)
        codes.append(status)
        if status == 429:
            limited_headers = headers
            assert body.startswith(b"429") and b"rate_limited" in body
    elapsed = time.monotonic() - started
    conn.close()
    allowed, refused = codes.count(200), codes.count(429)
    assert allowed + refused == 200, codes
    # a full bucket of 20, plus what 20 rps refilled while the burst ran
    assert 20 <= allowed <= 20 + 20 * elapsed + 2, (allowed, elapsed)
    assert refused >= 100, (refused, elapsed)
    assert limited_headers["x-hyphal-reason"] == "rate_limited"
    assert limited_headers["x-ratelimit-limit"].startswith("20")
    assert limited_headers["x-ratelimit-remaining"] == "0"
    assert int(limited_headers["x-ratelimit-reset"]) >= 1

    # another service is not limited
    free = [get(mesh, "http://free:8080/")[0] for _ in range(60)]
    assert free == [200] * 60

    _, text = mesh.workloads["limited"].admin("/stats/prometheus")
    lines = text.decode().splitlines()
    count = {d: next((int(ln.rsplit(" ", 1)[1]) for ln in lines
                      if ln.startswith("hyphal_ratelimit_total") and f'decision="{d}"' in ln), 0)
             for d in ("allowed", "limited")}
    assert count["limited"] >= refused and count["allowed"] >= allowed, count


def test_jwt_required_by_authorization_policy(mesh: Mesh) -> None:
    url = "http://secure:8080/orders"
    status, headers, _ = get(mesh, url)
    assert (status, headers.get("x-hyphal-reason")) == (403, "rbac_denied")

    now = int(time.time())
    good_claims = {"iss": ISSUER, "sub": "alice", "aud": "secure", "exp": now + 300,
                   "groups": ["admin"]}
    bad = {
        "wrong key": sign(good_claims, ed25519.Ed25519PrivateKey.generate()),
        "expired": sign({**good_claims, "exp": now - 600}),
        "wrong audience": sign({**good_claims, "aud": "other"}),
        "garbage": "not.a.jwt",
    }
    for why, token in bad.items():
        status, headers, _ = get(mesh, url, {"Authorization": f"Bearer {token}"})
        assert (status, headers.get("x-hyphal-reason")) == (401, "jwt_invalid"), why

    good = sign(good_claims)
    for _ in range(3):  # the second and third hit the sidecar's token cache
        status, headers, body = get(mesh, url, {"Authorization": f"Bearer {good}"})
        assert status == 200, (status, headers, body)
        seen = json.loads(body)["headers"]
        payload = seen["x-jwt-payload"]
        assert json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))) \
            == good_claims
        assert "authorization" not in seen  # forwardOriginalToken: false


def test_permissive_takes_plaintext_and_mtls(mesh: Mesh) -> None:
    free = mesh.workloads["free"]
    status, body = http_get(f"http://127.0.0.1:{free.inbound_port}/plain")
    assert status == 200, body
    seen = json.loads(body)
    assert seen["name"] == "free" and seen["xfcc"] == ""  # no principal in plaintext
    status, _, body = get(mesh, "http://free:8080/mtls")  # web's sidecar uses mTLS
    assert status == 200
    assert "URI=spiffe://cluster.local/ns/demo/sa/web" in json.loads(body)["xfcc"]

    # STRICT is still STRICT: the same plaintext request to `secure` gets no answer
    secure = mesh.workloads["secure"]
    assert http_get(f"http://127.0.0.1:{secure.inbound_port}/plain", timeout=2)[0] != 200
