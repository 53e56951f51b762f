"""Hand-built Envoy protos shaped as docs/xds-conventions.md says the control plane sends them."""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import (
    address_pb2,
    base_pb2,
    config_source_pb2,
    health_check_pb2,
    protocol_pb2,
)
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as net_rbac_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.type.matcher.v3 import path_pb2, regex_pb2, string_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import any_pb2, duration_pb2, struct_pb2, wrappers_pb2
from google.protobuf.message import Message

FQDN = "product.shop.svc.cluster.local"
OUT = f"outbound|8080||{FQDN}"
OUT_V1 = f"outbound|8080|v1|{FQDN}"
SPIFFE = "spiffe://cluster.local/ns/shop/sa/product"


def pack(m: Message) -> any_pb2.Any:
    a = any_pb2.Any()
    a.Pack(m)
    return a


def dur(s: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(s * 1e9))
    return d


def addr(host: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=host, port_value=port)
    )


def ads() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(ads=config_source_pb2.AggregatedConfigSource())


def sds(name: str) -> secret_pb2.SdsSecretConfig:
    return secret_pb2.SdsSecretConfig(name=name, sds_config=ads())


def router() -> hcm_pb2.HttpFilter:
    return hcm_pb2.HttpFilter(
        name="envoy.filters.http.router", typed_config=pack(router_pb2.Router())
    )


def outbound_http_listener(port: int = 21001, fault: bool = True) -> listener_pb2.Listener:
    filters = []
    if fault:
        filters.append(
            hcm_pb2.HttpFilter(
                name="envoy.filters.http.fault", typed_config=pack(fault_pb2.HTTPFault())
            )
        )
    filters.append(router())
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix="outbound_http",
        rds=hcm_pb2.Rds(config_source=ads(), route_config_name="outbound_http"),
        http_filters=filters,
    )
    return listener_pb2.Listener(
        name="outbound_http",
        address=addr("127.0.0.1", port),
        filter_chains=[
            listener_components_pb2.FilterChain(
                filters=[
                    listener_components_pb2.Filter(
                        name="envoy.filters.network.http_connection_manager", typed_config=pack(hcm)
                    )
                ]
            )
        ],
    )


def downstream_tls() -> base_pb2.TransportSocket:
    ctx = tls_pb2.DownstreamTlsContext(
        require_client_certificate=wrappers_pb2.BoolValue(value=True),
        common_tls_context=tls_pb2.CommonTlsContext(
            tls_certificate_sds_secret_configs=[sds("default")],
            validation_context_sds_secret_config=sds("ROOTCA"),
        ),
    )
    return base_pb2.TransportSocket(name="envoy.transport_sockets.tls", typed_config=pack(ctx))


def principal_exact(spiffe: str) -> rbac_pb2.Principal:
    return rbac_pb2.Principal(
        authenticated=rbac_pb2.Principal.Authenticated(
            principal_name=string_pb2.StringMatcher(exact=spiffe)
        )
    )


def rbac_rules(action: int, policies: dict[str, rbac_pb2.Policy]) -> rbac_pb2.RBAC:
    r = rbac_pb2.RBAC(action=action)
    for k, v in policies.items():
        r.policies[k].CopyFrom(v)
    return r


def inbound_http_listener(port: int = 8080, inbound_port: int = 21003) -> listener_pb2.Listener:
    deny = rbac_rules(
        rbac_pb2.RBAC.DENY,
        {
            "ns[shop]-policy[deny-admin]-rule[0]": rbac_pb2.Policy(
                permissions=[
                    rbac_pb2.Permission(
                        url_path=path_pb2.PathMatcher(
                            path=string_pb2.StringMatcher(prefix="/admin")
                        )
                    )
                ],
                principals=[rbac_pb2.Principal(any=True)],
            )
        },
    )
    allow = rbac_rules(
        rbac_pb2.RBAC.ALLOW,
        {
            "ns[shop]-policy[allow-web]-rule[0]": rbac_pb2.Policy(
                permissions=[
                    rbac_pb2.Permission(
                        header=rc.HeaderMatcher(
                            name=":method", string_match=string_pb2.StringMatcher(exact="GET")
                        )
                    )
                ],
                principals=[principal_exact("spiffe://cluster.local/ns/shop/sa/web")],
            )
        },
    )
    route_config = route_pb2.RouteConfiguration(
        name=f"inbound|{port}",
        virtual_hosts=[
            rc.VirtualHost(
                name="inbound",
                domains=["*"],
                routes=[
                    rc.Route(
                        match=rc.RouteMatch(prefix="/"),
                        route=rc.RouteAction(cluster=f"inbound|{port}||", timeout=dur(0)),
                    )
                ],
            )
        ],
    )
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix=f"inbound_{port}",
        route_config=route_config,
        http_filters=[
            hcm_pb2.HttpFilter(
                name="envoy.filters.http.rbac", typed_config=pack(http_rbac_pb2.RBAC(rules=deny))
            ),
            hcm_pb2.HttpFilter(
                name="envoy.filters.http.rbac", typed_config=pack(http_rbac_pb2.RBAC(rules=allow))
            ),
            router(),
        ],
    )
    return listener_pb2.Listener(
        name=f"inbound|{port}",
        address=addr("127.0.0.1", inbound_port),
        traffic_direction=base_pb2.INBOUND,
        filter_chains=[
            listener_components_pb2.FilterChain(
                transport_socket=downstream_tls(),
                filters=[
                    listener_components_pb2.Filter(
                        name="envoy.filters.network.http_connection_manager", typed_config=pack(hcm)
                    )
                ],
            )
        ],
    )


def inbound_tcp_listener(port: int = 5432, inbound_port: int = 21010) -> listener_pb2.Listener:
    allow = rbac_rules(
        rbac_pb2.RBAC.ALLOW,
        {
            "p": rbac_pb2.Policy(
                permissions=[rbac_pb2.Permission(any=True)],
                principals=[principal_exact("spiffe://cluster.local/ns/shop/sa/web")],
            )
        },
    )
    return listener_pb2.Listener(
        name=f"inbound|{port}",
        address=addr("127.0.0.1", inbound_port),
        filter_chains=[
            listener_components_pb2.FilterChain(
                transport_socket=downstream_tls(),
                filters=[
                    listener_components_pb2.Filter(
                        name="envoy.filters.network.rbac",
                        typed_config=pack(net_rbac_pb2.RBAC(rules=allow, stat_prefix="tcp")),
                    ),
                    listener_components_pb2.Filter(
                        name="envoy.filters.network.tcp_proxy",
                        typed_config=pack(
                            tcp_proxy_pb2.TcpProxy(stat_prefix="tcp", cluster=f"inbound|{port}||")
                        ),
                    ),
                ],
            )
        ],
    )


def hvo(key: str, value: str, append: bool = True) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=key, value=value),
        append_action=base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD
        if append
        else base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
    )


def fault_any(
    delay: float = 0.5, delay_pct: int = 50, abort: int = 503, abort_pct: int = 10
) -> any_pb2.Any:
    from envoy.extensions.filters.common.fault.v3 import fault_pb2 as common_fault

    f = fault_pb2.HTTPFault(
        delay=common_fault.FaultDelay(
            fixed_delay=dur(delay), percentage=percent_pb2.FractionalPercent(numerator=delay_pct)
        ),
        abort=fault_pb2.FaultAbort(
            http_status=abort, percentage=percent_pb2.FractionalPercent(numerator=abort_pct)
        ),
    )
    return pack(f)


def route_configuration(name: str = "outbound_http") -> route_pb2.RouteConfiguration:
    vh = rc.VirtualHost(
        name=f"{FQDN}:8080",
        domains=["product", "product:8080", FQDN, f"{FQDN}:8080"],
        retry_policy=rc.RetryPolicy(
            retry_on="connect-failure", num_retries=wrappers_pb2.UInt32Value(value=1)
        ),
        request_headers_to_add=[hvo("x-vh", "1")],
        routes=[
            rc.Route(
                name="canary",
                match=rc.RouteMatch(
                    prefix="/api",
                    headers=[
                        rc.HeaderMatcher(
                            name="x-user", string_match=string_pb2.StringMatcher(exact="jason")
                        ),
                        rc.HeaderMatcher(
                            name=":method", string_match=string_pb2.StringMatcher(exact="GET")
                        ),
                    ],
                    query_parameters=[
                        rc.QueryParameterMatcher(name="debug", present_match=True),
                    ],
                ),
                route=rc.RouteAction(
                    weighted_clusters=rc.WeightedCluster(
                        clusters=[
                            rc.WeightedCluster.ClusterWeight(
                                name=OUT_V1, weight=wrappers_pb2.UInt32Value(value=80)
                            ),
                            rc.WeightedCluster.ClusterWeight(
                                name=f"outbound|8080|v2|{FQDN}",
                                weight=wrappers_pb2.UInt32Value(value=20),
                            ),
                        ]
                    ),
                    timeout=dur(2.5),
                    retry_policy=rc.RetryPolicy(
                        retry_on="5xx,connect-failure,retriable-status-codes",
                        num_retries=wrappers_pb2.UInt32Value(value=3),
                        per_try_timeout=dur(0.5),
                        retriable_status_codes=[502],
                        retry_back_off=rc.RetryPolicy.RetryBackOff(base_interval=dur(0.01)),
                    ),
                    prefix_rewrite="/v2/api",
                    host_rewrite_literal="product.internal",
                    request_mirror_policies=[
                        rc.RouteAction.RequestMirrorPolicy(
                            cluster=OUT_V1,
                            runtime_fraction=base_pb2.RuntimeFractionalPercent(
                                default_value=percent_pb2.FractionalPercent(numerator=25)
                            ),
                        )
                    ],
                ),
                request_headers_to_add=[hvo("x-route", "canary", append=False)],
                request_headers_to_remove=["X-Internal"],
                response_headers_to_add=[hvo("x-served-by", "hyphal")],
                response_headers_to_remove=["server"],
                typed_per_filter_config={"envoy.filters.http.fault": fault_any()},
            ),
            rc.Route(
                name="regex",
                match=rc.RouteMatch(safe_regex=regex_pb2.RegexMatcher(regex=r"/items/\d+")),
                route=rc.RouteAction(
                    cluster=OUT,
                    regex_rewrite=regex_pb2.RegexMatchAndSubstitute(
                        pattern=regex_pb2.RegexMatcher(regex=r"^/items/(\d+)$"),
                        substitution=r"/item?id=\1",
                    ),
                ),
            ),
            rc.Route(
                name="exact",
                match=rc.RouteMatch(path="/healthz"),
                direct_response=rc.DirectResponseAction(status=200),
            ),
            rc.Route(
                name="default", match=rc.RouteMatch(prefix="/"), route=rc.RouteAction(cluster=OUT)
            ),
        ],
    )
    return route_pb2.RouteConfiguration(name=name, virtual_hosts=[vh])


def upstream_tls(sans: list[str]) -> base_pb2.TransportSocket:
    ctx = tls_pb2.UpstreamTlsContext(
        sni=OUT,
        common_tls_context=tls_pb2.CommonTlsContext(
            tls_certificate_sds_secret_configs=[sds("default")],
            combined_validation_context=tls_pb2.CommonTlsContext.CombinedCertificateValidationContext(
                default_validation_context=common_pb2.CertificateValidationContext(
                    match_typed_subject_alt_names=[
                        common_pb2.SubjectAltNameMatcher(
                            san_type=common_pb2.SubjectAltNameMatcher.URI,
                            matcher=string_pb2.StringMatcher(exact=s),
                        )
                        for s in sans
                    ]
                ),
                validation_context_sds_secret_config=sds("ROOTCA"),
            ),
        ),
    )
    return base_pb2.TransportSocket(name="envoy.transport_sockets.tls", typed_config=pack(ctx))


def eds_cluster(name: str = OUT, full: bool = True) -> cluster_pb2.Cluster:
    c = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=ads()),
        connect_timeout=dur(1.5),
    )
    if not full:
        return c
    c.lb_policy = cluster_pb2.Cluster.LEAST_REQUEST
    c.circuit_breakers.CopyFrom(
        circuit_breaker_pb2.CircuitBreakers(
            thresholds=[
                circuit_breaker_pb2.CircuitBreakers.Thresholds(
                    max_connections=wrappers_pb2.UInt32Value(value=10),
                    max_pending_requests=wrappers_pb2.UInt32Value(value=5),
                    max_requests=wrappers_pb2.UInt32Value(value=20),
                    max_retries=wrappers_pb2.UInt32Value(value=2),
                )
            ]
        )
    )
    c.outlier_detection.CopyFrom(
        outlier_detection_pb2.OutlierDetection(
            consecutive_5xx=wrappers_pb2.UInt32Value(value=3),
            interval=dur(1),
            base_ejection_time=dur(2),
            max_ejection_percent=wrappers_pb2.UInt32Value(value=50),
        )
    )
    c.common_http_protocol_options.CopyFrom(
        protocol_pb2.HttpProtocolOptions(
            idle_timeout=dur(30), max_requests_per_connection=wrappers_pb2.UInt32Value(value=100)
        )
    )
    c.health_checks.append(
        health_check_pb2.HealthCheck(
            timeout=dur(0.5),
            interval=dur(2),
            unhealthy_threshold=wrappers_pb2.UInt32Value(value=3),
            healthy_threshold=wrappers_pb2.UInt32Value(value=2),
            http_health_check=health_check_pb2.HealthCheck.HttpHealthCheck(path="/ready"),
        )
    )
    c.transport_socket.CopyFrom(upstream_tls([SPIFFE]))
    md = struct_pb2.Struct()
    md.update({"service": FQDN, "subset": ""})
    c.metadata.filter_metadata["hyphal"].CopyFrom(md)
    return c


def load_assignment(
    name: str = OUT, ports: tuple[int, ...] = (21003,)
) -> endpoint_pb2.ClusterLoadAssignment:
    lbes = []
    for i, p in enumerate(ports):
        md = struct_pb2.Struct()
        md.update({"labels": {"app": "product", "version": "v1"}, "identity": SPIFFE})
        lbe = endpoint_components_pb2.LbEndpoint(
            endpoint=endpoint_components_pb2.Endpoint(address=addr("127.0.0.1", p)),
            health_status=health_check_pb2.HEALTHY if i == 0 else health_check_pb2.UNHEALTHY,
            load_balancing_weight=wrappers_pb2.UInt32Value(value=1 + i),
        )
        lbe.metadata.filter_metadata["hyphal"].CopyFrom(md)
        lbes.append(lbe)
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=name,
        endpoints=[
            endpoint_components_pb2.LocalityLbEndpoints(
                locality=base_pb2.Locality(), lb_endpoints=lbes
            )
        ],
    )


def make_root(cn: str = "hyphal test root") -> tuple[bytes, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), key


def rootca_secret(pem: bytes) -> secret_pb2.Secret:
    return secret_pb2.Secret(
        name="ROOTCA",
        validation_context=common_pb2.CertificateValidationContext(
            trusted_ca=base_pb2.DataSource(inline_bytes=pem)
        ),
    )
