"""ingress-nginx's controller ConfigMap -> defaults under the annotations: every key of the
table has a case here, plus precedence, the ConfigMap's selection and the problems it reports."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.unit.config.kubernetes.test_translate import (
    NGINX,
    errored,
    ingress,
    lb_service,
    run,
    warned,
)
from wslb.config.kubernetes import objects
from wslb.config.kubernetes.annotations import DO
from wslb.config.kubernetes.configmap import BY_NAME, OTHER_KEYS, TABLE
from wslb.config.model import Config, RouteSpec
from wslb.errors import ConfigIssue

REF = "ingress-nginx/ingress-nginx-controller"
HSTS = "Strict-Transport-Security"


def test_configmaps_are_read_from_the_files() -> None:
    assert "ConfigMap" in objects.KINDS


def configmap(
    data: dict[str, Any],
    name: str = "ingress-nginx-controller",
    namespace: str = "ingress-nginx",
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": data,
    }


def with_cm(
    tmp_path: Path, data: dict[str, Any], *docs: dict[str, Any], **opts: Any
) -> tuple[Config | None, list[ConfigIssue]]:
    return run(tmp_path, [*(docs or [ingress()]), configmap(data)], configmap=REF, **opts)


def errors(issues: list[ConfigIssue]) -> list[ConfigIssue]:
    return [i for i in issues if i.severity == "error"]


def tls_ingress(annotations: dict[str, str] | None = None, **meta: Any) -> dict[str, Any]:
    doc = ingress(annotations)
    doc["spec"]["tls"] = [{"hosts": ["app.example.com"]}]
    doc["metadata"].update(meta)
    return doc


def other_ingress(annotations: dict[str, str]) -> dict[str, Any]:
    doc = ingress(annotations)
    doc["metadata"]["name"] = "other"
    doc["spec"]["rules"][0]["host"] = "other.example.com"
    return doc


def routes_of(config: Config | None, host: str) -> list[RouteSpec]:
    assert config is not None
    found = [r for r in config.routes if r.host == host]
    assert found, config.routes
    return found


def plain(routes: list[RouteSpec]) -> list[RouteSpec]:
    """The routes of the plain-HTTP listeners (those of the HTTPS ones carry no redirect)."""
    return [r for r in routes if r.listeners is None or "http" in r.listeners]


def line_of(tmp_path: Path, text: str) -> int:
    lines = (tmp_path / "m.yaml").read_text().splitlines()
    return next(n for n, line in enumerate(lines, 1) if text in line)


# ------------------------------------------------------------------ the brief's cases


def test_proxy_read_timeout_is_the_default_under_the_annotation(tmp_path: Path) -> None:
    config, issues = with_cm(
        tmp_path,
        {"proxy-read-timeout": "3600"},
        ingress(),
        other_ingress({NGINX + "proxy-read-timeout": "120"}),
    )
    assert not errors(issues), issues
    for r in routes_of(config, "app.example.com"):
        assert r.timeouts.read == 3600 and r.timeouts.tunnel == 3600, r.timeouts
    for r in routes_of(config, "other.example.com"):
        assert r.timeouts.read == 120 and r.timeouts.tunnel == 120, r.timeouts


def test_annotation_and_configmap_timeouts_combine(tmp_path: Path) -> None:
    config, _ = with_cm(
        tmp_path,
        {"proxy-read-timeout": "3600", "proxy-connect-timeout": "2"},
        ingress({NGINX + "proxy-send-timeout": "90"}),
    )
    r = routes_of(config, "app.example.com")[0]
    assert (r.timeouts.connect, r.timeouts.read, r.timeouts.send) == (2, 3600, 90)
    assert r.timeouts.tunnel == 3600  # the larger of read and send


def test_use_forwarded_headers_trusts_the_peers(tmp_path: Path) -> None:
    config, issues = with_cm(tmp_path, {"use-forwarded-headers": "true"})
    assert config is not None and not errors(issues)
    assert all(lst.trusted_proxies == ("0.0.0.0/0",) for lst in config.listeners)
    config, _ = with_cm(
        tmp_path,
        {"use-forwarded-headers": "true", "proxy-real-ip-cidr": "10.0.0.0/8, 192.168.1.1"},
    )
    assert config is not None
    assert all(lst.trusted_proxies == ("10.0.0.0/8", "192.168.1.1") for lst in config.listeners)
    # proxy-real-ip-cidr alone trusts nobody's X-Forwarded-*
    config, _ = with_cm(tmp_path, {"proxy-real-ip-cidr": "10.0.0.0/8"})
    assert config is not None and all(not lst.trusted_proxies for lst in config.listeners)


def test_forwarded_headers_reach_the_backend_only_from_trusted_peers(tmp_path: Path) -> None:
    import ipaddress

    from tests.unit.proto.test_headers_proxy_ws import _request
    from wslb.proto.headers import forward_request_headers

    config, _ = with_cm(
        tmp_path, {"use-forwarded-headers": "true", "proxy-real-ip-cidr": "10.0.0.0/8"}
    )
    assert config is not None
    nets = [ipaddress.ip_network(n) for n in config.listeners[0].trusted_proxies]
    head = _request(
        b"GET / HTTP/1.1\r\nHost: app.example.com\r\nX-Forwarded-For: 203.0.113.9\r\n"
        b"X-Forwarded-Proto: https\r\n\r\n"
    )
    for peer, xff, proto in (
        ("10.1.2.3", b"203.0.113.9, 10.1.2.3", b"https"),
        ("198.51.100.7", b"198.51.100.7", b"http"),
    ):
        trusted = any(ipaddress.ip_address(peer) in n for n in nets)
        lines = forward_request_headers(
            head, client_ip=peer.encode(), proto=b"http", port=b"80", trusted=trusted
        )
        assert b"X-Forwarded-For: %s\r\n" % xff in lines, lines
        assert b"X-Forwarded-Proto: %s\r\n" % proto in lines, lines


def test_keepalive_reaches_the_listeners_and_backends(tmp_path: Path) -> None:
    config, issues = with_cm(
        tmp_path,
        {
            "keep-alive": "30",
            "upstream-keepalive-connections": "16",
            "upstream-keepalive-timeout": "10",
            "upstream-keepalive-requests": "50",
        },
    )
    assert config is not None and not errors(issues), issues
    assert all(lst.client.keepalive_timeout == 30 for lst in config.listeners)
    ka = config.backends[0].keepalive
    assert (ka.enabled, ka.max_idle, ka.idle_timeout, ka.max_requests) == (True, 16, 10, 50)


def test_upstream_keepalive_off_and_digitalocean_wins(tmp_path: Path) -> None:
    config, _ = with_cm(tmp_path, {"upstream-keepalive-connections": "0"})
    assert config is not None and not config.backends[0].keepalive.enabled
    svc = lb_service({DO + "enable-backend-keepalive": "true"})
    config, _ = with_cm(tmp_path, {"upstream-keepalive-connections": "0"}, ingress(), svc)
    assert config is not None and config.backends[0].keepalive.enabled
    # DO's idle timeout on the LoadBalancer Service wins over keep-alive
    svc = lb_service({DO + "http-idle-timeout-seconds": "120"})
    config, _ = with_cm(tmp_path, {"keep-alive": "30"}, ingress(), svc)
    assert config is not None
    assert {lst.client.keepalive_timeout for lst in config.listeners} == {120}


def test_ssl_redirect_false_turns_the_redirect_off(tmp_path: Path) -> None:
    config, _ = run(tmp_path, [tls_ingress()])
    assert all(r.redirect_https is not None for r in routes_of(config, "app.example.com"))
    config, issues = with_cm(tmp_path, {"ssl-redirect": "false"}, tls_ingress())
    assert not errors(issues), issues
    assert all(r.redirect_https is None for r in routes_of(config, "app.example.com"))
    # the Ingress's own annotation wins
    config, _ = with_cm(
        tmp_path, {"ssl-redirect": "false"}, tls_ingress({NGINX + "ssl-redirect": "true"})
    )
    assert all(r.redirect_https is not None for r in plain(routes_of(config, "app.example.com")))


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("proxy-read-timeout", "1h", "proxy-read-timeout: '1h' is not an integer"),
        ("ssl-redirect", "yes", "ssl-redirect: 'yes' is not a boolean"),
        ("load-balance", "least_conn", "is not one of round_robin, ewma"),
        ("http-redirect-code", "303", "is not one of 301, 302, 307, 308"),
        ("proxy-body-size", "lots", "proxy-body-size:"),
        ("whitelist-source-range", "10.0.0.0/33", "is not an address or CIDR range"),
        ("keep-alive", "-1", "out of range"),
        ("large-client-header-buffers", "8k", "is not NUMBER SIZE"),
        ("ssl-protocols", "TLSv1.4", "is not one of"),
        ("ssl-protocols", "TLSv1 TLSv1.1", "wslb offers TLS 1.2 and 1.3"),
        ("upstream-hash-by", "$nope", "upstream-hash-by:"),
    ],
)
def test_a_bad_value_is_an_error_on_its_key_with_file_and_line(
    key: str, value: str, message: str, tmp_path: Path
) -> None:
    config, issues = with_cm(tmp_path, {key: value})
    assert config is None
    hits = [i for i in errors(issues) if message in i.message]
    assert hits, issues
    assert hits[0].key == f"data.{key}"
    assert hits[0].source == str(tmp_path / "m.yaml")
    assert hits[0].line == line_of(tmp_path, f"{key}:")


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("worker-processes", "worker-processes: not honoured by wslb"),
        ("map-hash-bucket-size", "map-hash-bucket-size: not honoured by wslb"),
        ("foo", "foo: not a key of ingress-nginx's ConfigMap"),
        ("enable-cors", "enable-cors: not a key of ingress-nginx's ConfigMap"),
    ],
)
def test_keys_wslb_does_not_honour_are_warnings_naming_them(
    key: str, message: str, tmp_path: Path
) -> None:
    config, issues = with_cm(tmp_path, {key: "4"})
    assert config is not None, issues
    hits = [i for i in issues if i.severity == "warning" and message in i.message]
    assert hits, issues
    assert hits[0].key == f"data.{key}" and hits[0].line == line_of(tmp_path, f"{key}:")


def test_a_misspelt_key_gets_a_suggestion(tmp_path: Path) -> None:
    _, issues = with_cm(tmp_path, {"proxy-raed-timeout": "5"})
    assert warned(issues, "(did you mean proxy-read-timeout?)"), issues


def test_only_the_named_configmap_is_read(tmp_path: Path) -> None:
    docs = [
        ingress(),
        configmap({"proxy-read-timeout": "3600"}),
        configmap({"proxy-read-timeout": "nope", "foo": "bar"}, name="other"),
        configmap({"proxy-read-timeout": "10"}, namespace="default"),
    ]
    config, issues = run(tmp_path, docs, configmap=REF)
    assert not errors(issues) and not warned(issues, "foo"), issues
    assert all(r.timeouts.read == 3600 for r in routes_of(config, "app.example.com"))
    # with no --configmap, none is
    config, issues = run(tmp_path, docs)
    assert not errors(issues), issues
    assert config is not None and len(config.routes) == 1
    assert config.routes[0].timeouts.read is None and not config.routes[0].headers.response_set


def test_a_missing_configmap_is_a_warning(tmp_path: Path) -> None:
    config, issues = run(tmp_path, [ingress()], configmap="ingress-nginx/absent")
    assert config is not None
    assert warned(issues, "ConfigMap ingress-nginx/absent (the controller's ConfigMap) is not in")
    config, issues = run(tmp_path, [ingress()], configmap="no-namespace")
    assert config is None and errored(issues, "is not NAMESPACE/NAME")


def test_hsts_over_https_only(tmp_path: Path) -> None:
    config, _ = with_cm(tmp_path, {})
    assert config is not None
    by_listener = {r.listeners: r for r in config.routes}
    assert set(by_listener) == {("http",), ("https",)}
    assert not by_listener[("http",)].headers.response_set
    (rule,) = by_listener[("https",)].headers.response_set
    assert (rule.name, rule.value) == (HSTS, "max-age=31536000; includeSubDomains")
    config, _ = with_cm(
        tmp_path,
        {"hsts-max-age": "60", "hsts-include-subdomains": "false", "hsts-preload": "true"},
    )
    assert config is not None
    values = [h.value for r in config.routes for h in r.headers.response_set]
    assert values == ["max-age=60; preload"]
    config, _ = with_cm(tmp_path, {"hsts": "false"})
    assert config is not None and len(config.routes) == 1
    assert not config.routes[0].headers.response_set


def test_tls_hosts_redirect_on_http_and_get_hsts_on_https(tmp_path: Path) -> None:
    config, _ = with_cm(tmp_path, {}, tls_ingress())
    assert config is not None
    by_listener = {r.listeners: r for r in config.routes}
    http, https = by_listener[("http",)], by_listener[("https",)]
    assert http.redirect_https is not None and not http.headers.response_set
    assert https.redirect_https is None and https.headers.response_set[0].name == HSTS


def test_hsts_keeps_a_snippet_s_own_header(tmp_path: Path) -> None:
    snippet = {NGINX + "configuration-snippet": f'more_set_headers "{HSTS}: max-age=5";'}
    config, _ = with_cm(tmp_path, {}, ingress(snippet))
    assert config is not None
    assert {h.value for r in config.routes for h in r.headers.response_set} == {"max-age=5"}


def test_use_proxy_protocol(tmp_path: Path) -> None:
    config, issues = with_cm(tmp_path, {"use-proxy-protocol": "true"})
    assert config is not None and all(lst.proxy_protocol for lst in config.listeners)
    svc = lb_service({DO + "enable-proxy-protocol": "true"})
    config, issues = with_cm(tmp_path, {"use-proxy-protocol": "true"}, ingress(), svc)
    assert config is not None and not any(lst.proxy_protocol for lst in config.listeners)
    assert warned(issues, "use-proxy-protocol: wslb is the LoadBalancer Service's balancer")
    assert config.backends[0].proxy_protocol is None
    # without the ConfigMap's use-proxy-protocol, DO's header goes to the pods, as before
    config, _ = run(tmp_path, [ingress(), svc])
    assert config is not None and config.backends[0].proxy_protocol == "v1"


def test_partly_honoured_values_are_warned_about(tmp_path: Path) -> None:
    _, issues = with_cm(tmp_path, {"forwarded-for-header": "X-Real-IP"})
    assert warned(issues, "wslb reads only X-Forwarded-For, not X-Real-IP")
    _, issues = with_cm(tmp_path, {"ssl-protocols": "TLSv1.1 TLSv1.2"})
    assert warned(issues, "wslb does not offer TLSv1.1")
    _, issues = with_cm(tmp_path, {"limit-req-status-code": "429", "limit-conn-status-code": "503"})
    assert warned(issues, "wslb's limits answer with one status: 429")


def test_socket_io_warning_names_the_configmap_key(tmp_path: Path) -> None:
    doc = ingress()
    doc["spec"]["rules"][0]["http"]["paths"][0]["path"] = "/socket.io"
    _, issues = with_cm(tmp_path, {"proxy-read-timeout": "30"}, doc)
    hits = [i for i in issues if "shorter than Socket.IO's" in i.message]
    assert len(hits) == 1 and hits[0].key == "data.proxy-read-timeout", hits


# ------------------------------------------------------------------ every key of the table

Check = Callable[[Config, list[ConfigIssue]], bool]


def _routes(check: Callable[[RouteSpec], bool]) -> Check:
    return lambda c, _i: all(check(r) for r in c.routes)


def _plain_routes(check: Callable[[RouteSpec], bool]) -> Check:
    return lambda c, _i: all(check(r) for r in plain(c.routes))


def _listeners(check: Callable[[Any], bool]) -> Check:
    return lambda c, _i: all(check(lst) for lst in c.listeners)


def _backend(check: Callable[[Any], bool]) -> Check:
    return lambda c, _i: check(c.backends[0])


def _no_warning(key: str) -> Check:
    return lambda _c, issues: not any(i.key == f"data.{key}" for i in issues)


LIMITS = {NGINX + "limit-rps": "5"}

# key -> (its value, the Ingress's annotations, the check of the result)
CASES: dict[str, tuple[str, dict[str, str], Check]] = {
    "proxy-connect-timeout": ("3", {}, _routes(lambda r: r.timeouts.connect == 3)),
    "proxy-read-timeout": ("300", {}, _routes(lambda r: r.timeouts.read == 300)),
    "proxy-send-timeout": ("300", {}, _routes(lambda r: r.timeouts.tunnel == 300)),
    "proxy-body-size": ("8m", {}, _routes(lambda r: r.max_body_size == 8 * 1024 * 1024)),
    "ssl-redirect": ("false", {}, _routes(lambda r: r.redirect_https is None)),
    "force-ssl-redirect": ("true", {}, _plain_routes(lambda r: r.redirect_https is not None)),
    "http-redirect-code": (
        "301",
        {NGINX + "force-ssl-redirect": "true"},
        _plain_routes(lambda r: r.redirect_https is not None and r.redirect_https.code == 301),
    ),
    "load-balance": ("ewma", {}, _backend(lambda b: b.balance == "ewma")),
    "upstream-hash-by": ("$remote_addr", {}, _routes(lambda r: r.hash_by == "$remote_addr")),
    "whitelist-source-range": ("10.0.0.0/8", {}, _routes(lambda r: r.allow == ("10.0.0.0/8",))),
    "denylist-source-range": ("10.0.0.0/8", {}, _routes(lambda r: r.deny == ("10.0.0.0/8",))),
    "block-cidrs": ("192.0.2.1", {}, _listeners(lambda lst: lst.deny == ("192.0.2.1",))),
    "limit-req-status-code": (
        "429",
        LIMITS,
        _routes(lambda r: r.limits is not None and r.limits.status == 429),
    ),
    "limit-conn-status-code": (
        "429",
        {NGINX + "limit-connections": "5"},
        _routes(lambda r: r.limits is not None and r.limits.status == 429),
    ),
    "keep-alive": ("0", {}, _listeners(lambda lst: lst.client.keepalive_timeout == 0)),
    "client-header-timeout": ("30", {}, _listeners(lambda lst: lst.client.header_timeout == 30)),
    "client-body-timeout": ("30", {}, _listeners(lambda lst: lst.client.body_timeout == 30)),
    "large-client-header-buffers": (
        "4 16k",
        {},
        _listeners(
            lambda lst: lst.client.max_uri_size == 16384 and lst.client.max_header_size == 65536
        ),
    ),
    "http2-max-concurrent-streams": (
        "64",
        {},
        _listeners(lambda lst: lst.client.max_concurrent_streams == 64),
    ),
    "use-http2": ("false", {}, _listeners(lambda lst: not lst.serves_http2)),
    "ssl-protocols": (
        "TLSv1.3",
        {},
        _listeners(lambda lst: lst.tls is None or lst.tls.min_version == "1.3"),
    ),
    "hsts": ("false", {}, lambda c, _i: not any(r.headers.response_set for r in c.routes)),
    "hsts-max-age": (
        "600",
        {},
        lambda c, _i: any(
            h.value.startswith("max-age=600;") for r in c.routes for h in r.headers.response_set
        ),
    ),
    "hsts-include-subdomains": (
        "false",
        {},
        lambda c, _i: (
            [h.value for r in c.routes for h in r.headers.response_set] == ["max-age=31536000"]
        ),
    ),
    "hsts-preload": (
        "true",
        {},
        lambda c, _i: any(
            h.value.endswith("; preload") for r in c.routes for h in r.headers.response_set
        ),
    ),
    "use-forwarded-headers": ("true", {}, _listeners(lambda lst: bool(lst.trusted_proxies))),
    "proxy-real-ip-cidr": ("10.0.0.0/8", {}, _listeners(lambda lst: not lst.trusted_proxies)),
    "compute-full-forwarded-for": ("true", {}, _no_warning("compute-full-forwarded-for")),
    "forwarded-for-header": ("X-Forwarded-For", {}, _no_warning("forwarded-for-header")),
    "use-proxy-protocol": ("true", {}, _listeners(lambda lst: lst.proxy_protocol)),
    "upstream-keepalive-connections": (
        "8",
        {},
        _backend(lambda b: b.keepalive.enabled and b.keepalive.max_idle == 8),
    ),
    "upstream-keepalive-timeout": ("5", {}, _backend(lambda b: b.keepalive.idle_timeout == 5)),
    "upstream-keepalive-requests": ("7", {}, _backend(lambda b: b.keepalive.max_requests == 7)),
    "disable-access-log": ("true", {}, lambda c, _i: not c.server.access_log),
    "worker-shutdown-timeout": ("90s", {}, lambda c, _i: c.server.shutdown_grace == 90),
}


def test_every_honoured_key_of_the_table_has_a_case() -> None:
    honoured = {k.name for k in TABLE if k.status in ("supported", "partly")}
    assert set(CASES) == honoured


@pytest.mark.parametrize("key", sorted(CASES))
def test_configmap_key(key: str, tmp_path: Path) -> None:
    value, annotations, check = CASES[key]
    doc = tls_ingress(annotations) if key == "ssl-redirect" else ingress(annotations)
    config, issues = with_cm(tmp_path, {key: value}, doc)
    assert config is not None and not errors(issues), issues
    assert check(config, issues), config


@pytest.mark.parametrize(
    "key", sorted(k.name for k in TABLE if k.status in ("accepted", "unsupported"))
)
def test_accepted_and_unsupported_keys_are_warnings(key: str, tmp_path: Path) -> None:
    _, issues = with_cm(tmp_path, {key: "true"})
    assert not [i for i in errors(issues) if i.key == f"data.{key}"], issues
    assert any(i.severity == "warning" and i.key == f"data.{key}" for i in issues), issues


def test_the_table_names_ingress_nginx_keys() -> None:
    # every row is a key of ingress-nginx's ConfigMap, and OTHER_KEYS are the rest of them
    from wslb.config.kubernetes.configmap import INGRESS_NGINX_KEYS

    assert set(BY_NAME) <= INGRESS_NGINX_KEYS
    assert not OTHER_KEYS & set(BY_NAME)
