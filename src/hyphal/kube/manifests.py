"""The Kubernetes install manifests, as plain data: `hyphal install` prints or applies them.

Namespace `hyphal-system`; the CRDs of the Istio and Gateway API kinds hyphal serves (a
compact schema that keeps unknown fields: hyphal validates every object itself and reports
what it refuses as an Event); a ServiceAccount with a ClusterRole that can only list/watch
what the control plane reads, create TokenReviews and record Events; the control plane
Deployment (2 replicas, readiness on /ready) and its Service; a PodDisruptionBudget; and the
MutatingWebhookConfiguration for namespaces labelled `hyphal-injection=enabled`.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from hyphal.kube.config_source import CRD_TYPES
from hyphal.kube.inject import INJECT_ANNOTATION, NAMESPACE_LABEL
from hyphal.kube.webhook import INJECT_PATH

NAMESPACE = "hyphal-system"
NAME = "hyphal-control"
LABELS = {"app": NAME, "app.kubernetes.io/part-of": "hyphal"}
STATE_DIR = "/var/lib/hyphal"
CA_SECRET = "hyphal-ca"
PORTS = {"grpc-xds": 15012, "grpc-ca": 15013, "http-api": 15014, "https-webhook": 15017}

# Versions served per group (the first is stored); hyphal's models accept each of them.
_VERSIONS = {
    "networking.istio.io": ("v1", "v1beta1", "v1alpha3"),
    "security.istio.io": ("v1", "v1beta1"),
    "gateway.networking.k8s.io": ("v1", "v1beta1"),
    "hyphal.dev": ("v1alpha1",),
}
_GRPCROUTE_VERSIONS = ("v1", "v1alpha2")
_SHORT = {"VirtualService": ["vs"], "DestinationRule": ["dr"], "ServiceEntry": ["se"],
          "AuthorizationPolicy": ["ap"], "PeerAuthentication": ["pa"],
          "RequestAuthentication": ["ra"], "RateLimitPolicy": ["rlp"]}


@dataclass(frozen=True, slots=True)
class InstallOptions:
    image: str = "ghcr.io/hyphal/hyphal:0.1.0"
    replicas: int = 2
    trust_domain: str = "cluster.local"
    ca_root_pem: bytes | None = None  # the mesh root: the webhook's caBundle and the Secret
    ca_key_pem: bytes | None = None


def _meta(name: str, namespaced: bool = True) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": dict(LABELS)}
    if namespaced:
        meta["namespace"] = NAMESPACE
    return meta


def crds() -> list[dict[str, Any]]:
    out = []
    for t in CRD_TYPES:
        versions = _GRPCROUTE_VERSIONS if t.kind == "GRPCRoute" else _VERSIONS[t.group]
        schema = {"openAPIV3Schema": {
            "type": "object", "x-kubernetes-preserve-unknown-fields": True,
            "description": f"{t.kind}: validated by hyphal (hyphal.config); refusals are "
                           "reported as Events on the object"}}
        out.append({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{t.plural}.{t.group}",
                         "labels": {"app.kubernetes.io/part-of": "hyphal"}},
            "spec": {"group": t.group, "scope": "Namespaced",
                     "names": {"kind": t.kind, "listKind": f"{t.kind}List", "plural": t.plural,
                               "singular": t.kind.lower(), "shortNames": _SHORT.get(t.kind, []),
                               "categories": ["hyphal"]},
                     "versions": [{"name": v, "served": True, "storage": i == 0,
                                   "schema": schema, "subresources": {"status": {}}}
                                  for i, v in enumerate(versions)]},
        })
    return out


def cluster_role() -> dict[str, Any]:
    read = ["list", "watch"]
    by_group: dict[str, list[str]] = {}
    for t in CRD_TYPES:
        by_group.setdefault(t.group, []).append(t.plural)
    rules: list[dict[str, Any]] = [
        {"apiGroups": [""], "resources": ["services", "pods"], "verbs": read},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": read},
        *({"apiGroups": [g], "resources": sorted(r), "verbs": read}
          for g, r in sorted(by_group.items())),
        {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"],
         "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    ]
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": _meta(NAME, namespaced=False), "rules": rules}


def deployment(opts: InstallOptions) -> dict[str, Any]:
    args = ["control", "--config-source", "kubernetes", "--state-dir", STATE_DIR,
            "--host", "0.0.0.0", "--xds-plaintext-port", "off",
            "--xds-port", str(PORTS["grpc-xds"]), "--ca-port", str(PORTS["grpc-ca"]),
            "--api-port", str(PORTS["http-api"]), "--webhook-port", str(PORTS["https-webhook"]),
            "--trust-domain", opts.trust_domain, "--inject-image", opts.image]
    # Every replica must sign with the same root: copy it from the Secret into the state dir
    # (which the control plane writes to) before starting.
    start = (f"mkdir -p {STATE_DIR}/ca && cp /etc/hyphal/ca/root-cert.pem "
             f"/etc/hyphal/ca/root-key.pem {STATE_DIR}/ca/ && exec hyphal \"$@\"")
    container = {
        "name": "control", "image": opts.image,
        "command": ["sh", "-c", start, "hyphal"], "args": args,
        "ports": [{"name": n, "containerPort": p, "protocol": "TCP"} for n, p in PORTS.items()],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": PORTS["http-api"]},
                           "periodSeconds": 5},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": PORTS["http-api"]},
                          "periodSeconds": 10, "failureThreshold": 6},
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                      "limits": {"memory": "512Mi"}},
        "securityContext": {"runAsUser": 1337, "runAsGroup": 1337, "runAsNonRoot": True,
                            "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "state", "mountPath": STATE_DIR},
                         {"name": "ca", "mountPath": "/etc/hyphal/ca", "readOnly": True}],
    }
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(NAME),
        "spec": {
            "replicas": opts.replicas,
            "selector": {"matchLabels": {"app": NAME}},
            "template": {
                "metadata": {"labels": dict(LABELS),
                             "annotations": {INJECT_ANNOTATION: "false"}},
                "spec": {
                    "serviceAccountName": NAME,
                    "containers": [container],
                    "volumes": [{"name": "state", "emptyDir": {}},
                                {"name": "ca", "secret": {"secretName": CA_SECRET}}],
                    "affinity": {"podAntiAffinity": {
                        "preferredDuringSchedulingIgnoredDuringExecution": [{
                            "weight": 100, "podAffinityTerm": {
                                "topologyKey": "kubernetes.io/hostname",
                                "labelSelector": {"matchLabels": {"app": NAME}}}}]}},
                },
            },
        },
    }


def webhook_configuration(opts: InstallOptions) -> dict[str, Any]:
    client: dict[str, Any] = {"service": {"name": NAME, "namespace": NAMESPACE,
                                          "path": INJECT_PATH, "port": 443}}
    if opts.ca_root_pem:
        client["caBundle"] = base64.b64encode(opts.ca_root_pem).decode()
    return {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": _meta("hyphal-sidecar-injector", namespaced=False),
        "webhooks": [{
            "name": "sidecar-injector.hyphal.dev",
            "admissionReviewVersions": ["v1"], "sideEffects": "None",
            "failurePolicy": "Fail", "timeoutSeconds": 10, "reinvocationPolicy": "Never",
            "clientConfig": client,
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                       "resources": ["pods"], "scope": "Namespaced"}],
            "namespaceSelector": {"matchLabels": {NAMESPACE_LABEL: "enabled"}},
            "objectSelector": {"matchExpressions": [
                {"key": INJECT_ANNOTATION, "operator": "NotIn", "values": ["false"]}]},
        }],
    }


def manifests(opts: InstallOptions) -> list[dict[str, Any]]:
    """Every object, in the order `kubectl apply` needs them."""
    out: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": NAMESPACE, "labels": {"app.kubernetes.io/part-of": "hyphal"}}},
        *crds(),
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(NAME)},
        cluster_role(),
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": _meta(NAME, namespaced=False),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": NAME},
         "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}]},
    ]
    if opts.ca_root_pem and opts.ca_key_pem:
        out.append({"apiVersion": "v1", "kind": "Secret", "metadata": _meta(CA_SECRET),
                    "type": "Opaque",
                    "data": {"root-cert.pem": base64.b64encode(opts.ca_root_pem).decode(),
                             "root-key.pem": base64.b64encode(opts.ca_key_pem).decode()}})
    out += [
        {"apiVersion": "v1", "kind": "Service", "metadata": _meta(NAME),
         "spec": {"selector": {"app": NAME},
                  "ports": [{"name": n, "port": 443 if n == "https-webhook" else p,
                             "targetPort": p, "protocol": "TCP"} for n, p in PORTS.items()]}},
        deployment(opts),
        {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": _meta(NAME),
         "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": NAME}}}},
        webhook_configuration(opts),
    ]
    return out
