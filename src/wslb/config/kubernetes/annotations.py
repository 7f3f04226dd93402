"""THE annotation table: every annotation wslb reads, its status, format and default.

One row per annotation. The translator reads values only through :func:`value`, ``wslb check``
reports annotations that are not in the table (or are marked unsupported), and
``docs/kubernetes.md`` is generated from :data:`TABLE` (a test checks the file is current).

Status:
  supported    honoured with the semantics of ingress-nginx / DigitalOcean
  partly       honoured with a documented difference
  accepted     parsed and checked, warned about, no effect (deprecated or removed upstream)
  unsupported  an error: wslb cannot honour it
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

NGINX = "nginx.ingress.kubernetes.io/"
DO = "service.beta.kubernetes.io/do-loadbalancer-"
WSLB = "wslb.io/"


class AnnotationError(ValueError):
    pass


def parse_bool(v: str) -> bool:
    # Go's strconv.ParseBool, which both ingress-nginx and DigitalOcean use
    if v in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if v in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise AnnotationError(f'{v!r} is not a boolean ("true" or "false")')


def parse_int(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    def parse(v: str) -> int:
        try:
            n = int(v.strip())
        except ValueError:
            raise AnnotationError(f"{v!r} is not an integer") from None
        if (lo is not None and n < lo) or (hi is not None and n > hi):
            bounds = f"{lo if lo is not None else '-inf'}..{hi if hi is not None else 'inf'}"
            raise AnnotationError(f"{n} is out of range {bounds}")
        return n

    return parse


def parse_choice(*choices: str, fold: bool = True) -> Callable[[str], str]:
    def parse(v: str) -> str:
        key = v.strip().lower() if fold else v.strip()
        for c in choices:
            if (c.lower() if fold else c) == key:
                return c
        raise AnnotationError(f"{v!r} is not one of {', '.join(choices)}")

    return parse


def parse_str(v: str) -> str:
    return v.strip()


def parse_list(v: str) -> list[str]:
    return [item.strip() for item in v.split(",") if item.strip()]


def parse_ports(v: str) -> list[int]:
    ports = []
    for item in parse_list(v):
        if not (item.isascii() and item.isdigit()) or not 0 < int(item) < 65536:
            raise AnnotationError(f"{item!r} is not a port")
        ports.append(int(item))
    return ports


def parse_size(v: str) -> int:
    from wslb.config.units import parse_size as size

    try:
        return size(v)
    except ValueError as exc:
        raise AnnotationError(str(exc)) from None


def parse_cidrs(v: str) -> list[str]:
    import ipaddress

    out = []
    for item in parse_list(v):
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise AnnotationError(f"{item!r} is not an address or CIDR range") from None
        out.append(item)
    return out


def parse_do_rules(v: str) -> list[str]:
    """DigitalOcean firewall rules: ``ip:1.2.3.4,cidr:10.0.0.0/8`` -> CIDRs."""
    out = []
    for item in parse_list(v):
        kind, sep, source = item.partition(":")
        if not sep or kind not in ("ip", "cidr"):
            raise AnnotationError(f"{item!r} is not ip:<address> or cidr:<range>")
        out += parse_cidrs(source)
    return out


@dataclass(frozen=True)
class Annotation:
    name: str  # full key
    on: str  # "Ingress" or "Service"
    status: str  # supported | partly | accepted | unsupported
    parse: Callable[[str], Any]
    default: str  # as documented (text)
    meaning: str  # wslb's semantics, one or two sentences

    @property
    def short(self) -> str:
        return self.name.rsplit("/", 1)[-1]


def _n(
    name: str, status: str, parse: Callable[[str], Any], default: str, meaning: str
) -> Annotation:
    return Annotation(NGINX + name, "Ingress", status, parse, default, meaning)


def _d(
    name: str, status: str, parse: Callable[[str], Any], default: str, meaning: str
) -> Annotation:
    return Annotation(DO + name, "Service", status, parse, default, meaning)


TABLE: tuple[Annotation, ...] = (
    # ---- ingress-nginx: session affinity
    _n(
        "affinity",
        "supported",
        parse_choice("cookie"),
        "none",
        "`cookie`: cookie session affinity on every path of the Ingress.",
    ),
    _n(
        "affinity-mode",
        "supported",
        parse_choice("balanced", "persistent"),
        "balanced",
        "`balanced`: a random session id on a keyed consistent-hash ring (scaling moves about "
        "(n-c)/n of sessions); `persistent`: the cookie names its endpoint (keyed HMAC) and is "
        "rewritten only when that endpoint is gone.",
    ),
    _n("session-cookie-name", "supported", parse_str, "INGRESSCOOKIE", "Name of the cookie."),
    _n(
        "session-cookie-expires",
        "supported",
        parse_int(0),
        "none (session cookie)",
        "Seconds: `Expires` is now plus this when the cookie is set.",
    ),
    _n(
        "session-cookie-max-age",
        "supported",
        parse_int(0),
        "none (session cookie)",
        "Seconds: `Max-Age`.",
    ),
    _n("session-cookie-path", "supported", parse_str, "the Ingress path", "`Path`."),
    _n("session-cookie-domain", "supported", parse_str, "none (host-only)", "`Domain`."),
    _n(
        "session-cookie-samesite",
        "supported",
        parse_choice("None", "Lax", "Strict"),
        "none",
        "`SameSite`; `None` implies `Secure`.",
    ),
    _n(
        "session-cookie-conditional-samesite-none",
        "supported",
        parse_bool,
        "false",
        "Omit `SameSite=None` for user agents that reject it (Chrome 4x-6x, iOS 12, "
        "Safari on macOS 10.14), as ingress-nginx does.",
    ),
    _n(
        "session-cookie-secure",
        "supported",
        parse_bool,
        "Secure on TLS connections only",
        "`true` forces `Secure` also on plain HTTP. `HttpOnly` is always set.",
    ),
    _n(
        "session-cookie-change-on-failure",
        "supported",
        parse_bool,
        "false",
        "After a failed connect, re-pin the session to the endpoint that answered.",
    ),
    _n(
        "session-cookie-hash",
        "accepted",
        parse_choice("md5", "sha1", "index"),
        "-",
        "Removed in ingress-nginx 0.24.0: accepted with a warning, no effect.",
    ),
    # ---- timeouts, sizes, protocols
    _n(
        "proxy-connect-timeout",
        "supported",
        parse_int(1),
        "5",
        "Seconds to connect to an endpoint.",
    ),
    _n(
        "proxy-read-timeout",
        "supported",
        parse_int(1),
        "60",
        "Seconds between two reads from the endpoint; also the idle timeout of WebSocket "
        "tunnels (the larger of read and send), as in nginx.",
    ),
    _n(
        "proxy-send-timeout",
        "supported",
        parse_int(1),
        "60",
        "Seconds between two writes to the endpoint; also the idle timeout of WebSocket tunnels "
        "(the larger of read and send).",
    ),
    _n("proxy-body-size", "supported", parse_size, "1m", "Request body limit (413); 0: none."),
    _n(
        "backend-protocol",
        "partly",
        parse_choice("HTTP", "HTTPS", "AUTO_HTTP", "GRPC", "GRPCS", "AJP", "FCGI"),
        "HTTP",
        "`HTTP`, `HTTPS` (TLS to the pods, not verified, as nginx), `GRPC` (HTTP/2 in clear, "
        "prior knowledge: backend protocol `h2c`) and `GRPCS` (HTTP/2 over TLS: `http2`). "
        "`AJP` and `FCGI` are errors.",
    ),
    # ---- redirects
    _n(
        "ssl-redirect",
        "supported",
        parse_bool,
        "true",
        "Redirect plain-HTTP requests to HTTPS for hosts of the Ingress `tls` section.",
    ),
    _n(
        "force-ssl-redirect",
        "supported",
        parse_bool,
        "false",
        "Redirect plain-HTTP requests to HTTPS even without a `tls` section.",
    ),
    _n(
        "http-redirect-code",
        "supported",
        parse_choice("301", "302", "307", "308"),
        "308",
        "Status of those redirects (a ConfigMap key in ingress-nginx, read here per Ingress).",
    ),
    # ---- CORS
    _n(
        "enable-cors",
        "supported",
        parse_bool,
        "false",
        "Answer CORS at the proxy: preflights from allowed origins get 204; responses to them "
        "get the CORS headers; the request's Origin is echoed.",
    ),
    _n(
        "cors-allow-origin",
        "supported",
        parse_list,
        "*",
        "Comma list of origins; `https://*.example.com` matches one label.",
    ),
    _n(
        "cors-allow-methods",
        "supported",
        parse_str,
        "GET, PUT, POST, DELETE, PATCH, OPTIONS",
        "`Access-Control-Allow-Methods`.",
    ),
    _n(
        "cors-allow-headers",
        "supported",
        parse_str,
        "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,"
        "Content-Type,Range,Authorization",
        "`Access-Control-Allow-Headers`.",
    ),
    _n("cors-expose-headers", "supported", parse_str, "none", "`Access-Control-Expose-Headers`."),
    _n(
        "cors-allow-credentials",
        "supported",
        parse_bool,
        "true",
        "`Access-Control-Allow-Credentials: true` (omitted when false).",
    ),
    _n("cors-max-age", "supported", parse_int(0), "1728000", "`Access-Control-Max-Age`."),
    # ---- balancing
    _n(
        "load-balance",
        "supported",
        parse_choice("round_robin", "ewma"),
        "round_robin",
        "Balancing of the Ingress's backends; `ewma`: the better of two random endpoints by "
        "peak-EWMA latency times load.",
    ),
    _n(
        "upstream-hash-by",
        "supported",
        parse_str,
        "none",
        "Consistent hashing on `$remote_addr`, `$request_uri`, `$host`, `$http_<name>`, "
        "`$cookie_<name>` and literal text; affinity takes precedence.",
    ),
    # ---- limits and access
    _n(
        "limit-connections",
        "supported",
        parse_int(1),
        "none",
        "Requests in progress plus open tunnels per client address; over it: 503.",
    ),
    _n(
        "limit-rps",
        "supported",
        parse_int(1),
        "none",
        "Requests per second per client address, burst 5x; over it: 503.",
    ),
    _n(
        "limit-rpm",
        "supported",
        parse_int(1),
        "none",
        "Requests per minute per client address, burst 5x; over it: 503.",
    ),
    _n(
        "limit-whitelist",
        "supported",
        parse_cidrs,
        "none",
        "Client ranges the limits do not apply to.",
    ),
    _n(
        "whitelist-source-range",
        "supported",
        parse_cidrs,
        "all",
        "Only these client ranges are let in; others get 403.",
    ),
    _n(
        "allowlist-source-range",
        "supported",
        parse_cidrs,
        "all",
        "The newer name of whitelist-source-range.",
    ),
    _n(
        "denylist-source-range",
        "supported",
        parse_cidrs,
        "none",
        "These client ranges get 403 (deny wins over allow).",
    ),
    _n(
        "configuration-snippet",
        "partly",
        parse_str,
        "none",
        'Only header directives: `more_set_headers "Name: value"`, `add_header Name value '
        "[always]`, `proxy_set_header Name value`, with literals, `$http_*`, `$host`, `$scheme` "
        "and `$remote_addr`. Any other directive is an error naming it.",
    ),
    # ---- wslb's own
    Annotation(
        WSLB + "acme",
        "Ingress",
        "supported",
        parse_bool,
        "false",
        "The hosts of the Ingress's `tls` entries (of its rules when it has none) get "
        "certificates from ACME (Let's Encrypt unless `--acme-directory` says otherwise), "
        "named by the entry's `secretName`; a `tls` entry whose Secret is missing gets one "
        "too when `--acme-email` or `--acme-directory` is given (docs/acme.md).",
    ),
    Annotation(
        WSLB + "engineio-affinity",
        "Ingress",
        "supported",
        parse_bool,
        "true",
        "Every request of an Engine.IO session (polling, upgrade) goes to the endpoint that "
        "created it, with no cookie (docs/socketio.md); `false` turns it off.",
    ),
    Annotation(
        WSLB + "websocket-rate",
        "Ingress",
        "supported",
        parse_int(1),
        "none",
        "New WebSocket and Engine.IO sessions per second on the Ingress's paths, all clients "
        "together (a sliding one-second window); the others get 503 with a Retry-After that "
        "spreads them over the coming seconds. Divided among workers.",
    ),
    Annotation(
        WSLB + "websocket-client-rate",
        "Ingress",
        "supported",
        parse_int(1),
        "none",
        "The same per client address.",
    ),
    Annotation(
        WSLB + "websocket-limit-status",
        "Ingress",
        "supported",
        parse_choice("429", "503"),
        "503",
        "The status of handshakes refused by websocket-rate or websocket-client-rate.",
    ),
    Annotation(
        WSLB + "max-tunnels",
        "Ingress",
        "supported",
        parse_int(1),
        "none",
        "Open WebSockets at once per backend Service port of the Ingress (the smallest when "
        "Ingresses disagree); more handshakes get 503 with Retry-After. Divided among workers.",
    ),
    Annotation(
        WSLB + "drain-window",
        "Ingress",
        "supported",
        parse_int(0),
        "30",
        "Seconds over which the WebSockets of a pod that leaves (or starts terminating) are "
        "closed with 1012, spread evenly, so that its clients do not all reconnect at once "
        "(the smallest when Ingresses disagree).",
    ),
    # ---- DigitalOcean load balancer (on the type: LoadBalancer Service)
    _d(
        "protocol",
        "supported",
        parse_choice("tcp", "http", "https", "http2", "http3"),
        "tcp",
        "Entry protocol of the Service's ports; wslb serves HTTP on `tcp`/`http` ports of an "
        "ingress front (it is the ingress), raw TCP for a Service without Ingress.",
    ),
    _d("http-ports", "supported", parse_ports, "none", "Ports served as HTTP."),
    _d(
        "tls-ports",
        "supported",
        parse_ports,
        "443 when a certificate is given",
        "Ports served as HTTPS (TLS terminated by wslb).",
    ),
    _d(
        "http2-ports",
        "supported",
        parse_ports,
        "none",
        "Ports served with TLS and HTTP/2 (ALPN `h2`, then `http/1.1`), WebSockets over HTTP/2 "
        "streams (RFC 8441) included. Plain `tls-ports` with a DO certificate are HTTP/1.1, as "
        "DO's `https` entry protocol; with `tls-passthrough` they offer h2, as ingress-nginx.",
    ),
    _d(
        "tls-passthrough",
        "partly",
        parse_bool,
        "false",
        "The TLS ports are terminated by wslb with the Ingress `tls` Secrets (what the ingress "
        "controller behind a passthrough balancer did).",
    ),
    _d(
        "certificate-id",
        "supported",
        parse_str,
        "none",
        "Looked up in `--certificates DIR` as `<id>.crt` + `<id>.key`; when absent, a "
        "self-signed certificate for the Ingress hosts is generated, with a warning.",
    ),
    _d(
        "certificate-name",
        "supported",
        parse_str,
        "none",
        "As certificate-id (the id wins when both are given).",
    ),
    _d(
        "redirect-http-to-https",
        "supported",
        parse_bool,
        "false",
        "HTTP ports answer every request with a redirect to HTTPS (308, keeping path and query; "
        "DigitalOcean documents 307).",
    ),
    _d(
        "enable-backend-keepalive",
        "supported",
        parse_bool,
        "false (without it wslb keeps pods alive as ingress-nginx does)",
        "Keep-alive to the pods on or off.",
    ),
    _d(
        "http-idle-timeout-seconds",
        "supported",
        parse_int(30, 600),
        "60",
        "Idle timeout of client HTTP connections (30-600).",
    ),
    _d(
        "sticky-sessions-type",
        "supported",
        parse_choice("none", "cookies"),
        "none",
        "`cookies`: persistent cookie affinity on every route without its own.",
    ),
    _d(
        "sticky-sessions-cookie-name",
        "supported",
        parse_str,
        "required with cookies",
        "Name of that cookie.",
    ),
    _d(
        "sticky-sessions-cookie-ttl",
        "supported",
        parse_int(1),
        "required with cookies",
        "Seconds: `Max-Age` of that cookie.",
    ),
    _d(
        "override-health-check",
        "supported",
        parse_str,
        "absent",
        "Present (any value, as DigitalOcean reads it): the healthcheck-* annotations apply to "
        "wslb's checks of the pods. Absent: wslb's defaults.",
    ),
    _d(
        "healthcheck-protocol",
        "supported",
        parse_choice("tcp", "http", "https"),
        "tcp (http when a path is given)",
        "Health check type.",
    ),
    _d("healthcheck-path", "supported", parse_str, "/", "Path of http(s) checks."),
    _d(
        "healthcheck-port",
        "accepted",
        parse_int(1, 65535),
        "the traffic port",
        "wslb checks each pod on its traffic port; a different port is warned about.",
    ),
    _d("healthcheck-check-interval-seconds", "supported", parse_int(3, 300), "3", "Interval."),
    _d("healthcheck-response-timeout-seconds", "supported", parse_int(3, 300), "5", "Timeout."),
    _d(
        "healthcheck-unhealthy-threshold",
        "supported",
        parse_int(2, 10),
        "3",
        "Failures that take a pod out.",
    ),
    _d(
        "healthcheck-healthy-threshold",
        "supported",
        parse_int(2, 10),
        "5",
        "Successes that bring it back.",
    ),
    _d(
        "enable-proxy-protocol",
        "supported",
        parse_bool,
        "false",
        "Send a PROXY v1 header to the backends.",
    ),
    _d(
        "allow-rules",
        "supported",
        parse_do_rules,
        "all",
        "`ip:1.2.3.4,cidr:10.0.0.0/8`: only these clients; others get 403 (tcp ports: closed).",
    ),
    _d(
        "deny-rules",
        "supported",
        parse_do_rules,
        "none",
        "These clients get 403 (tcp ports: closed).",
    ),
    _d(
        "algorithm",
        "accepted",
        parse_choice("round_robin", "least_connections"),
        "round_robin",
        "Deprecated by DigitalOcean (no effect there): warned, no effect.",
    ),
    _d(
        "size-slug",
        "accepted",
        parse_choice("lb-small", "lb-medium", "lb-large"),
        "lb-small",
        "Deprecated by DigitalOcean: warned, no effect.",
    ),
    _d("size-unit", "accepted", parse_int(1), "1", "Balancer size: warned, no effect."),
    _d("name", "accepted", parse_str, "-", "Balancer name: no effect."),
    _d("hostname", "accepted", parse_str, "-", "Status hostname: no effect."),
    _d(
        "type",
        "accepted",
        parse_choice("REGIONAL", "REGIONAL_NETWORK"),
        "-",
        "Balancer type: no effect.",
    ),
)

BY_NAME = {a.name: a for a in TABLE}
PREFIXES = (NGINX, DO, WSLB)


def value(annotations: dict[str, Any], name: str) -> Any:
    """The parsed value of annotation ``NGINX``/``DO`` + ``name``, or None when absent.

    Raises AnnotationError for a malformed value."""
    row = BY_NAME[name]
    raw = annotations.get(row.name)
    if raw is None:
        return None
    return row.parse(str(raw))
