"""Property: for any mesh the generator builds, no snapshot names a resource it does not send."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from translate_helpers import load, proxyless, run, sidecar

from hyphal.control.translate import naming
from hyphal.control.translate.consistency import check_consistency
from hyphal.control.translate.pb import route_pb2

NAMES = ["a", "b", "c"]
NSS = ["n1", "n2"]


@st.composite
def meshes(draw: st.DrawFn) -> str:
    docs: list[str] = []
    services = draw(
        st.lists(
            st.tuples(st.sampled_from(NAMES), st.sampled_from(NSS)),
            min_size=1,
            max_size=4,
            unique=True,
        )
    )
    for name, ns in services:
        proto = draw(st.sampled_from(["HTTP", "GRPC", "TCP"]))
        docs.append(
            f"apiVersion: hyphal.dev/v1alpha1\nkind: Service\n"
            f"metadata: {{name: {name}, namespace: {ns}}}\n"
            f"spec: {{selector: {{app: {name}}}, "
            f"ports: [{{name: p, port: 8080, protocol: {proto}}}]}}"
        )
        if draw(st.booleans()):
            lb = draw(
                st.sampled_from(
                    [
                        "{simple: RANDOM}",
                        "{consistentHash: {useSourceIp: true, maglev: {}}}",
                        "{simple: PEAK_EWMA}",
                    ]
                )
            )
            docs.append(
                f"apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
                f"metadata: {{name: {name}, namespace: {ns}}}\n"
                f"spec: {{host: {name}, trafficPolicy: {{loadBalancer: {lb}}}, "
                f"subsets: [{{name: v1, labels: {{v: '1'}}}}]}}"
            )
        if draw(st.booleans()):
            target = draw(st.sampled_from(NAMES))
            subset = draw(st.sampled_from(["", "v1", "zz"]))
            sub = f", subset: {subset}" if subset else ""
            export = draw(st.sampled_from(['["*"]', "[]"]))
            docs.append(
                f"apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
                f"metadata: {{name: {name}, namespace: {ns}}}\n"
                f"spec: {{hosts: [{name}], exportTo: {export}, "
                f"http: [{{match: [{{uri: {{prefix: /x}}}}], "
                f"route: [{{destination: {{host: {target}{sub}}}, weight: 60}}, "
                f"{{destination: {{host: {name}}}, weight: 40}}], "
                f"mirror: {{host: {target}}}, "
                f"fault: {{abort: {{httpStatus: 500, percentage: {{value: 1}}}}}}}}]}}"
            )
    return "\n---\n".join(docs)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(meshes(), st.sampled_from(NSS), st.booleans())
def test_snapshots_are_consistent(text: str, ns: str, is_sidecar: bool) -> None:
    rs = load(text)
    node = (
        sidecar(
            "w", ns, {"app": "a", "v": "1"}, "w", upstream={f"a.{ns}.svc.cluster.local:8080": 30000}
        )
        if is_sidecar
        else proxyless(ns)
    )
    out = run(rs, node, sidecar("a1", "n1", {"app": "a", "v": "1"}, "a"))
    assert check_consistency(out) == []
    for rc in out[naming.ROUTE_TYPE].values():
        assert isinstance(rc, route_pb2.RouteConfiguration)
        for vh in rc.virtual_hosts:
            for r in vh.routes:
                wc = r.route.weighted_clusters.clusters
                assert all(c.weight.value > 0 for c in wc)


def test_check_consistency_reports_dangling_names() -> None:
    rs = load(
        "apiVersion: hyphal.dev/v1alpha1\nkind: Service\nmetadata: {name: a, namespace: n1}\n"
        "spec: {selector: {app: a}, ports: [{name: p, port: 8080}]}"
    )
    out = run(rs, proxyless("n1"))
    del out[naming.CLUSTER_TYPE]["outbound|8080||a.n1.svc.cluster.local"]
    del out[naming.ROUTE_TYPE]["a.n1.svc.cluster.local:8080"]
    problems = check_consistency(out)
    assert any("rds 'a.n1.svc.cluster.local:8080' is not sent" in p for p in problems)
    assert any(
        "ClusterLoadAssignment outbound|8080||a.n1.svc.cluster.local: no such cluster" in p
        for p in problems
    )
