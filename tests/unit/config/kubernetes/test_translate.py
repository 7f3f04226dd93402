"""Manifests -> wslb config: every annotation of the table has a case here, plus objects,
endpoint sources, listeners and the problems `wslb check` reports."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.procs import ROOT
from wslb.config.certs import self_signed
from wslb.config.kubernetes.annotations import DO, NGINX, TABLE, WSLB
from wslb.config.kubernetes.objects import load_objects
from wslb.config.kubernetes.snippet import SnippetError, parse_snippet
from wslb.config.kubernetes.translate import ManifestOptions, translate
from wslb.config.model import Config
from wslb.controller.docs import render_markdown
from wslb.errors import ConfigError, ConfigIssue


def ingress(annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": "web", "namespace": "app", "annotations": annotations or {}},
        "spec": spec
        or {
            "rules": [
                {
                    "host": "app.example.com",
                    "http": {
                        "paths": [
                            {
                                "path": "/api",
                                "pathType": "Prefix",
                                "backend": {"service": {"name": "api", "port": {"number": 80}}},
                            }
                        ]
                    },
                }
            ]
        },
    }


def lb_service(
    annotations: dict[str, str] | None = None, ports: list[Any] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "edge", "namespace": "ingress", "annotations": annotations or {}},
        "spec": {
            "type": "LoadBalancer",
            "ports": ports or [{"name": "http", "port": 80}, {"name": "https", "port": 443}],
        },
    }


def run(
    tmp_path: Path, docs: list[dict[str, Any]], **opts: Any
) -> tuple[Config | None, list[ConfigIssue]]:
    f = tmp_path / "m.yaml"
    f.write_text(yaml.safe_dump_all(docs))
    objects, issues = load_objects([str(f)])
    given = {"app/api": ["10.0.0.1:8080"], **opts.pop("endpoints", {})}
    options = ManifestOptions(endpoints=given, **opts)
    try:
        config, more = translate(objects, options)
    except ConfigError as exc:
        return None, issues + exc.issues
    return config, issues + more


def only_route(config: Config | None) -> Any:
    assert config is not None
    return config.routes[0]


def warned(issues: list[ConfigIssue], text: str) -> bool:
    return any(i.severity == "warning" and text in str(i) for i in issues)


def errored(issues: list[ConfigIssue], text: str) -> bool:
    return any(i.severity == "error" and text in str(i) for i in issues)


Check = Callable[[Config | None, list[ConfigIssue]], None]


def _route(check: Callable[[Any], bool]) -> Check:
    def run_check(config: Config | None, issues: list[ConfigIssue]) -> None:
        assert check(only_route(config)), only_route(config)

    return run_check


def _backend(check: Callable[[Any], bool]) -> Check:
    def run_check(config: Config | None, issues: list[ConfigIssue]) -> None:
        assert config is not None
        assert check(config.backends[0]), config.backends[0]

    return run_check


def _listeners(check: Callable[[Config], bool]) -> Check:
    def run_check(config: Config | None, issues: list[ConfigIssue]) -> None:
        assert config is not None and check(config), config.listeners

    return run_check


def _warns(text: str) -> Check:
    def run_check(config: Config | None, issues: list[ConfigIssue]) -> None:
        assert warned(issues, text), issues

    return run_check


AFF = {NGINX + "affinity": "cookie"}
CORS = {NGINX + "enable-cors": "true"}
STICKY = {
    DO + "sticky-sessions-type": "cookies",
    DO + "sticky-sessions-cookie-name": "lb",
    DO + "sticky-sessions-cookie-ttl": "300",
}
HC = {DO + "override-health-check": "true"}

# annotation -> (its value, other annotations it needs, the check of the result)
CASES: dict[str, tuple[str, dict[str, str], Check]] = {
    NGINX + "affinity": (
        "cookie",
        {},
        _route(lambda r: r.affinity.name == "INGRESSCOOKIE" and r.affinity.mode == "balanced"),
    ),
    NGINX + "affinity-mode": ("persistent", AFF, _route(lambda r: r.affinity.mode == "persistent")),
    NGINX + "session-cookie-name": ("route", AFF, _route(lambda r: r.affinity.name == "route")),
    NGINX + "session-cookie-expires": (
        "172800",
        AFF,
        _route(lambda r: r.affinity.expires == 172800),
    ),
    NGINX + "session-cookie-max-age": ("600", AFF, _route(lambda r: r.affinity.max_age == 600)),
    NGINX + "session-cookie-path": ("/app", AFF, _route(lambda r: r.affinity.path == "/app")),
    NGINX + "session-cookie-domain": (
        ".example.com",
        AFF,
        _route(lambda r: r.affinity.domain == ".example.com"),
    ),
    NGINX + "session-cookie-samesite": (
        "None",
        AFF,
        _route(lambda r: r.affinity.samesite == "None"),
    ),
    NGINX + "session-cookie-conditional-samesite-none": (
        "true",
        AFF,
        _route(lambda r: r.affinity.conditional_samesite_none),
    ),
    NGINX + "session-cookie-secure": ("true", AFF, _route(lambda r: r.affinity.secure is True)),
    NGINX + "session-cookie-change-on-failure": (
        "true",
        AFF,
        _route(lambda r: r.affinity.change_on_failure),
    ),
    NGINX + "session-cookie-hash": (
        "sha1",
        AFF,
        _warns("session-cookie-hash: Removed in ingress-nginx 0.24.0"),
    ),
    NGINX + "proxy-connect-timeout": ("7", {}, _route(lambda r: r.timeouts.connect == 7)),
    NGINX + "proxy-read-timeout": (
        "3600",
        {},
        _route(lambda r: r.timeouts.read == 3600 and r.timeouts.tunnel == 3600),
    ),
    NGINX + "proxy-send-timeout": (
        "120",
        {},
        _route(lambda r: r.timeouts.send == 120 and r.timeouts.tunnel == 120),
    ),
    NGINX + "proxy-body-size": ("8m", {}, _route(lambda r: r.max_body_size == 8 * 1024 * 1024)),
    NGINX + "backend-protocol": ("HTTPS", {}, _backend(lambda b: b.protocol == "https")),
    NGINX + "ssl-redirect": ("false", {}, _route(lambda r: r.redirect_https is None)),
    NGINX + "force-ssl-redirect": (
        "true",
        {},
        _route(lambda r: r.redirect_https is not None and r.redirect_https.code == 308),
    ),
    NGINX + "http-redirect-code": (
        "301",
        {NGINX + "force-ssl-redirect": "true"},
        _route(lambda r: r.redirect_https.code == 301),
    ),
    NGINX + "enable-cors": (
        "true",
        {},
        _route(lambda r: r.cors is not None and r.cors.allow_origins == ("*",)),
    ),
    NGINX + "cors-allow-origin": (
        "https://a.example.com, https://*.example.org",
        CORS,
        _route(
            lambda r: r.cors.allow_origins == ("https://a.example.com", "https://*.example.org")
        ),
    ),
    NGINX + "cors-allow-methods": (
        "GET, POST",
        CORS,
        _route(lambda r: r.cors.allow_methods == "GET, POST"),
    ),
    NGINX + "cors-allow-headers": (
        "X-A,X-B",
        CORS,
        _route(lambda r: r.cors.allow_headers == "X-A,X-B"),
    ),
    NGINX + "cors-expose-headers": (
        "X-Total",
        CORS,
        _route(lambda r: r.cors.expose_headers == "X-Total"),
    ),
    NGINX + "cors-allow-credentials": (
        "false",
        CORS,
        _route(lambda r: r.cors.allow_credentials is False),
    ),
    NGINX + "cors-max-age": ("60", CORS, _route(lambda r: r.cors.max_age == 60)),
    NGINX + "load-balance": ("ewma", {}, _backend(lambda b: b.balance == "ewma")),
    NGINX + "upstream-hash-by": ("$remote_addr", {}, _route(lambda r: r.hash_by == "$remote_addr")),
    NGINX + "limit-connections": ("4", {}, _route(lambda r: r.limits.connections == 4)),
    NGINX + "limit-rps": (
        "10",
        {},
        _route(lambda r: r.limits.rps == 10 and r.limits.burst_multiplier == 5),
    ),
    NGINX + "limit-rpm": ("100", {}, _route(lambda r: r.limits.rpm == 100)),
    NGINX + "limit-whitelist": (
        "10.0.0.0/8",
        {NGINX + "limit-rps": "1"},
        _route(lambda r: r.limits.exempt == ("10.0.0.0/8",)),
    ),
    NGINX + "whitelist-source-range": (
        "10.0.0.0/8, 192.168.1.1",
        {},
        _route(lambda r: r.allow == ("10.0.0.0/8", "192.168.1.1")),
    ),
    NGINX + "allowlist-source-range": (
        "10.1.0.0/16",
        {},
        _route(lambda r: r.allow == ("10.1.0.0/16",)),
    ),
    NGINX + "denylist-source-range": ("1.2.3.4", {}, _route(lambda r: r.deny == ("1.2.3.4",))),
    NGINX + "configuration-snippet": (
        'more_set_headers "X-A: $host";',
        {},
        _route(lambda r: r.headers.response_set[0].value == "$host"),
    ),
    WSLB + "engineio-affinity": ("false", {}, _route(lambda r: r.engineio_affinity is False)),
    WSLB + "acme": (
        "true",
        {},
        _listeners(
            lambda c: (
                c.acme is not None
                and [(x.key, x.hosts) for x in c.acme.certificates]
                == [("app.web", ("app.example.com",))]
            )
        ),
    ),
    WSLB + "websocket-rate": (
        "200",
        {},
        _route(lambda r: (r.admission.rate, r.admission.status) == (200, 503)),
    ),
    WSLB + "websocket-client-rate": (
        "5",
        {WSLB + "websocket-limit-status": "429"},
        _route(lambda r: (r.admission.client_rate, r.admission.rate) == (5, None)),
    ),
    WSLB + "websocket-limit-status": (
        "429",
        {WSLB + "websocket-rate": "10"},
        _route(lambda r: r.admission.status == 429),
    ),
    WSLB + "max-tunnels": ("1000", {}, _backend(lambda b: b.max_tunnels == 1000)),
    WSLB + "drain-window": ("5", {}, _backend(lambda b: b.drain_window == 5.0)),
    DO + "protocol": (
        "http",
        {},
        _listeners(lambda c: [lst.protocol for lst in c.listeners] == ["http", "http"]),
    ),
    DO + "http-ports": (
        "80",
        {DO + "protocol": "https", DO + "tls-ports": "443", DO + "certificate-id": "c"},
        _listeners(lambda c: [lst.protocol for lst in c.listeners] == ["http", "https"]),
    ),
    DO + "tls-ports": (
        "443",
        {},
        _listeners(lambda c: [lst.protocol for lst in c.listeners] == ["http", "https"]),
    ),
    DO + "http2-ports": (
        "443",
        {DO + "certificate-id": "c"},
        _listeners(lambda c: c.listeners[1].protocol == "https" and c.listeners[1].serves_http2),
    ),
    DO + "tls-passthrough": ("true", {}, _listeners(lambda c: c.listeners[1].protocol == "https")),
    DO + "certificate-id": ("abc", {}, _warns("certificate abc is not in --certificates")),
    DO + "certificate-name": (
        "my-cert",
        {},
        _warns("certificate my-cert is not in --certificates"),
    ),
    DO + "redirect-http-to-https": (
        "true",
        {},
        _listeners(
            lambda c: (
                c.listeners[0].redirect_https is not None
                and c.listeners[0].redirect_https.code == 308
            )
        ),
    ),
    DO + "enable-backend-keepalive": (
        "false",
        {},
        _backend(lambda b: b.keepalive.enabled is False),
    ),
    DO + "http-idle-timeout-seconds": (
        "120",
        {},
        _listeners(lambda c: c.listeners[0].client.keepalive_timeout == 120),
    ),
    DO + "sticky-sessions-type": (
        "cookies",
        STICKY,
        _route(lambda r: r.affinity.name == "lb" and r.affinity.mode == "persistent"),
    ),
    DO + "sticky-sessions-cookie-name": ("lb2", STICKY, _route(lambda r: r.affinity.name == "lb2")),
    DO + "sticky-sessions-cookie-ttl": ("99", STICKY, _route(lambda r: r.affinity.max_age == 99)),
    DO + "override-health-check": (
        "true",
        {},
        _backend(lambda b: b.health.type == "tcp" and b.health.healthy_threshold == 5),
    ),
    DO + "healthcheck-protocol": ("http", HC, _backend(lambda b: b.health.type == "http")),
    DO + "healthcheck-path": (
        "/healthz",
        HC,
        _backend(lambda b: b.health.type == "http" and b.health.path == "/healthz"),
    ),
    DO + "healthcheck-port": ("10256", HC, _warns("wslb checks every pod on the port")),
    DO + "healthcheck-check-interval-seconds": (
        "10",
        HC,
        _backend(lambda b: b.health.interval == 10),
    ),
    DO + "healthcheck-response-timeout-seconds": (
        "7",
        HC,
        _backend(lambda b: b.health.timeout == 7),
    ),
    DO + "healthcheck-unhealthy-threshold": (
        "2",
        HC,
        _backend(lambda b: b.health.unhealthy_threshold == 2),
    ),
    DO + "healthcheck-healthy-threshold": (
        "3",
        HC,
        _backend(lambda b: b.health.healthy_threshold == 3),
    ),
    DO + "enable-proxy-protocol": ("true", {}, _backend(lambda b: b.proxy_protocol == "v1")),
    DO + "allow-rules": (
        "ip:1.2.3.4,cidr:10.0.0.0/8",
        {},
        _listeners(lambda c: c.listeners[0].allow == ("1.2.3.4", "10.0.0.0/8")),
    ),
    DO + "deny-rules": (
        "cidr:192.0.2.0/24",
        {},
        _listeners(lambda c: c.listeners[0].deny == ("192.0.2.0/24",)),
    ),
    DO + "algorithm": ("least_connections", {}, _warns("algorithm: Deprecated by DigitalOcean")),
    DO + "size-slug": ("lb-small", {}, _warns("size-slug: Deprecated")),
    DO + "size-unit": ("3", {}, _warns("size-unit: Balancer size")),
    DO + "name": ("edge", {}, _warns("name: Balancer name")),
    DO + "hostname": ("lb.example.com", {}, _warns("hostname: Status hostname")),
    DO + "type": ("REGIONAL", {}, _warns("type: Balancer type")),
}


def test_every_annotation_of_the_table_has_a_case() -> None:
    assert set(CASES) == {row.name for row in TABLE}


@pytest.mark.parametrize("name", sorted(CASES))
def test_annotation(name: str, tmp_path: Path) -> None:
    value, needs, check = CASES[name]
    annotations = {**needs, name: value}
    if name.startswith((NGINX, WSLB)):
        docs = [ingress(annotations)]
    else:
        docs = [ingress(), lb_service(annotations)]
    config, issues = run(tmp_path, docs)
    assert not [i for i in issues if i.severity == "error"], issues
    check(config, issues)


@pytest.mark.parametrize(
    ("annotation", "value", "message"),
    [
        (
            NGINX + "affinity-mode",
            "sticky",
            "affinity-mode: 'sticky' is not one of balanced, persistent",
        ),
        (NGINX + "proxy-read-timeout", "1h", "proxy-read-timeout: '1h' is not an integer"),
        (NGINX + "whitelist-source-range", "10.0.0.0/33", "is not an address or CIDR range"),
        (NGINX + "rewrite-target", "/", "wslb cannot honour this annotation"),
        (NGINX + "configuration-snippet", "rewrite ^ /x;", "directive rewrite is not supported"),
        (NGINX + "backend-protocol", "FCGI", "not AJP or FastCGI"),
    ],
)
def test_bad_ingress_annotations_are_errors_with_lines(
    annotation: str, value: str, message: str, tmp_path: Path
) -> None:
    config, issues = run(tmp_path, [ingress({annotation: value})])
    assert config is None
    hits = [i for i in issues if i.severity == "error" and message in i.message]
    assert hits, issues
    assert hits[0].line is not None and annotation in hits[0].key


@pytest.mark.parametrize(
    ("annotation", "value", "message"),
    [
        (DO + "http-idle-timeout-seconds", "10", "10 is out of range 30..600"),
        (DO + "healthcheck-check-interval-seconds", "1", "out of range 3..300"),
        (DO + "allow-rules", "host:example.com", "is not ip:<address> or cidr:<range>"),
        (DO + "protocol", "udp", "is not one of tcp, http, https, http2, http3"),
        (DO + "sticky-sessions-type", "cookies", "needs sticky-sessions-cookie-name"),
        (DO + "enable-proxy-protocol", "yes", "is not a boolean"),
    ],
)
def test_bad_service_annotations_are_errors(
    annotation: str, value: str, message: str, tmp_path: Path
) -> None:
    config, issues = run(tmp_path, [ingress(), lb_service({annotation: value})])
    assert config is None and errored(issues, message), issues


def test_seed_fixtures_as_published() -> None:
    objects, _issues = load_objects([str(ROOT / "tests" / "fixtures")])
    config, _more = translate(
        objects, ManifestOptions(endpoints={"vuepilot/vuepilot-node": ["10.0.0.1:8080"]})
    )
    route = config.routes[0]
    assert route.host == "ws.vuepilot.com" and route.path == "/"
    assert route.affinity is not None and route.affinity.name == "route"
    assert route.timeouts.read == route.timeouts.send == route.timeouts.tunnel == 3600
    assert route.cors is not None and route.cors.allow_methods == "PUT, GET, POST, OPTIONS"
    assert [lst.protocol for lst in config.listeners] == ["http", "https"]
    assert config.listeners[0].redirect_https is not None
    assert [lst.port for lst in config.listeners] == [80, 443]


def service(ports: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "api", "namespace": "app"},
        "spec": {"ports": ports, **spec},
    }


def endpoint_slice(
    name: str,
    eps: list[dict[str, Any]],
    ports: list[dict[str, Any]] | None = None,
    address_type: str = "IPv4",
) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": "app",
            "labels": {"kubernetes.io/service-name": "api"},
        },
        "addressType": address_type,
        "ports": [{"name": "web", "port": 8080}] if ports is None else ports,
        "endpoints": eps,
    }


def translated(
    tmp_path: Path, docs: list[dict[str, Any]], **opts: Any
) -> tuple[Config | None, list[ConfigIssue]]:
    """``run`` without the helper's --endpoints: the files (and ``opts``) alone."""
    f = tmp_path / "alone.yaml"
    f.write_text(yaml.safe_dump_all(docs))
    objects, issues = load_objects([str(f)])
    assert not issues, issues
    try:
        config, more = translate(objects, ManifestOptions(**opts))
    except ConfigError as exc:
        return None, exc.issues
    return config, more


def addresses(config: Config | None) -> dict[str, bool]:
    """address -> draining, of the only backend."""
    assert config is not None
    return {e.address: e.draining for e in config.backends[0].endpoints}


def the_error(issues: list[ConfigIssue]) -> ConfigIssue:
    (err,) = [i for i in issues if i.severity == "error"]
    return err


FIXES = ("clusterIP: None", "EndpointSlices", "--endpoints app/api=", "wslb controller")


def test_endpoint_sources_in_order(tmp_path: Path) -> None:
    svc = service([{"name": "web", "port": 80, "targetPort": 8080}])
    slice_ = endpoint_slice(
        "api-x",
        [{"addresses": ["10.1.0.1"]}, {"addresses": ["10.1.0.2"], "conditions": {"ready": False}}],
    )
    config, _ = run(tmp_path, [ingress(), svc, slice_])
    assert addresses(config) == {"10.1.0.1:8080": False}
    # without slices: --endpoints (the helper gives app/api)
    config, _ = run(tmp_path, [ingress(), svc])
    assert addresses(config) == {"10.0.0.1:8080": False}
    # without either, a ClusterIP Service is an error: its name is a virtual IP that
    # kube-proxy would balance again behind wslb
    config, issues = translated(tmp_path, [ingress(), svc], dns_suffix="svc.example")
    assert config is None
    err = the_error(issues)
    assert err.key == "spec.rules[0].http.paths[0].backend" and err.line is not None
    assert "Service app/api has a cluster IP" in err.message
    assert "virtual IP that kube-proxy balances again behind wslb" in err.message
    assert "Engine.IO sessions break" in err.message and "different pods" in err.message
    for fix in FIXES:
        assert fix in err.message
    # a cluster IP written out, or a Service that is not in the files: the same
    config, issues = translated(
        tmp_path, [ingress(), {**svc, "spec": {**svc["spec"], "clusterIP": "10.245.0.7"}}]
    )
    assert config is None and "has a cluster IP" in the_error(issues).message
    config, issues = translated(tmp_path, [ingress()])
    assert config is None
    err = the_error(issues)
    assert "Service app/api is not in the files" in err.message
    assert "cannot know whether it is headless" in err.message
    for fix in FIXES:
        assert fix in err.message
    # a headless Service: DNS of its name (the pods), on the target port, re-resolved
    headless = {**svc, "spec": {**svc["spec"], "clusterIP": "None"}}
    config, issues = translated(tmp_path, [ingress(), headless], dns_suffix="svc.example")
    assert config is not None
    backend = config.backends[0]
    assert [e.address for e in backend.endpoints] == ["api.app.svc.example:8080"]
    assert backend.discovery is not None
    assert any("headless" in i.message and i.severity == "info" for i in issues)
    # ... and its slices first when the files have them
    config, _ = translated(tmp_path, [ingress(), headless, slice_])
    assert addresses(config) == {"10.1.0.1:8080": False}
    assert config is not None and config.backends[0].discovery is None
    # a headless Service with a named target port and no slices: no port to dial
    named = service([{"name": "web", "port": 80, "targetPort": "http"}], clusterIP="None")
    config, issues = translated(tmp_path, [ingress(), named])
    assert config is None and "the target port is named 'http'" in the_error(issues).message


def test_slices_in_the_files_with_no_ready_pod_answer_503(tmp_path: Path) -> None:
    """The files say where the pods are and none is ready: no endpoint (503), a warning, not
    the DNS of the Service (headless or not); --endpoints still overrides them."""
    unready = endpoint_slice("api-x", [{"addresses": ["10.1.0.2"], "conditions": {"ready": False}}])
    for spec in ({}, {"clusterIP": "None"}):
        svc = service([{"name": "web", "port": 80, "targetPort": 8080}], **spec)
        config, issues = translated(tmp_path, [ingress(), svc, unready])
        assert config is not None and config.backends[0].endpoints == ()
        assert warned(issues, "have no ready endpoint for port 80: it answers 503")
    config, _ = translated(
        tmp_path, [ingress(), svc, unready], endpoints={"app/api": ["10.0.0.1:8080"]}
    )
    assert addresses(config) == {"10.0.0.1:8080": False}


def test_from_the_api_endpoints_are_the_slices_alone(tmp_path: Path) -> None:
    """Controller mode: no slices, or none ready, is a backend with no endpoints (503), not
    an error, and never DNS nor --endpoints."""
    svc = service([{"name": "web", "port": 80, "targetPort": 8080}])
    for docs in (
        [ingress(), svc],
        [ingress()],  # the Service is not there (yet)
        [
            ingress(),
            svc,
            endpoint_slice("api-x", [{"addresses": ["10.1.0.2"], "conditions": {"ready": False}}]),
        ],
    ):
        config, issues = translated(
            tmp_path, docs, from_api=True, endpoints={"app/api": ["10.9.9.9:1"]}
        )
        assert config is not None, issues
        assert config.backends[0].endpoints == ()
        assert config.backends[0].discovery is None
        assert not [i for i in issues if i.severity == "error"]
    config, _ = translated(
        tmp_path,
        [ingress(), svc, endpoint_slice("a", [{"addresses": ["10.1.0.1"]}])],
        from_api=True,
    )
    assert addresses(config) == {"10.1.0.1:8080": False}


def test_service_port_3000_to_target_8080_dials_the_pods_on_8080(tmp_path: Path) -> None:
    """The virtual IP answers on 3000, the pods on 8080: wslb dials the pods' 8080."""
    ing = ingress()
    ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"] = {"number": 3000}
    svc = service([{"port": 3000, "targetPort": 8080}])  # one port, no name
    slice_ = endpoint_slice(
        "api-x", [{"addresses": ["10.1.0.1"]}, {"addresses": ["10.1.0.2"]}], [{"port": 8080}]
    )
    config, _ = translated(tmp_path, [ing, svc, slice_])
    assert addresses(config) == {"10.1.0.1:8080": False, "10.1.0.2:8080": False}
    # the legacy Endpoints object: the same; notReadyAddresses are not served
    legacy = {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": "api", "namespace": "app"},
        "subsets": [
            {
                "addresses": [{"ip": "10.1.0.3"}],
                "notReadyAddresses": [{"ip": "10.1.0.4"}],
                "ports": [{"port": 8080}],
            }
        ],
    }
    config, _ = translated(tmp_path, [ing, svc, legacy])
    assert addresses(config) == {"10.1.0.3:8080": False}


def test_slice_conditions_and_ports_per_slice(tmp_path: Path) -> None:
    """Ready (or null) serves, serving+terminating drains, not serving is left out; a named
    target port is resolved in each slice (its port of the Service port's name), so two
    slices of one Service give different numbers."""
    svc = service([{"name": "web", "port": 80, "targetPort": "http"}])
    ending = {"ready": False, "serving": True, "terminating": True}
    gone = {"ready": False, "serving": False, "terminating": True}
    unready = {"ready": False, "serving": False}  # not ready, not terminating
    deferred = {"ready": False, "terminating": True}  # serving null: as ready says
    docs = [
        ingress(),
        svc,
        endpoint_slice(
            "a",
            [{"addresses": ["10.1.0.1"]}, {"addresses": ["10.1.0.2"], "conditions": ending}],
        ),
        endpoint_slice(
            "b",
            [
                {"addresses": ["10.1.0.3"], "conditions": {"ready": True}},
                {"addresses": ["10.1.0.4"], "conditions": gone},
                {"addresses": ["10.1.0.5"], "conditions": unready},
                {"addresses": ["10.1.0.6"], "conditions": deferred},
            ],
            [{"name": "metrics", "port": 9100}, {"name": "web", "port": 9090}],
        ),
    ]
    config, issues = translated(tmp_path, docs)
    assert addresses(config) == {
        "10.1.0.1:8080": False,
        "10.1.0.3:9090": False,
        "10.1.0.2:8080": True,
    }, issues
    assert config is not None
    (spec,) = [e for e in config.backends[0].endpoints if e.draining]
    assert spec.model_dump() == {"address": "10.1.0.2:8080", "weight": 1, "draining": True}


def test_slices_merged_across_address_types(tmp_path: Path) -> None:
    """Several slices of one Service merge, each address once; ready in one slice wins over
    draining in another; IPv6 addresses in brackets, FQDN slices by name."""
    svc = service([{"name": "web", "port": 80, "targetPort": 8080}])
    ending = {"ready": False, "serving": True, "terminating": True}
    docs = [
        ingress(),
        svc,
        endpoint_slice("a", [{"addresses": ["10.1.0.1"]}, {"addresses": ["10.1.0.2"]}]),
        endpoint_slice(
            "b",
            [
                {"addresses": ["10.1.0.2"], "conditions": ending},  # ready in "a"
                {"addresses": ["10.1.0.1"]},  # twice
                {"addresses": ["10.1.0.9"], "conditions": ending},
            ],
        ),
        endpoint_slice("c", [{"addresses": ["fd00::1"]}], address_type="IPv6"),
        endpoint_slice("d", [{"addresses": ["pod-a.example.internal"]}], address_type="FQDN"),
    ]
    config, _ = translated(tmp_path, docs)
    assert addresses(config) == {
        "10.1.0.1:8080": False,
        "10.1.0.2:8080": False,
        "10.1.0.9:8080": True,
        "[fd00::1]:8080": False,
        "pod-a.example.internal:8080": False,
    }
    assert config is not None
    assert [e.port for e in config.backends[0].endpoints] == [8080] * 5


def test_slice_ports_as_ingress_nginx_reads_them(tmp_path: Path) -> None:
    """No port of the Service port's name: a numbered target port as it is; no ports at all:
    the target port; a port of another protocol or without a number is not the one."""
    svc = service([{"name": "web", "port": 80, "targetPort": 8080}, {"name": "dns", "port": 53}])
    docs = [
        ingress(),
        svc,
        endpoint_slice("a", [{"addresses": ["10.1.0.1"]}], [{"name": "renamed", "port": 7000}]),
        endpoint_slice("b", [{"addresses": ["10.1.0.2"]}], []),
        endpoint_slice(
            "c",
            [{"addresses": ["10.1.0.3"]}],
            [{"name": "web", "port": 9999, "protocol": "UDP"}, {"name": "web2"}],
        ),
    ]
    config, _ = translated(tmp_path, docs)
    assert addresses(config) == {"10.1.0.1:8080": False, "10.1.0.2:8080": False}


def test_external_name_services_are_their_name(tmp_path: Path) -> None:
    """No cluster IP in between: the external name on the target port, re-resolved; never a
    loopback name (as ingress-nginx)."""
    ext = service([{"port": 80, "targetPort": 8443}], type="ExternalName")
    ext["spec"]["externalName"] = "api.partner.example."
    config, _ = translated(tmp_path, [ingress(), ext])
    assert config is not None
    assert [e.address for e in config.backends[0].endpoints] == ["api.partner.example:8443"]
    assert config.backends[0].discovery is not None
    # without ports: the Ingress's port; from the API too
    ext["spec"]["ports"] = []
    config, _ = translated(tmp_path, [ingress(), ext], from_api=True)
    assert config is not None
    assert [e.address for e in config.backends[0].endpoints] == ["api.partner.example:80"]
    ext["spec"]["externalName"] = "127.0.0.1"
    config, issues = translated(tmp_path, [ingress(), ext])
    assert config is None
    err = the_error(issues)
    assert err.key == "spec.externalName" and "loopback" in err.message


def test_tcp_ports_need_the_pods_too(tmp_path: Path) -> None:
    """A tcp port of the LoadBalancer Service forwards to that Service's pods: its cluster IP
    is not dialled either (kube-proxy would balance behind wslb's health checks and counts)."""
    svc = lb_service({DO + "protocol": "tcp"}, ports=[{"name": "db", "port": 5432}])
    config, issues = translated(tmp_path, [svc])
    assert config is None
    err = the_error(issues)
    assert "Service ingress/edge has a cluster IP" in err.message
    assert "--endpoints ingress/edge=" in err.message and "wslb controller" in err.message
    assert "clusterIP: None" not in err.message  # a LoadBalancer Service is never headless
    config, _ = translated(tmp_path, [svc], endpoints={"ingress/edge": ["10.0.0.8:5432"]})
    assert config is not None and config.backends[0].protocol == "tcp"
    assert [e.address for e in config.backends[0].endpoints] == ["10.0.0.8:5432"]


def test_ingress_class_filter_and_legacy_versions(tmp_path: Path) -> None:
    legacy = {
        "apiVersion": "networking.k8s.io/v1beta1",
        "kind": "Ingress",
        "metadata": {
            "name": "old",
            "namespace": "app",
            "annotations": {"kubernetes.io/ingress.class": "other"},
        },
        "spec": {"backend": {"serviceName": "api", "servicePort": 80}},
    }
    config, issues = run(tmp_path, [ingress(), legacy])
    assert len(config.routes) == 2 and warned(
        issues, "networking.k8s.io/v1beta1 Ingress is deprecated"
    )
    assert any(r.host is None for r in config.routes)  # the legacy default backend
    config, issues = run(tmp_path, [ingress(), legacy], ingress_class="other")
    assert [r.host for r in config.routes] == [None]


def test_socket_io_timeout_warning(tmp_path: Path) -> None:
    _, issues = run(
        tmp_path,
        [
            ingress(
                {NGINX + "proxy-read-timeout": "30"},
                rules=[
                    {
                        "http": {
                            "paths": [
                                {
                                    "path": "/socket.io",
                                    "pathType": "Prefix",
                                    "backend": {"service": {"name": "api", "port": {"number": 80}}},
                                }
                            ]
                        }
                    }
                ],
            )
        ],
    )
    assert warned(issues, "shorter than Socket.IO's ping interval plus timeout")


def test_sticky_sessions_on_tcp_ports_warn(tmp_path: Path) -> None:
    svc = lb_service({**STICKY, DO + "protocol": "tcp"}, ports=[{"name": "db", "port": 5432}])
    config, issues = run(tmp_path, [svc], endpoints={"ingress/edge": ["10.0.0.8:5432"]})
    assert warned(issues, "sticky sessions cannot work on tcp port 5432")
    assert config is not None and config.listeners[0].protocol == "tcp"


def test_snippet_directives() -> None:
    h = parse_snippet(
        """
        more_set_headers "X-A: 1" 'X-B: $http_origin';  # comment
        add_header X-C "v w" always;
        add_header X-D d;
        proxy_set_header X-Real-IP $remote_addr;
        """
    )
    assert [(r.name, r.value) for r in h.response_set] == [("X-A", "1"), ("X-B", "$http_origin")]
    assert [(r.name, r.value, r.always) for r in h.response_add] == [
        ("X-C", "v w", True),
        ("X-D", "d", False),
    ]
    assert [(r.name, r.value) for r in h.request_set] == [("X-Real-IP", "$remote_addr")]
    for bad in (
        "proxy_pass http://x;",
        "add_header X;",
        "more_set_headers -s 404 'X: y';",
        "if ($x) { return 403; }",
        "add_header X $unknown_var;",
        "add_header X y",
    ):
        with pytest.raises(SnippetError):
            parse_snippet(bad)


def test_docs_are_generated_from_the_table() -> None:
    assert (ROOT / "docs" / "kubernetes.md").read_text() == render_markdown(), (
        "docs/kubernetes.md is stale: python -m wslb.controller.docs > docs/kubernetes.md"
    )


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        ({DO + "certificate-id": "c"}, False),  # DO's https entry: HTTP/1.1
        ({DO + "certificate-id": "c", DO + "http2-ports": "443"}, True),
        ({DO + "certificate-id": "c", DO + "protocol": "http2"}, True),
        ({DO + "tls-passthrough": "true"}, True),  # ingress-nginx terminates: h2 by default
    ],
)
def test_http2_on_tls_ports(annotations: dict[str, str], expected: bool, tmp_path: Path) -> None:
    config, issues = run(tmp_path, [ingress(), lb_service(annotations)])
    assert config is not None, issues
    https = [lst for lst in config.listeners if lst.protocol == "https"]
    assert https and all(lst.serves_http2 is expected for lst in https)


def test_http2_without_a_load_balancer_service_as_ingress_nginx(tmp_path: Path) -> None:
    config, _ = run(tmp_path, [ingress()])
    assert config is not None
    assert [(lst.protocol, lst.serves_http2) for lst in config.listeners] == [
        ("http", False),
        ("https", True),
    ]


@pytest.mark.parametrize(("value", "protocol"), [("GRPC", "h2c"), ("GRPCS", "http2")])
def test_grpc_backends_speak_http2(value: str, protocol: str, tmp_path: Path) -> None:
    config, issues = run(tmp_path, [ingress({NGINX + "backend-protocol": value})])
    assert config is not None, issues
    assert config.backends[0].protocol == protocol


def test_objects_of_the_wrong_shape_are_errors_with_lines(tmp_path: Path) -> None:
    """What the API server's schema would refuse (found by the manifest fuzzer as crashes)."""
    bad_ingress = ingress()
    bad_ingress["spec"]["rules"].append({"host": "b.example", "http": {"paths": [3]}})
    bad_ingress["spec"]["tls"] = "x"
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "api", "namespace": "app"},
        "spec": {"ports": [{"port": -1, "targetPort": [1]}]},
    }
    config, issues = run(tmp_path, [bad_ingress, service])
    assert config is None
    found = {(i.key, i.message) for i in issues if i.severity == "error" and i.line}
    assert (
        "spec.rules[1].http.paths[0]",
        "Ingress web: must be a mapping, not an integer",
    ) in found
    assert ("spec.tls", "Ingress web: must be a list, not a string") in found
    assert ("spec.ports[0].port", "Service api: must be a port number (1-65535), not -1") in found
    assert (
        "spec.ports[0].targetPort",
        "Service api: must be a port number (1-65535) or a name, not [1]",
    ) in found


def test_model_refusals_name_the_annotation_or_field(tmp_path: Path) -> None:
    bad = ingress({NGINX + "affinity": "cookie", NGINX + "session-cookie-name": "a b"})
    bad["spec"]["rules"][0]["host"] = "bad host"
    bad["spec"]["rules"][0]["http"]["paths"][0]["path"] = "nope"
    config, issues = run(tmp_path, [bad])
    assert config is None
    keys = {i.key: i.message for i in issues if i.severity == "error" and i.line}
    assert keys[f"metadata.annotations.{NGINX}session-cookie-name"] == "'a b' is not a cookie name"
    assert "a host is a DNS name" in keys["spec.rules[0].host"]
    assert keys["spec.rules[0].http.paths[0].path"] == "a path must start with '/'"


def _tls_ingress(annotations: dict[str, str] | None = None) -> dict[str, Any]:
    ing = ingress(annotations)
    ing["spec"]["tls"] = [{"hosts": ["app.example.com"], "secretName": "app-tls"}]
    return ing


def test_acme_for_tls_entries_whose_secret_is_missing(tmp_path: Path) -> None:
    acme = {"email": "ops@example.com", "storage": str(tmp_path / "acme")}
    config, issues = run(tmp_path, [_tls_ingress()], acme=acme)
    assert config is not None and config.acme is not None, issues
    (cert,) = config.acme.certificates
    assert cert.key == "app.app-tls" and cert.hosts == ("app.example.com",)  # namespace.secret
    assert config.acme.email == "ops@example.com"
    tls_listeners = [lst for lst in config.listeners if lst.tls is not None]
    assert tls_listeners and all(lst.tls.acme for lst in tls_listeners if lst.tls)
    # without --acme-* a missing Secret is a self-signed certificate, as before
    config, _ = run(tmp_path, [_tls_ingress()])
    assert config is not None and config.acme is None


def test_acme_annotation_and_do_certificate_name(tmp_path: Path) -> None:
    config, issues = run(tmp_path, [_tls_ingress({WSLB + "acme": "true"})])
    assert config is not None and config.acme is not None, issues
    assert [c.key for c in config.acme.certificates] == ["app.app-tls"]
    assert config.acme.directory.startswith("https://acme-v02.api.letsencrypt.org")
    # DigitalOcean's certificate-name: one certificate, named so, for every host
    acme = {"directory": "https://ca.example/dir", "storage": str(tmp_path / "acme")}
    svc = lb_service({DO + "certificate-name": "Edge cert", DO + "protocol": "http"})
    config, issues = run(tmp_path, [ingress(), svc], acme=acme)
    assert config is not None and config.acme is not None, issues
    assert [(c.key, c.hosts) for c in config.acme.certificates] == [
        ("Edge cert", ("app.example.com",))
    ]
    # the ACME certificate counts as a certificate: 443 is TLS, as with an uploaded one
    (https,) = [lst for lst in config.listeners if lst.port == 443]
    assert https.protocol == "https" and https.tls is not None and https.tls.acme


def test_acme_names_become_safe_file_names_and_secrets_named_twice_merge(tmp_path: Path) -> None:
    from wslb.acme.storage import Storage

    storage = Storage(str(tmp_path / "acme"))
    storage.prepare()
    chain, key = self_signed(["a.example"])
    for name in ("Edge cert", "../../etc", "x" * 300):
        storage.save_certificate(name, ("a.example",), chain.encode(), key.encode())
        got = storage.load_certificate(name)
        assert got is not None and got.hosts == ("a.example",)
    assert all(
        p.parent == tmp_path / "acme" / "certificates" for p in storage.root.glob("certificates/*")
    )
    # two Ingresses with the same Secret name in one namespace: one certificate, both hosts
    one, two = _tls_ingress(), _tls_ingress()
    two["metadata"]["name"] = "web2"
    two["spec"]["tls"][0]["hosts"] = ["other.example.com"]
    acme = {"email": "ops@example.com", "storage": str(tmp_path / "acme")}
    config, issues = run(tmp_path, [one, two], acme=acme)
    assert config is not None and config.acme is not None, issues
    assert [(c.key, c.hosts) for c in config.acme.certificates] == [
        ("app.app-tls", ("app.example.com", "other.example.com"))
    ]


def test_health_annotations_the_model_refuses_are_errors(tmp_path: Path) -> None:
    """Found by the manifest fuzzer: a health check path without '/' escaped as an exception."""
    svc = lb_service({DO + "override-health-check": "true", DO + "healthcheck-path": "0"})
    config, issues = run(tmp_path, [ingress(), svc])
    assert config is None and errored(issues, "the health check path must start with '/'")
    (hit,) = [i for i in issues if "health check path" in i.message]
    assert hit.key.endswith("healthcheck-path") and hit.line is not None


def _front(
    tmp_path: Path, annotations: dict[str, str], cm: dict[str, str] | None = None
) -> tuple[Config, list[ConfigIssue]]:
    """The controller behind DigitalOcean's balancer (--balancer-in-front)."""
    docs = [ingress(), lb_service(annotations)]
    extra: dict[str, Any] = {}
    if cm is not None:
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "wslb", "namespace": "ingress"},
                "data": cm,
            }
        )
        extra["configmap"] = "ingress/wslb"
    config, issues = run(
        tmp_path,
        docs,
        balancer_in_front=True,
        lb_service="ingress/edge",
        port_map={80: 8080, 443: 8443},
        **extra,
    )
    assert config is not None, issues
    return config, issues


def test_behind_a_tcp_balancer_wslb_terminates_tls_on_443_and_takes_its_proxy_header(
    tmp_path: Path,
) -> None:
    config, issues = _front(tmp_path, {DO + "enable-proxy-protocol": "true"})
    by_port = {lst.port: lst for lst in config.listeners}
    assert set(by_port) == {8080, 8443}
    assert by_port[8080].protocol == "http" and by_port[8443].protocol == "https"
    assert all(lst.proxy_protocol for lst in config.listeners)
    assert config.backends[0].proxy_protocol is None  # the header ends at wslb
    assert not [i for i in issues if i.severity == "error"], issues


def test_behind_a_balancer_that_terminates_tls_wslb_listens_plain_and_keeps_its_headers(
    tmp_path: Path,
) -> None:
    config, issues = _front(
        tmp_path,
        {
            DO + "protocol": "http",
            DO + "tls-ports": "443",
            DO + "certificate-id": "0d6e-cert",
            DO + "redirect-http-to-https": "true",
            DO + "healthcheck-path": "/healthz",
            DO + "override-health-check": "true",
        },
    )
    by_port = {lst.port: lst for lst in config.listeners}
    assert by_port[8443].protocol == "http" and by_port[8443].trusted_proxies
    assert by_port[8080].protocol == "http" and by_port[8080].redirect_https is None
    assert not any(lst.proxy_protocol for lst in config.listeners)
    assert config.backends[0].health.type == "tcp"  # DO's check of its nodes, not of the pods
    assert not warned(issues, "certificate"), issues  # DO's certificate, not wslb's


def test_behind_a_balancer_use_proxy_protocol_of_the_configmap_is_accepted(
    tmp_path: Path,
) -> None:
    config, issues = _front(tmp_path, {}, {"use-proxy-protocol": "true"})
    assert all(lst.proxy_protocol for lst in config.listeners)
    assert not any("use-proxy-protocol" in str(i) for i in issues), issues
