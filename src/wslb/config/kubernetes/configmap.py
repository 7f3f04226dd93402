"""THE ConfigMap table: the keys of ingress-nginx's controller ConfigMap that wslb reads.

ingress-nginx takes its global settings from the ConfigMap its ``--configmap NAMESPACE/NAME``
names (keys and defaults: ingress-nginx's docs/user-guide/nginx-configuration/configmap.md and
internal/ingress/controller/config/config.go). wslb reads the same ConfigMap
(:attr:`ManifestOptions.configmap <wslb.config.kubernetes.translate.ManifestOptions>`): a value
here is the default under the per-Ingress annotations (an annotation wins), and wins over
wslb's own default. Keys that are also annotations are parsed by the annotation's parser.

One row per key, as :mod:`wslb.config.kubernetes.annotations`; ``docs/kubernetes.md`` renders
:data:`TABLE`. Status:
  supported    honoured with ingress-nginx's semantics
  partly       honoured with a documented difference
  accepted     parsed and checked, warned about, no effect
  unsupported  warned about (ingress-nginx starts whatever the ConfigMap holds, and so does wslb)

Every other key is a warning naming it: a key of ingress-nginx that wslb does not honour
(:data:`OTHER_KEYS`), or one that is not an ingress-nginx key at all (a typo).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wslb.config.kubernetes import annotations as ann
from wslb.config.kubernetes.annotations import (
    NGINX,
    AnnotationError,
    parse_bool,
    parse_cidrs,
    parse_int,
    parse_list,
    parse_str,
)
from wslb.config.kubernetes.objects import KObject
from wslb.errors import ConfigIssue


@dataclass(frozen=True)
class Key:
    name: str
    status: str  # supported | partly | accepted | unsupported
    parse: Callable[[str], Any]
    default: str  # ingress-nginx's default (text)
    meaning: str  # what wslb does with it


def parse_seconds(v: str) -> float:
    """An nginx time (``240s``, ``5m``, ``1h``, or seconds) -> seconds."""
    from wslb.config.units import parse_duration

    try:
        return parse_duration(v.strip())
    except ValueError as exc:
        raise AnnotationError(str(exc)) from None


def parse_header_buffers(v: str) -> tuple[int, int]:
    """``large-client-header-buffers``: ``NUMBER SIZE`` (nginx's ``4 8k``) -> (number, bytes)."""
    parts = v.split()
    if len(parts) != 2:
        raise AnnotationError(f"{v!r} is not NUMBER SIZE (such as '4 8k')")
    number = parse_int(1, 64)(parts[0])
    size = ann.parse_size(parts[1])
    if size < 1024:
        raise AnnotationError(f"{parts[1]!r}: a buffer must hold at least 1k")
    return number, size


_TLS_VERSIONS = ("SSLv2", "SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")


def parse_tls_protocols(v: str) -> tuple[str, ...]:
    """``ssl-protocols``: nginx's ``ssl_protocols`` names, space separated."""
    out = []
    for word in v.split():
        if word not in _TLS_VERSIONS:
            raise AnnotationError(f"{word!r} is not one of {', '.join(_TLS_VERSIONS)}")
        out.append(word)
    if not out:
        raise AnnotationError("no protocol given")
    return tuple(out)


def parse_template(v: str) -> str:
    """A value such as ``$remote_addr`` or ``$http_x_user`` (upstream-hash-by)."""
    from wslb.middleware.templates import Template

    text = v.strip()
    try:
        Template(text)
    except ValueError as exc:
        raise AnnotationError(str(exc)) from None
    return text


def _a(name: str, status: str, default: str, meaning: str) -> Key:
    """A key that is also an ingress-nginx annotation: parsed as the annotation is."""
    return Key(name, status, ann.BY_NAME[NGINX + name].parse, default, meaning)


def _k(name: str, status: str, parse: Callable[[str], Any], default: str, meaning: str) -> Key:
    return Key(name, status, parse, default, meaning)


_UNDER = "Under the annotation: "  # the default of the annotation of the same name

TABLE: tuple[Key, ...] = (
    # ---- upstream timeouts and body size (per Ingress defaults)
    _a(
        "proxy-connect-timeout",
        "supported",
        "5",
        _UNDER + "seconds to connect to an endpoint.",
    ),
    _a(
        "proxy-read-timeout",
        "supported",
        "60",
        _UNDER + "seconds between two reads from the endpoint; with proxy-send-timeout also the "
        "idle timeout of WebSocket tunnels (the larger of the two, as in nginx). Socket.IO "
        "needs 45 or more (warned).",
    ),
    _a(
        "proxy-send-timeout",
        "supported",
        "60",
        _UNDER + "seconds between two writes to the endpoint; also the tunnels' idle timeout "
        "(the larger of read and send).",
    ),
    _a("proxy-body-size", "supported", "1m", _UNDER + "request body limit (413); 0: none."),
    # ---- redirects
    _a(
        "ssl-redirect",
        "supported",
        "true",
        _UNDER + "plain-HTTP requests for the hosts of an Ingress's `tls` section are "
        "redirected to HTTPS; `false` turns that off.",
    ),
    _a(
        "force-ssl-redirect",
        "supported",
        "false",
        _UNDER + "redirect plain-HTTP requests to HTTPS even without a `tls` section.",
    ),
    _a(
        "http-redirect-code",
        "supported",
        "308",
        "Status of those redirects (301, 302, 307, 308); wslb also reads it per Ingress, "
        "as an annotation, which wins.",
    ),
    # ---- balancing, access
    _a(
        "load-balance",
        "supported",
        "round_robin",
        _UNDER + "`round_robin` or `ewma` for the backends of the Ingresses.",
    ),
    _k(
        "upstream-hash-by",
        "supported",
        parse_template,
        "none",
        _UNDER + "consistent hashing on `$remote_addr`, `$request_uri`, `$host`, `$http_<name>`, "
        "`$cookie_<name>` and text.",
    ),
    _a(
        "whitelist-source-range",
        "supported",
        "all",
        "Under the annotation (and allowlist-source-range): only these client ranges; others "
        "get 403.",
    ),
    _a(
        "denylist-source-range",
        "supported",
        "none",
        _UNDER + "these client ranges get 403.",
    ),
    _k(
        "block-cidrs",
        "supported",
        parse_cidrs,
        "none",
        "These client addresses or ranges get 403 on every HTTP(S) listener (`deny`).",
    ),
    _k(
        "limit-req-status-code",
        "partly",
        parse_int(400, 599),
        "503",
        "Status of requests over limit-rps / limit-rpm. wslb's limits have one status: this "
        "one, also for limit-connections.",
    ),
    _k(
        "limit-conn-status-code",
        "partly",
        parse_int(400, 599),
        "503",
        "Status of requests over limit-connections; used for all the limits when "
        "limit-req-status-code is not given, warned about when it differs from it.",
    ),
    # ---- client connections
    _k(
        "keep-alive",
        "supported",
        parse_int(0, 86400),
        "75",
        "Seconds a client keep-alive connection may stay idle (`client.keepalive_timeout`; "
        "wslb's default 60); 0 closes connections once idle. DigitalOcean's "
        "http-idle-timeout-seconds on the LoadBalancer Service, when given, wins.",
    ),
    _k(
        "client-header-timeout",
        "supported",
        parse_int(1),
        "60",
        "Seconds to receive a request head (`client.header_timeout`; wslb's default 10), else "
        "408; like nginx's client_header_timeout it also bounds TLS handshakes and PROXY "
        "headers.",
    ),
    _k(
        "client-body-timeout",
        "supported",
        parse_int(1),
        "60",
        "Seconds between two reads of a request body (`client.body_timeout`), else 408.",
    ),
    _k(
        "large-client-header-buffers",
        "partly",
        parse_header_buffers,
        "4 8k",
        "`NUMBER SIZE`: request targets up to SIZE (`client.max_uri_size`, else 414) and "
        "request heads up to NUMBER x SIZE (`client.max_header_size`, else 431); nginx also "
        "limits each header line to SIZE, wslb does not.",
    ),
    _k(
        "http2-max-concurrent-streams",
        "supported",
        parse_int(1, 10000),
        "128",
        "HTTP/2 streams a client may have open at once (`client.max_concurrent_streams`).",
    ),
    _k(
        "use-http2",
        "supported",
        parse_bool,
        "true",
        "`false`: the HTTPS listeners wslb serves in ingress-nginx's place (no LoadBalancer "
        "Service, or tls-passthrough) offer only HTTP/1.1; DigitalOcean's http2-ports keep "
        "HTTP/2.",
    ),
    _k(
        "ssl-protocols",
        "partly",
        parse_tls_protocols,
        "TLSv1.2 TLSv1.3",
        "The lowest TLS version of the HTTPS listeners (`tls.min_version`): 1.3 when TLSv1.3 is "
        "the only one, else 1.2. Versions below 1.2 are never offered by wslb (warned).",
    ),
    # ---- HSTS
    _k(
        "hsts",
        "supported",
        parse_bool,
        "true",
        "`Strict-Transport-Security` on every response of wslb's HTTPS listeners, as "
        "ingress-nginx adds it over HTTPS (it replaces a pod's own; a configuration-snippet "
        "that sets one keeps it). On whenever `--configmap` is given, unless this is `false`; "
        "without `--configmap` wslb sends none.",
    ),
    _k("hsts-max-age", "supported", parse_int(0), "31536000", "`max-age` of that header."),
    _k(
        "hsts-include-subdomains",
        "supported",
        parse_bool,
        "true",
        "Adds `includeSubDomains` to it.",
    ),
    _k("hsts-preload", "supported", parse_bool, "false", "Adds `preload` to it."),
    # ---- forwarded headers, real addresses
    _k(
        "use-forwarded-headers",
        "partly",
        parse_bool,
        "false",
        "`true`: the HTTP(S) listeners trust the peers of proxy-real-ip-cidr "
        "(`trusted_proxies`): their X-Forwarded-For is appended to and their "
        "X-Forwarded-Proto and -Port are passed on. Differences: wslb's access lists, limits "
        "and logs still see the peer's address (ingress-nginx takes the client's from "
        "X-Forwarded-For), and X-Forwarded-For keeps the whole chain (as with "
        "compute-full-forwarded-for).",
    ),
    _k(
        "proxy-real-ip-cidr",
        "partly",
        parse_cidrs,
        "0.0.0.0/0",
        "The peers use-forwarded-headers trusts (their PROXY headers too: with use-proxy-protocol, "
        "a PROXY header from another peer is refused). Without use-forwarded-headers it has "
        "no effect: any peer's PROXY header is taken.",
    ),
    _k(
        "compute-full-forwarded-for",
        "partly",
        parse_bool,
        "false",
        "wslb always appends the peer's address to a trusted peer's X-Forwarded-For, as "
        "`true` does; with `false` ingress-nginx sends the client's address alone.",
    ),
    _k(
        "forwarded-for-header",
        "partly",
        parse_str,
        "X-Forwarded-For",
        "Only X-Forwarded-For: any other header is warned about and not read.",
    ),
    _k(
        "use-proxy-protocol",
        "partly",
        parse_bool,
        "false",
        "`true`: with no LoadBalancer Service in the manifests, wslb's listeners (80, 443) "
        "expect a PROXY v1/v2 header, as ingress-nginx's did. With one, wslb is that "
        "balancer and takes clients directly: warned, no effect, and its "
        "do-loadbalancer-enable-proxy-protocol (the header the balancer sent ingress-nginx) "
        "sends none to the pods.",
    ),
    _k(
        "enable-real-ip",
        "unsupported",
        parse_bool,
        "false",
        "wslb does not take client addresses from a header: access lists, limits and logs "
        "see the peer's address, or the PROXY header's.",
    ),
    _k(
        "proxy-protocol-header-timeout",
        "unsupported",
        parse_seconds,
        "5s",
        "client-header-timeout bounds the PROXY header too.",
    ),
    # ---- upstream keep-alive
    _k(
        "upstream-keepalive-connections",
        "partly",
        parse_int(0, 100000),
        "320",
        "Idle connections kept per endpoint (`keepalive.max_idle`; nginx keeps this many per "
        "upstream and worker); 0 turns keep-alive to the pods off. DigitalOcean's "
        "enable-backend-keepalive, when given, wins.",
    ),
    _k(
        "upstream-keepalive-timeout",
        "supported",
        parse_int(1),
        "60",
        "Seconds an idle upstream connection is kept (`keepalive.idle_timeout`).",
    ),
    _k(
        "upstream-keepalive-requests",
        "supported",
        parse_int(1),
        "10000",
        "Requests per upstream connection (`keepalive.max_requests`; wslb's default 1000).",
    ),
    _k(
        "upstream-keepalive-time",
        "unsupported",
        parse_seconds,
        "1h",
        "wslb does not bound an upstream connection's lifetime, only its requests and idle time.",
    ),
    _k(
        "keep-alive-requests",
        "unsupported",
        parse_int(0),
        "1000",
        "wslb does not bound the requests of a client connection.",
    ),
    # ---- the process
    _k(
        "disable-access-log",
        "supported",
        parse_bool,
        "false",
        "`true`: no access log lines (`server.access_log`).",
    ),
    _k(
        "worker-shutdown-timeout",
        "supported",
        parse_seconds,
        "240s",
        "How long requests and tunnels in flight may go on after SIGTERM "
        "(`server.shutdown_grace`; wslb's default 30s).",
    ),
    _k(
        "worker-processes",
        "unsupported",
        parse_str,
        "auto (one per CPU)",
        "wslb's processes are its `--workers`.",
    ),
    _k(
        "bind-address",
        "unsupported",
        parse_list,
        "all addresses",
        "wslb binds `--bind-address`.",
    ),
    # ---- what wslb does its own way
    _k(
        "allow-snippet-annotations",
        "accepted",
        parse_bool,
        "false",
        "wslb reads the header directives of configuration-snippet annotations whatever this "
        "says (and nothing else of them).",
    ),
    _k(
        "ssl-session-tickets",
        "accepted",
        parse_bool,
        "false",
        "wslb always offers session tickets, with keys shared by its workers and rotated "
        "(docs/hardening.md).",
    ),
    _k(
        "enable-ocsp",
        "accepted",
        parse_bool,
        "false",
        "wslb always staples OCSP for certificates whose chain allows it (docs/hardening.md).",
    ),
    _k(
        "ssl-ciphers",
        "unsupported",
        parse_str,
        "ECDHE AES-GCM and CHACHA20 suites",
        "wslb offers only its AEAD suites (docs/hardening.md).",
    ),
    _k(
        "reuse-port",
        "accepted",
        parse_bool,
        "true",
        "wslb's workers always share their ports with SO_REUSEPORT.",
    ),
    _k(
        "use-gzip",
        "unsupported",
        parse_bool,
        "false",
        "wslb does not compress responses.",
    ),
    _k(
        "enable-brotli",
        "unsupported",
        parse_bool,
        "false",
        "wslb does not compress responses.",
    ),
    _k(
        "limit-rate",
        "unsupported",
        parse_int(0),
        "0",
        "wslb does not limit bandwidth.",
    ),
    _k(
        "limit-rate-after",
        "unsupported",
        parse_int(0),
        "0",
        "wslb does not limit bandwidth.",
    ),
    _k(
        "add-headers",
        "unsupported",
        parse_str,
        "none",
        "Headers from another ConfigMap are not read; a configuration-snippet's "
        "`more_set_headers` sets response headers.",
    ),
    _k(
        "proxy-set-headers",
        "unsupported",
        parse_str,
        "none",
        "Headers from another ConfigMap are not read; a configuration-snippet's "
        "`proxy_set_header` sets request headers.",
    ),
    _k(
        "custom-http-errors",
        "unsupported",
        parse_list,
        "none",
        "wslb passes the pods' error responses on as they are.",
    ),
    _k(
        "proxy-next-upstream-tries",
        "unsupported",
        parse_int(0),
        "3",
        "wslb retries a refused connect once, on another endpoint, and nothing else.",
    ),
    _k(
        "generate-request-id",
        "unsupported",
        parse_bool,
        "true",
        "wslb adds no X-Request-ID.",
    ),
)

BY_NAME = {k.name: k for k in TABLE}

#: ingress-nginx's ConfigMap keys (docs/user-guide/nginx-configuration/configmap.md and
#: config.go); those not in :data:`TABLE` are warned about as not honoured.
_KEYS = """
    access-log-params access-log-path add-headers allow-backend-server-header
    allow-cross-namespace-resources allow-snippet-annotations annotation-value-word-blocklist
    annotations-risk-level app-root bind-address block-cidrs block-referers block-user-agents
    brotli-level brotli-min-length brotli-types client-body-buffer-size client-body-timeout
    client-header-buffer-size client-header-timeout compute-full-forwarded-for
    custom-http-errors debug-connections default-type denylist-source-range disable-access-log
    disable-http-access-log disable-ipv6 disable-ipv6-dns disable-proxy-intercept-errors
    disable-stream-access-log enable-access-log-for-default-backend enable-aio-write
    enable-auth-access-log enable-brotli enable-modsecurity enable-multi-accept enable-ocsp
    enable-opentelemetry enable-owasp-modsecurity-crs enable-real-ip enable-serial-reloads
    enable-syslog enable-underscores-in-headers error-log-level error-log-path
    force-ssl-redirect forwarded-for-header forwarded-for-proxy-protocol-header
    forwarded-host-header generate-request-id geoip2-autoreload-in-minutes
    global-allowed-response-headers global-auth-always-set-cookie global-auth-cache-duration
    global-auth-cache-key global-auth-method global-auth-request-redirect
    global-auth-response-headers global-auth-signin global-auth-signin-redirect-param
    global-auth-snippet global-auth-url grpc-buffer-size-kb gzip-disable gzip-level
    gzip-min-length gzip-types hide-headers hsts hsts-include-subdomains hsts-max-age
    hsts-preload http-access-log-path http-redirect-code http-snippet
    http2-max-concurrent-streams http2-max-field-size http2-max-header-size http2-max-requests
    ignore-invalid-headers jaeger-baggage-header jaeger-collector-host jaeger-collector-port
    jaeger-debug-header jaeger-endpoint jaeger-propagation-format jaeger-sampler-host
    jaeger-sampler-param jaeger-sampler-port jaeger-sampler-type jaeger-service-name
    jaeger-trace-baggage-header-prefix jaeger-trace-context-header-name keep-alive
    keep-alive-requests large-client-header-buffers limit-conn-status-code
    limit-conn-zone-variable limit-rate limit-rate-after limit-req-status-code load-balance
    location-snippet log-format-escape-json log-format-escape-none log-format-stream
    log-format-upstream lua-shared-dicts main-snippet map-hash-bucket-size
    max-worker-connections max-worker-open-files modsecurity-snippet
    nginx-status-ipv4-whitelist nginx-status-ipv6-whitelist no-auth-locations
    no-tls-redirect-locations opentelemetry-config opentelemetry-operation-name
    opentelemetry-trust-incoming-span otel-max-export-batch-size otel-max-queuesize
    otel-sampler otel-sampler-parent-based otel-sampler-ratio otel-schedule-delay-millis
    otel-service-name otlp-collector-host otlp-collector-port plugins
    preserve-trailing-slash proxy-add-original-uri-header proxy-body-size proxy-buffer-size
    proxy-buffering proxy-buffers-number proxy-busy-buffers-size proxy-connect-timeout
    proxy-cookie-domain proxy-cookie-path proxy-headers-hash-bucket-size
    proxy-headers-hash-max-size proxy-http-version proxy-max-temp-file-size
    proxy-next-upstream proxy-next-upstream-timeout proxy-next-upstream-tries
    proxy-protocol-header-timeout proxy-read-timeout proxy-real-ip-cidr proxy-redirect-from
    proxy-redirect-to proxy-request-buffering proxy-send-timeout proxy-set-headers
    proxy-ssl-location-only proxy-stream-next-upstream proxy-stream-next-upstream-timeout
    proxy-stream-next-upstream-tries proxy-stream-responses proxy-stream-timeout
    relative-redirects retry-non-idempotent reuse-port server-name-hash-bucket-size
    server-name-hash-max-size server-snippet server-tokens service-upstream
    skip-access-log-urls ssl-buffer-size ssl-ciphers ssl-dh-param ssl-early-data
    ssl-ecdh-curve ssl-protocols ssl-redirect ssl-reject-handshake ssl-session-cache
    ssl-session-cache-size ssl-session-ticket-key ssl-session-tickets ssl-session-timeout
    stream-access-log-path stream-snippet strict-validate-path-type syslog-host syslog-port
    upstream-hash-by upstream-hash-by-subset upstream-hash-by-subset-size
    upstream-keepalive-connections upstream-keepalive-requests upstream-keepalive-time
    upstream-keepalive-timeout use-forwarded-headers use-geoip use-geoip2 use-gzip use-http2
    use-port-in-redirects use-proxy-protocol variables-hash-bucket-size
    variables-hash-max-size whitelist-source-range worker-cpu-affinity worker-processes
    worker-shutdown-timeout
"""
INGRESS_NGINX_KEYS = frozenset(_KEYS.split())
OTHER_KEYS = INGRESS_NGINX_KEYS - BY_NAME.keys()


@dataclass
class ControllerConfig:
    """The parsed values of the controller's ConfigMap. ``named``: ``--configmap`` was given
    (found or not: ingress-nginx starts with its defaults when it is missing)."""

    named: bool = False
    obj: KObject | None = None
    values: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str) -> Any:
        """The parsed value of ``key`` (a row of :data:`TABLE`); None when absent or bad."""
        assert key in BY_NAME, key
        return self.values.get(key)

    def given(self, key: str) -> bool:
        return self.obj is not None and key in self.values

    def issue(self, key: str, message: str, severity: str = "warning") -> ConfigIssue:
        assert self.obj is not None
        return self.obj.issue(("data", key), message, severity)


def read(configmaps: list[KObject], ref: str | None) -> tuple[ControllerConfig, list[ConfigIssue]]:
    """The ConfigMap ``ref`` (``NAMESPACE/NAME``) among ``configmaps`` (the others are not
    read), its values parsed; every key it holds is checked and every one wslb does not
    honour is a warning on ``data.KEY``."""
    if ref is None:
        return ControllerConfig(), []
    ns, sep, name = ref.partition("/")
    if not sep or not ns or not name or "/" in name:
        issue = ConfigIssue("(options)", None, "configmap", f"{ref!r} is not NAMESPACE/NAME")
        return ControllerConfig(named=True), [issue]
    found = [o for o in configmaps if o.namespace == ns and o.name == name]
    if not found:
        issue = ConfigIssue(
            "(manifests)",
            None,
            "",
            f"ConfigMap {ref} (the controller's ConfigMap) is not in the manifests: "
            "ingress-nginx's and wslb's defaults apply",
            "warning",
        )
        return ControllerConfig(named=True), [issue]
    obj = found[0]
    issues = [
        o.issue(("metadata", "name"), f"ConfigMap {ref} is given twice; the first one is read")
        for o in found[1:]
    ]
    cfg = ControllerConfig(named=True, obj=obj)
    data = obj.get("data")
    if data is None:
        return cfg, issues
    if not isinstance(data, dict):
        return cfg, [*issues, obj.issue(("data",), "data must be a mapping of strings")]
    for key, raw in data.items():
        key = str(key)
        path = ("data", key)
        row = BY_NAME.get(key)
        if row is None:
            if key in INGRESS_NGINX_KEYS:
                msg = f"{key}: not honoured by wslb (an ingress-nginx key it does not read)"
            else:
                msg = f"{key}: not a key of ingress-nginx's ConfigMap; wslb ignores it"
                near = difflib.get_close_matches(key, sorted(INGRESS_NGINX_KEYS), n=1)
                if near:
                    msg += f" (did you mean {near[0]}?)"
            issues.append(obj.issue(path, msg, "warning"))
            continue
        if row.status == "unsupported":  # not read, so not checked either
            issues.append(obj.issue(path, f"{key}: not honoured by wslb: {row.meaning}", "warning"))
            continue
        if isinstance(raw, dict | list):
            issues.append(obj.issue(path, f"{key}: must be a string"))
            continue
        text = "" if raw is None else str(raw)
        try:
            value = row.parse(text)
        except AnnotationError as exc:
            issues.append(obj.issue(path, f"{key}: {exc}"))
            continue
        if row.status == "accepted":
            issues.append(obj.issue(path, f"{key}: no effect: {row.meaning}", "warning"))
        else:
            cfg.values[key] = value
    return cfg, issues


def hsts_value(cfg: ControllerConfig) -> str | None:
    """The ``Strict-Transport-Security`` value ingress-nginx sends over HTTPS with this
    ConfigMap, or None (no ConfigMap named, or ``hsts: false``)."""
    if not cfg.named or cfg.get("hsts") is False:
        return None
    max_age = cfg.get("hsts-max-age")
    value = f"max-age={31536000 if max_age is None else max_age}"
    if cfg.get("hsts-include-subdomains") is not False:
        value += "; includeSubDomains"
    if cfg.get("hsts-preload"):
        value += "; preload"
    return value
