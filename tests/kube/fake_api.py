"""A fake Kubernetes API server on 127.0.0.1 for the kube tests: the real REST shapes.

Collections answer `GET` with a List carrying `metadata.resourceVersion`; `?watch=1&
resourceVersion=N` streams one JSON event a line (ADDED, MODIFIED, DELETED, BOOKMARK) from
after N, ends after `timeoutSeconds`, and answers an ERROR event with code 410 "Expired" when
N is older than the last compaction. `POST .../tokenreviews` answers from `tokens`, `POST
.../events` records the Event. Tests drive it with put/delete/compact/drop_watches.
"""

from __future__ import annotations

import itertools
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

PLURALS = {
    "Service": "services",
    "Pod": "pods",
    "Namespace": "namespaces",
    "EndpointSlice": "endpointslices",
    "VirtualService": "virtualservices",
    "DestinationRule": "destinationrules",
    "ServiceEntry": "serviceentries",
    "AuthorizationPolicy": "authorizationpolicies",
    "PeerAuthentication": "peerauthentications",
    "HTTPRoute": "httproutes",
    "GRPCRoute": "grpcroutes",
}

_PATH = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
    r"(?:/namespaces/(?P<ns>[^/]+))?/(?P<plural>[a-z]+)$"
)


def collection(api_version: str, kind: str) -> tuple[str, str]:
    group = api_version.split("/", 1)[0] if "/" in api_version else ""
    return (group, PLURALS[kind])


class FakeApi:
    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._rv = itertools.count(100)
        self.rv = 0
        self.objects: dict[tuple[str, str], dict[tuple[str, str], dict[str, Any]]] = {}
        self.log: list[tuple[int, tuple[str, str], str, dict[str, Any]]] = []
        self.compacted = 0
        self.drop_generation = 0
        self.tokens: dict[str, tuple[str, list[str]]] = {}  # token -> (username, audiences)
        self.token_reviews: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.requests: list[str] = []
        self.watching = 0
        self.stopped = False
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeApi:
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._lock:
            self.stopped = True
            self._lock.notify_all()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    # ---- what tests do ----

    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or replace; the stored copy gets a fresh resourceVersion."""
        obj = json.loads(json.dumps(obj))
        coll = collection(obj["apiVersion"], obj["kind"])
        meta = obj.setdefault("metadata", {})
        key = (meta.get("namespace", ""), meta["name"])
        with self._lock:
            rv = self.rv = next(self._rv)
            meta["resourceVersion"] = str(rv)
            store = self.objects.setdefault(coll, {})
            kind = "MODIFIED" if key in store else "ADDED"
            store[key] = obj
            self.log.append((rv, coll, kind, obj))
            self._lock.notify_all()
        return obj

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        coll = collection(api_version, kind)
        with self._lock:
            obj = self.objects.get(coll, {}).pop((namespace, name))
            rv = self.rv = next(self._rv)
            obj = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(rv)}}
            self.log.append((rv, coll, "DELETED", obj))
            self._lock.notify_all()

    def bookmark(self, api_version: str, kind: str) -> None:
        coll = collection(api_version, kind)
        with self._lock:
            rv = self.rv = next(self._rv)
            obj = {"kind": kind, "apiVersion": api_version,
                   "metadata": {"resourceVersion": str(rv)}}
            self.log.append((rv, coll, "BOOKMARK", obj))
            self._lock.notify_all()

    def compact(self) -> None:
        """Forget history: watches from an older resourceVersion get 410 Expired."""
        with self._lock:
            self.compacted = self.rv
            self.log = []

    def drop_watches(self) -> None:
        """Cut every open watch connection (as a load balancer or an API restart would)."""
        with self._lock:
            self.drop_generation += 1
            self._lock.notify_all()

    # ---- serving ----

    def list_body(self, coll: tuple[str, str], ns: str | None) -> dict[str, Any]:
        with self._lock:
            items = [o for (ons, _), o in sorted(self.objects.get(coll, {}).items())
                     if ns is None or ons == ns]
            return {"kind": "List", "apiVersion": "v1",
                    "metadata": {"resourceVersion": str(self.rv)}, "items": items}


def _handler(api: FakeApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _route(self) -> tuple[tuple[str, str], str | None, dict[str, list[str]]] | None:
            url = urlsplit(self.path)
            api.requests.append(f"{self.command} {self.path}")
            m = _PATH.match(url.path)
            if m is None:
                self._send(404, {"kind": "Status", "code": 404, "message": f"{url.path}"})
                return None
            group = "" if m["core"] else m["group"]
            return (group, m["plural"]), m["ns"], parse_qs(url.query)

        def do_GET(self) -> None:
            routed = self._route()
            if routed is None:
                return
            coll, ns, query = routed
            if query.get("watch", [""])[0] in ("1", "true"):
                self._watch(coll, ns, query)
            else:
                self._send(200, api.list_body(coll, ns))

        def do_POST(self) -> None:
            routed = self._route()
            if routed is None:
                return
            coll, _ns, _ = routed
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            if coll == ("authentication.k8s.io", "tokenreviews"):
                api.token_reviews.append(body)
                token = body["spec"]["token"]
                wanted = body["spec"].get("audiences") or []
                known = api.tokens.get(token)
                if known is None or (wanted and not set(wanted) & set(known[1])):
                    status: dict[str, Any] = {"authenticated": False,
                                              "error": "token not valid for the audience"}
                else:
                    status = {"authenticated": True, "user": {"username": known[0]},
                              "audiences": [a for a in wanted if a in known[1]]}
                self._send(201, {**body, "status": status})
            elif coll == ("", "events"):
                api.events.append(body)
                self._send(201, body)
            else:
                self._send(405, {"kind": "Status", "code": 405, "message": "read only"})

        def _watch(self, coll: tuple[str, str], ns: str | None,
                   query: dict[str, list[str]]) -> None:
            since = int(query.get("resourceVersion", ["0"])[0] or 0)
            timeout = float(query.get("timeoutSeconds", ["300"])[0])
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            deadline = time.monotonic() + timeout
            with api._lock:
                generation = api.drop_generation
                api.watching += 1
                api._lock.notify_all()
            try:
                if since < api.compacted:
                    self._line({"type": "ERROR", "object": {
                        "kind": "Status", "apiVersion": "v1", "status": "Failure",
                        "reason": "Expired", "code": 410,
                        "message": f"too old resource version: {since} ({api.compacted})"}})
                    return
                sent = since
                while True:
                    with api._lock:
                        while True:
                            if api.stopped or api.drop_generation != generation:
                                self.connection.shutdown(socket.SHUT_RDWR)
                                return
                            pending = [e for e in api.log if e[0] > sent and e[1] == coll and (
                                ns is None or e[3]["metadata"].get("namespace") in (ns, None))]
                            left = deadline - time.monotonic()
                            if pending or left <= 0:
                                break
                            api._lock.wait(min(left, 0.5))
                    if not pending:
                        return  # timeoutSeconds passed: the server ends the watch
                    for rv, _, kind, obj in pending:
                        self._line({"type": kind, "object": obj})
                        sent = rv
            except OSError:
                return
            finally:
                with api._lock:
                    api.watching -= 1

        def _line(self, event: dict[str, Any]) -> None:
            self.wfile.write(json.dumps(event).encode() + b"\n")
            self.wfile.flush()

    return Handler


@contextmanager
def fake_api() -> Iterator[FakeApi]:
    api = FakeApi().start()
    try:
        yield api
    finally:
        api.stop()
