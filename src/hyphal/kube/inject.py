"""Sidecar injection: an AdmissionReview v1 for a Pod in, a JSONPatch that adds hyphal out.

Pure functions, no I/O. The patch adds (Istio's scheme, docs/kubernetes.md):
- `hyphal-init`, an init container that sets iptables REDIRECT rules: outbound TCP -> 15001,
  inbound TCP -> 15006, traffic of the proxy's own UID/GID 1337 and to 127.0.0.1 excluded;
- `hyphal-proxy`, the sidecar, running as UID 1337, which renders its bootstrap from the
  pod's annotations (downward API volume) and its own name and IP, then runs `hyphal proxy`;
- the projected ServiceAccount token volume (audience `hyphal-ca`) the CA verifies with the
  TokenReview API.
Pods annotated `sidecar.hyphal.dev/inject: "false"`, pods already injected and host-network
pods are left alone; namespaces opt in with the label `hyphal-injection=enabled` (the
webhook configuration's namespaceSelector).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hyphal.kube.registry import SIDECAR_NAME, port_protocol

INIT_NAME = "hyphal-init"
INJECT_ANNOTATION = "sidecar.hyphal.dev/inject"
STATUS_ANNOTATION = "sidecar.hyphal.dev/status"
BOOTSTRAP_ANNOTATION = "sidecar.hyphal.dev/bootstrap"
ROOT_CERT_ANNOTATION = "sidecar.hyphal.dev/root-cert"
NAMESPACE_LABEL = "hyphal-injection"
TOKEN_AUDIENCE = "hyphal-ca"
PROXY_UID = 1337
OUTBOUND_PORT = 15001
INBOUND_PORT = 15006
ADMIN_PORT = 15000
PODINFO_DIR = "/etc/hyphal/pod"
TOKEN_DIR = "/var/run/secrets/hyphal/tokens"
RUN_DIR = "/var/run/hyphal"


@dataclass(frozen=True, slots=True)
class InjectConfig:
    """What every injected sidecar gets; `root_cert_pem` is the mesh CA's trust bundle."""

    image: str = "ghcr.io/hyphal/hyphal:0.1.0"
    control_address: str = "hyphal-control.hyphal-system.svc"
    xds_port: int = 15012
    ca_port: int = 15013
    trust_domain: str = "cluster.local"
    root_cert_pem: str = ""
    cert_ttl_seconds: int = 86400
    token_ttl_seconds: int = 3600


def iptables_rules(exclude_inbound_ports: Sequence[int] = (ADMIN_PORT,)) -> list[str]:
    """The nat-table rules the init container applies (`iptables -t nat` arguments)."""
    rules = [
        "-N HYPHAL_INBOUND", "-N HYPHAL_IN_REDIRECT", "-N HYPHAL_OUTPUT", "-N HYPHAL_REDIRECT",
        f"-A HYPHAL_IN_REDIRECT -p tcp -j REDIRECT --to-ports {INBOUND_PORT}",
        f"-A HYPHAL_REDIRECT -p tcp -j REDIRECT --to-ports {OUTBOUND_PORT}",
        "-A PREROUTING -p tcp -j HYPHAL_INBOUND",
    ]
    rules += [f"-A HYPHAL_INBOUND -p tcp --dport {p} -j RETURN" for p in exclude_inbound_ports]
    rules += [
        "-A HYPHAL_INBOUND -p tcp -j HYPHAL_IN_REDIRECT",
        "-A OUTPUT -p tcp -j HYPHAL_OUTPUT",
        f"-A HYPHAL_OUTPUT -m owner --uid-owner {PROXY_UID} -j RETURN",
        f"-A HYPHAL_OUTPUT -m owner --gid-owner {PROXY_UID} -j RETURN",
        "-A HYPHAL_OUTPUT -d 127.0.0.1/32 -j RETURN",
        "-A HYPHAL_OUTPUT -j HYPHAL_REDIRECT",
    ]
    return rules


def init_script() -> str:
    return "set -e\n" + "".join(f"iptables -t nat {r}\n" for r in iptables_rules())


def skip_reason(pod: Mapping[str, Any]) -> str | None:
    """Why this pod gets no sidecar, or None to inject."""
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    if str((meta.get("annotations") or {}).get(INJECT_ANNOTATION, "")).lower() == "false":
        return f'annotation {INJECT_ANNOTATION}: "false"'
    names = {c.get("name") for c in [*(spec.get("containers") or []),
                                     *(spec.get("initContainers") or [])]}
    if SIDECAR_NAME in names:
        return "already injected"
    if spec.get("hostNetwork"):
        return "hostNetwork pods share the node's network: capture would redirect the node's"
    return None


def workload_name(pod: Mapping[str, Any]) -> str:
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    for key in ("app.kubernetes.io/name", "app"):
        if labels.get(key):
            return str(labels[key])
    generated = str(meta.get("generateName") or "").rstrip("-")
    if labels.get("pod-template-hash") and generated.endswith(labels["pod-template-hash"]):
        generated = generated[: -len(labels["pod-template-hash"])].rstrip("-")
    return generated or str(meta.get("name") or "workload")


def bootstrap_template(pod: Mapping[str, Any], namespace: str, cfg: InjectConfig) -> str:
    """The bootstrap file (docs/xds-conventions.md) with ${POD_NAME}/${POD_IP} left for the
    sidecar to fill in: neither is known when the pod is admitted."""
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    ports = []
    for c in spec.get("containers") or []:
        for p in c.get("ports") or []:
            if str(p.get("protocol") or "TCP").upper() != "TCP":
                continue
            ports.append({"name": str(p.get("name") or ""), "port": p["containerPort"],
                          "protocol": port_protocol(p), "app_port": p["containerPort"],
                          "inbound_port": p["containerPort"]})  # captured: virtualInbound
    name = workload_name(pod)
    boot = {
        "node": {"id": "${POD_NAME}.${POD_NAMESPACE}", "cluster": name, "metadata": {
            "NAMESPACE": namespace,
            "SERVICE_ACCOUNT": str(spec.get("serviceAccountName") or "default"),
            "WORKLOAD_NAME": name,
            "LABELS": {str(k): str(v) for k, v in (meta.get("labels") or {}).items()},
            "INSTANCE_IP": "${POD_IP}", "PROXY_MODE": "sidecar", "INTERCEPTION_MODE": "REDIRECT",
            "OUTBOUND_HTTP_PORT": OUTBOUND_PORT, "PORTS": ports, "UPSTREAM_PORTS": {}}},
        "xds_address": f"{cfg.control_address}:{cfg.xds_port}",
        "ca_address": f"{cfg.control_address}:{cfg.ca_port}",
        "root_cert_file": f"{PODINFO_DIR}/root-cert.pem",
        "token_file": f"{TOKEN_DIR}/hyphal-token",
        "trust_domain": cfg.trust_domain,
        "admin_port": ADMIN_PORT,
        "access_log": "-",
        "cert_ttl_seconds": cfg.cert_ttl_seconds,
    }
    return json.dumps(boot, sort_keys=True)


def _field(path: str) -> dict[str, Any]:
    return {"fieldRef": {"fieldPath": path}}


def sidecar_container(cfg: InjectConfig) -> dict[str, Any]:
    boot = f"{RUN_DIR}/bootstrap.json"
    return {
        "name": SIDECAR_NAME,
        "image": cfg.image,
        "command": ["python", "-m", "hyphal.kube.sidecar",
                    "--template", f"{PODINFO_DIR}/bootstrap.json", "--out", boot,
                    "--", "hyphal", "proxy", "--bootstrap", boot],
        "env": [{"name": "POD_NAME", "valueFrom": _field("metadata.name")},
                {"name": "POD_NAMESPACE", "valueFrom": _field("metadata.namespace")},
                {"name": "POD_IP", "valueFrom": _field("status.podIP")}],
        "ports": [{"name": "hyphal-admin", "containerPort": ADMIN_PORT, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": ADMIN_PORT},
                           "periodSeconds": 2, "failureThreshold": 30},
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"},
                      "limits": {"memory": "256Mi"}},
        "securityContext": {"runAsUser": PROXY_UID, "runAsGroup": PROXY_UID,
                            "runAsNonRoot": True, "allowPrivilegeEscalation": False,
                            "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "hyphal-podinfo", "mountPath": PODINFO_DIR, "readOnly": True},
                         {"name": "hyphal-token", "mountPath": TOKEN_DIR, "readOnly": True},
                         {"name": "hyphal-run", "mountPath": RUN_DIR}],
    }


def init_container(cfg: InjectConfig) -> dict[str, Any]:
    return {
        "name": INIT_NAME,
        "image": cfg.image,
        "command": ["sh", "-c", init_script()],
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
        "securityContext": {"runAsUser": 0, "runAsNonRoot": False,
                            "allowPrivilegeEscalation": False,
                            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]}},
    }


def volumes(cfg: InjectConfig) -> list[dict[str, Any]]:
    def annotation(key: str) -> dict[str, Any]:
        return _field(f"metadata.annotations['{key}']")

    return [
        {"name": "hyphal-podinfo", "downwardAPI": {"items": [
            {"path": "bootstrap.json", **annotation(BOOTSTRAP_ANNOTATION)},
            {"path": "root-cert.pem", **annotation(ROOT_CERT_ANNOTATION)},
        ]}},
        {"name": "hyphal-token", "projected": {"sources": [{"serviceAccountToken": {
            "audience": TOKEN_AUDIENCE, "expirationSeconds": cfg.token_ttl_seconds,
            "path": "hyphal-token"}}]}},
        {"name": "hyphal-run", "emptyDir": {"medium": "Memory"}},
    ]


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _append(patch: list[dict[str, Any]], spec: Mapping[str, Any], field: str,
            items: list[dict[str, Any]], first: bool = False) -> None:
    if not spec.get(field):
        patch.append({"op": "add", "path": f"/spec/{field}", "value": items})
        return
    for i, item in enumerate(items):
        where = str(i) if first else "-"
        patch.append({"op": "add", "path": f"/spec/{field}/{where}", "value": item})


def pod_patch(pod: Mapping[str, Any], namespace: str, cfg: InjectConfig) -> list[dict[str, Any]]:
    """The JSONPatch (RFC 6902) operations that inject hyphal into `pod`."""
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    patch: list[dict[str, Any]] = []
    notes = {STATUS_ANNOTATION: "injected",
             BOOTSTRAP_ANNOTATION: bootstrap_template(pod, namespace, cfg),
             ROOT_CERT_ANNOTATION: cfg.root_cert_pem}
    if not meta.get("annotations"):
        patch.append({"op": "add", "path": "/metadata/annotations", "value": notes})
    else:
        patch += [{"op": "add", "path": f"/metadata/annotations/{_escape(k)}", "value": v}
                  for k, v in notes.items()]
    # The capture rules must be in place before any other init container makes a connection.
    _append(patch, spec, "initContainers", [init_container(cfg)], first=True)
    _append(patch, spec, "containers", [sidecar_container(cfg)])
    _append(patch, spec, "volumes", volumes(cfg))
    return patch


def review_response(review: Mapping[str, Any], cfg: InjectConfig) -> dict[str, Any]:
    """The AdmissionReview v1 answer: always allowed; patched unless the pod opts out."""
    request = review.get("request") or {}
    uid = request.get("uid", "")
    response: dict[str, Any] = {"uid": uid, "allowed": True}
    pod = request.get("object") or {}
    if request.get("kind", {}).get("kind") == "Pod" and request.get("operation") == "CREATE":
        namespace = str(request.get("namespace") or (pod.get("metadata") or {}).get(
            "namespace") or "default")
        if skip_reason(pod) is None:
            patch = pod_patch(pod, namespace, cfg)
            response["patchType"] = "JSONPatch"
            response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": response}
