"""Secrets stay out of what the sidecar writes down: a JWT in the request target (the
`access_token` query parameter jwt_authn reads by default, or any parameter or path segment)
is redacted in access-log lines, on the HTTP/1.1 encoder and the dict encoder (HTTP/2) alike."""

from __future__ import annotations

import json
from pathlib import Path

from hyphal.telemetry.accesslog import AccessLog, http_line

JWT = ("eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImlzcyI6Imh0dHBzOi8vaS50ZXN0In0"
       ".c2lnbmF0dXJlLWJ5dGVzLWhlcmU")
TARGETS = [f"/orders?access_token={JWT}", f"/orders?x=1&token={JWT}&y=2", f"/t/{JWT}/x"]


def _line(path: str) -> dict[str, object]:
    raw = http_line(1.7e9, "rid", "GET", "api", path, "HTTP/1.1", "127.0.0.1", "-", "l", "r",
                    "c", "u", 200, "-", 0, 0, 1.0, None)
    return json.loads(raw)  # type: ignore[no-any-return]


def test_http1_line_redacts_jwts_in_the_target() -> None:
    for target in TARGETS:
        entry = _line(target)
        assert JWT not in json.dumps(entry)
        assert JWT.split(".")[1] not in str(entry["path"])
        assert str(entry["path"]).split("?")[0].startswith("/")
    assert _line("/orders?page=2")["path"] == "/orders?page=2"


def test_dict_entries_redact_jwts_in_the_path(tmp_path: Path) -> None:
    out = tmp_path / "access.log"
    log = AccessLog(str(out))
    for target in TARGETS:
        log.log({"method": "GET", "path": target, "status": 200})
    log.close()
    text = out.read_text()
    assert text.count("\n") == len(TARGETS)
    assert JWT not in text and JWT.split(".")[1] not in text

