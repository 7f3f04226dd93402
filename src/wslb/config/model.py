"""Immutable configuration specs: what the YAML (or, later, the manifests) mean.

Pure: no asyncio, no sockets, no ssl. Every model is frozen and forbids unknown keys, so a typo in a
config file is an error that names the key, never a silently ignored setting.

Defaults, and where they come from (nginx / HAProxy / DigitalOcean, checked in their docs):

=========================  ==========  ==========================================================
setting                    default     reference
=========================  ==========  ==========================================================
timeouts.connect           5 s         issue; nginx proxy_connect_timeout is 60 s, HAProxy has none
timeouts.read              60 s        nginx proxy_read_timeout 60 s (between two reads upstream)
timeouts.send              60 s        nginx proxy_send_timeout 60 s (between two writes upstream)
timeouts.tunnel            3600 s      HAProxy ``timeout tunnel``; WebSockets after the 101
client.keepalive_timeout   60 s        DO http-idle-timeout 60 s (nginx keepalive_timeout 75 s)
client.header_timeout      10 s        HAProxy ``timeout http-request`` as its manual recommends
client.body_timeout        60 s        nginx client_body_timeout 60 s (between two reads)
client.send_timeout        60 s        nginx send_timeout 60 s (between two writes)
client.max_body_size       1 MiB       nginx client_max_body_size 1m (0 = unlimited)
client.max_uri_size        8 KiB       nginx large_client_header_buffers 4 8k (one buffer)
client.max_header_size     32 KiB      nginx large_client_header_buffers 4 8k (all buffers)
client.max_headers         100         HAProxy tune.http.maxhdr 101
health.type                tcp         DO do-loadbalancer-healthcheck-protocol default
health.interval            3 s         DO check-interval-seconds 3 (HAProxy inter 2 s)
health.timeout             5 s         DO response-timeout-seconds 5 (HAProxy: inter)
health.unhealthy_threshold 3           DO unhealthy-threshold 3, HAProxy fall 3
health.healthy_threshold   2           HAProxy rise 2 (DO: 5; a recovered pod returns sooner)
passive.max_fails          1           nginx max_fails=1
passive.fail_timeout       10 s        nginx fail_timeout=10s
keepalive.enabled          false       DO enable-backend-keepalive false (one request each)
keepalive.max_idle         32          nginx ``keepalive 32`` as its docs show
keepalive.idle_timeout     60 s        nginx upstream keepalive_timeout 60 s
keepalive.max_requests     1000        nginx keepalive_requests 1000
=========================  ==========  ==========================================================
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from wslb.config.units import parse_duration, parse_size

Duration = Annotated[float, BeforeValidator(parse_duration)]
Size = Annotated[int, BeforeValidator(parse_size)]


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def split_host_port(value: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port); raises ValueError."""
    value = value.strip()
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"{value!r} is not [ipv6]:port")
        port_s = rest[1:]
    else:
        host, sep, port_s = value.rpartition(":")
        if not sep or not host:
            raise ValueError(f"{value!r} is not host:port")
        if ":" in host:
            raise ValueError(f"{value!r}: write IPv6 addresses as [addr]:port")
    if not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise ValueError(f"{value!r}: the port must be 1-65535")
    return host, int(port_s)


# --------------------------------------------------------------------------- timeouts, limits


class TimeoutsSpec(Spec):
    """Upstream-side timeouts of a backend (a route may override any of them)."""

    connect: Duration = 5.0
    read: Duration = 60.0
    send: Duration = 60.0
    tunnel: Duration = 3600.0


class TimeoutsOverride(Spec):
    connect: Duration | None = None
    read: Duration | None = None
    send: Duration | None = None
    tunnel: Duration | None = None

    def apply(self, base: TimeoutsSpec) -> TimeoutsSpec:
        changes = {k: v for k, v in self.model_dump().items() if v is not None}
        return base.model_copy(update=changes) if changes else base


class ClientSpec(Spec):
    """Downstream-side timeouts and limits of a listener."""

    keepalive_timeout: Duration = 60.0
    header_timeout: Duration = 10.0
    body_timeout: Duration = 60.0
    send_timeout: Duration = 60.0
    max_body_size: Size = 1024 * 1024
    max_uri_size: Size = 8 * 1024
    max_header_size: Size = 32 * 1024
    max_headers: int = Field(default=100, ge=1, le=10000)
    # HTTP/2: streams a client may have open at once (nginx: 128, HAProxy: 100) and the
    # receive window of each (what wslb may have to hold for a stream whose upstream is slow).
    max_concurrent_streams: int = Field(default=128, ge=1, le=10000)
    # Open connections (nginx limit_conn; HAProxy maxconn on a frontend): past either, a new
    # connection is refused (503 on HTTP listeners). Divided among the workers.
    max_connections: int | None = Field(default=None, ge=1)
    max_connections_per_ip: int | None = Field(default=None, ge=1)
    stream_window: Size = Field(default=256 * 1024, ge=65535, le=2**31 - 1)


# --------------------------------------------------------------------------- TLS


class CertificateSpec(Spec):
    """A certificate chain and its key: files (``certificate``, ``key``) or inline PEM text
    (``certificate_pem``, ``key_pem``, as Kubernetes TLS Secrets carry them)."""

    certificate: str | None = Field(default=None, description="PEM file: chain, leaf first")
    key: str | None = Field(default=None, description="PEM file: the private key")
    certificate_pem: str | None = None
    key_pem: str | None = None
    name: str | None = Field(default=None, description="where it came from, for messages")

    @model_validator(mode="after")
    def _one_form(self) -> CertificateSpec:
        files = self.certificate is not None and self.key is not None
        inline = self.certificate_pem is not None and self.key_pem is not None
        if files == inline:
            raise ValueError("give certificate and key files, or certificate_pem and key_pem")
        return self

    @property
    def label(self) -> str:
        return self.name or self.certificate or "inline certificate"


class ListenerTLSSpec(Spec):
    """TLS termination. ``certificate``/``key`` is shorthand for one entry of ``certificates``;
    with several, SNI picks the one whose names match and the first is the default."""

    certificate: str | None = None
    key: str | None = None
    certificates: tuple[CertificateSpec, ...] = ()
    min_version: Literal["1.2", "1.3"] = "1.2"
    acme: bool = Field(
        default=False,
        description="also serve the certificates of the `acme` section (by SNI); a self-signed "
        "one serves a host until its certificate is issued",
    )
    ticket_rotation: Duration = Field(
        default=3600.0,
        ge=60,
        description="session-ticket keys change every this long (derived from server.secret, "
        "the same in every worker and replica with that secret)",
    )

    @model_validator(mode="after")
    def _one_form(self) -> ListenerTLSSpec:
        if (self.certificate is None) != (self.key is None):
            raise ValueError("give both certificate and key")
        if self.certificate is None and not self.certificates and not self.acme:
            raise ValueError("a TLS listener needs certificate and key (or certificates, or acme)")
        return self

    def all_certificates(self) -> tuple[CertificateSpec, ...]:
        first: tuple[CertificateSpec, ...] = ()
        if self.certificate is not None and self.key is not None:
            first = (CertificateSpec(certificate=self.certificate, key=self.key),)
        return first + self.certificates


class UpstreamTLSSpec(Spec):
    """TLS towards the endpoints of an ``https`` backend. Like DigitalOcean's load balancer and
    nginx (proxy_ssl_verify off), the certificate is not verified unless ``verify`` is set."""

    verify: bool = False
    ca_file: str | None = None
    server_name: str | None = None


# --------------------------------------------------------------------------- backends


class EndpointSpec(Spec):
    address: str
    weight: int = Field(default=1, ge=1, le=256)
    draining: bool = Field(
        default=False,
        description="takes no new sessions; its WebSockets are closed with 1012 over the "
        "backend's drain_window (an EndpointSlice endpoint that is serving but terminating)",
    )

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        split_host_port(v)
        return v

    @property
    def host(self) -> str:
        return split_host_port(self.address)[0]

    @property
    def port(self) -> int:
        return split_host_port(self.address)[1]


def _endpoint(value: object) -> object:
    return {"address": value} if isinstance(value, str) else value


class HealthSpec(Spec):
    enabled: bool = True
    type: Literal["tcp", "http", "https"] = "tcp"
    path: str = "/"
    host: str | None = None
    port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="check this port of each endpoint's host instead of its traffic port "
        "(HAProxy's `check port`): a readiness probe port, say",
    )
    interval: Duration = 3.0
    timeout: Duration = 5.0
    healthy_threshold: int = Field(default=2, ge=1, le=100)
    unhealthy_threshold: int = Field(default=3, ge=1, le=100)

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError("the health check path must start with '/'")
        return v

    @field_validator("interval", "timeout")
    @classmethod
    def _positive(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("must be more than 0")
        return v


class PassiveHealthSpec(Spec):
    """Passive ejection, as nginx's max_fails / fail_timeout: after ``max_fails`` failed connects
    within ``fail_timeout``, the endpoint gets no traffic for ``fail_timeout``."""

    max_fails: int = Field(default=1, ge=0, le=1000)
    fail_timeout: Duration = 10.0


class KeepaliveSpec(Spec):
    enabled: bool = False
    max_idle: int = Field(default=32, ge=1, le=100000)
    idle_timeout: Duration = 60.0
    max_requests: int = Field(default=1000, ge=1)


class DiscoverySpec(Spec):
    """Endpoints given by host name are resolved every ``interval``; each address is an
    endpoint (a headless Service's name gives one address per pod)."""

    interval: Duration = 10.0


class BackendSpec(Spec):
    name: str = Field(min_length=1)
    protocol: Literal["http", "https", "http2", "h2c", "tcp"] = Field(
        default="http",
        description="http2: HTTP/2 over TLS (ALPN h2); h2c: HTTP/2 in clear (prior knowledge)",
    )
    endpoints: tuple[Annotated[EndpointSpec, BeforeValidator(_endpoint)], ...] = ()
    balance: Literal["round_robin", "least_connections", "ewma"] = "round_robin"
    timeouts: TimeoutsSpec = TimeoutsSpec()
    keepalive: KeepaliveSpec = KeepaliveSpec()
    health: HealthSpec = HealthSpec()
    passive: PassiveHealthSpec = PassiveHealthSpec()
    tls: UpstreamTLSSpec = UpstreamTLSSpec()
    proxy_protocol: Literal["v1", "v2"] | None = None
    retry_after: int = Field(default=5, ge=0, description="Retry-After seconds on 503")
    max_tunnels: int | None = Field(
        default=None,
        ge=1,
        description="open WebSockets (and tcp tunnels) at once; more handshakes get 503",
    )
    drain_window: Duration = Field(
        default=30.0,
        ge=0,
        description="an endpoint that leaves (reload, DNS, admin API) has its WebSockets closed "
        "with Close 1012, spread evenly over this window",
    )
    discovery: DiscoverySpec | None = None

    @model_validator(mode="after")
    def _h2(self) -> BackendSpec:
        if self.protocol in ("http2", "h2c") and self.proxy_protocol is not None:
            raise ValueError(
                "proxy_protocol cannot go with an HTTP/2 backend: one connection carries the "
                "requests of many clients"
            )
        return self

    @property
    def http2(self) -> bool:
        return self.protocol in ("http2", "h2c")


# --------------------------------------------------------------------------- middlewares


def _cidrs(v: tuple[str, ...]) -> tuple[str, ...]:
    for item in v:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"{item!r} is not an address or CIDR range") from None
    return v


Cidrs = Annotated[tuple[str, ...], AfterValidator(_cidrs)]


class RedirectSpec(Spec):
    """Answer plain-HTTP requests with a redirect to HTTPS, path and query kept."""

    code: Literal[301, 302, 303, 307, 308] = 308
    port: int | None = Field(default=None, ge=1, le=65535, description="HTTPS port in Location")


class CorsSpec(Spec):
    """CORS answered by wslb (ingress-nginx ``enable-cors`` and its defaults)."""

    allow_origins: tuple[str, ...] = ("*",)
    allow_methods: str = "GET, PUT, POST, DELETE, PATCH, OPTIONS"
    allow_headers: str = (
        "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,"
        "Content-Type,Range,Authorization"
    )
    expose_headers: str = ""
    allow_credentials: bool = True
    max_age: int = Field(default=1728000, ge=0)

    @field_validator("allow_origins")
    @classmethod
    def _origins(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for origin in v:
            if origin == "*":
                continue
            scheme, sep, rest = origin.partition("://")
            if not sep or scheme not in ("http", "https") or not rest or "/" in rest:
                raise ValueError(f"{origin!r} is not an origin (scheme://host[:port]) or '*'")
            if ("*" in rest and not rest.startswith("*.")) or rest.count("*") > 1:
                raise ValueError(f"{origin!r}: only one leading '*.' label may be a wildcard")
        return v


class CookieSpec(Spec):
    """Cookie session affinity (ingress-nginx ``affinity: cookie``)."""

    name: str = "INGRESSCOOKIE"
    mode: Literal["balanced", "persistent"] = "balanced"
    expires: int | None = Field(default=None, ge=0, description="seconds; sets Expires")
    max_age: int | None = Field(default=None, ge=0, description="seconds; sets Max-Age")
    path: str = "/"
    domain: str | None = None
    samesite: Literal["None", "Lax", "Strict"] | None = None
    conditional_samesite_none: bool = False
    secure: bool | None = Field(default=None, description="None: Secure on TLS connections")
    change_on_failure: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v or any(c in v for c in ' ;,=\t"()<>@:\\/[]?{}'):
            raise ValueError(f"{v!r} is not a cookie name")
        return v


class HeaderRule(Spec):
    """One header set on requests or responses; the value may use $host, $scheme,
    $remote_addr and $http_<name> (a request header)."""

    name: str
    value: str
    always: bool = Field(default=False, description="responses: on every status, not only 2xx/3xx")


class HeadersSpec(Spec):
    request_set: tuple[HeaderRule, ...] = ()  # replaces the header towards the backend
    response_set: tuple[HeaderRule, ...] = ()  # replaces the header towards the client
    response_add: tuple[HeaderRule, ...] = ()  # adds (nginx add_header)


class LimitsSpec(Spec):
    """Per client address, ingress-nginx style: over the limit is 503."""

    connections: int | None = Field(default=None, ge=1)
    rps: int | None = Field(default=None, ge=1)
    rpm: int | None = Field(default=None, ge=1)
    burst_multiplier: int = Field(default=5, ge=1)
    status: int = Field(default=503, ge=400, le=599)
    exempt: Cidrs = ()  # client ranges the limits do not apply to


class AdmissionSpec(Spec):
    """WebSocket handshakes let through on a route, against reconnect storms: at most ``rate``
    in any second (all clients) and ``client_rate`` per client address; the others get
    ``status`` with a Retry-After that spreads them over the coming seconds."""

    rate: int | None = Field(default=None, ge=1)
    client_rate: int | None = Field(default=None, ge=1)
    status: Literal[429, 503] = 503


# --------------------------------------------------------------------------- routes, listeners


class RouteSpec(Spec):
    host: str | None = None
    path: str = "/"
    path_type: Literal["prefix", "exact"] = "prefix"
    backend: str
    listeners: tuple[str, ...] | None = None
    timeouts: TimeoutsOverride = TimeoutsOverride()
    max_body_size: Size | None = None
    redirect_https: RedirectSpec | None = None
    cors: CorsSpec | None = None
    affinity: CookieSpec | None = None
    admission: AdmissionSpec | None = None
    hash_by: str | None = Field(
        default=None, description="consistent hashing on $remote_addr, $request_uri, $http_x, ..."
    )
    headers: HeadersSpec = HeadersSpec()
    allow: Cidrs = ()
    deny: Cidrs = ()
    limits: LimitsSpec | None = None
    engineio_affinity: bool = Field(
        default=True, description="route every request of an Engine.IO session to its endpoint"
    )

    @field_validator("host")
    @classmethod
    def _host(cls, v: str | None) -> str | None:
        if v is None:
            return None
        v = v.strip().lower()
        if not v:
            raise ValueError("host cannot be empty (leave it out to match any host)")
        label = v[2:] if v.startswith("*.") else v
        if "*" in label or "/" in label or ":" in label or " " in label:
            raise ValueError(f"{v!r}: a host is a DNS name, optionally with one leading '*.' label")
        return v

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError("a path must start with '/'")
        return v


class ListenerSpec(Spec):
    name: str = Field(min_length=1)
    address: str = "0.0.0.0"
    port: int = Field(ge=0, le=65535)
    protocol: Literal["tcp", "http", "https"]
    http2: bool | None = Field(
        default=None,
        description="serve HTTP/2: ALPN h2 on https listeners (default on), h2c with prior "
        "knowledge on http listeners (default off)",
    )
    tls: ListenerTLSSpec | None = None
    backend: str | None = Field(default=None, description="tcp listeners: where bytes go")
    proxy_protocol: bool = Field(default=False, description="expect a PROXY v1/v2 header")
    trusted_proxies: tuple[str, ...] = ()
    client: ClientSpec = ClientSpec()
    redirect_https: RedirectSpec | None = Field(
        default=None, description="http listeners: redirect every request to HTTPS"
    )
    allow: Cidrs = ()  # client addresses let in (empty: all); others get 403 / are closed
    deny: Cidrs = ()

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        try:
            ipaddress.ip_address(v)
        except ValueError:
            if v != "localhost":
                raise ValueError(f"{v!r} is not an IP address") from None
        return v

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for item in v:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an address or CIDR range") from None
        return v

    @model_validator(mode="after")
    def _shape(self) -> ListenerSpec:
        if self.redirect_https is not None and self.protocol != "http":
            raise ValueError("redirect_https is for http listeners")
        if self.protocol == "https" and self.tls is None:
            raise ValueError("an https listener needs tls (certificate and key)")
        if self.protocol != "https" and self.tls is not None:
            raise ValueError(f"tls is only for https listeners, not {self.protocol}")
        if self.protocol == "tcp" and self.backend is None:
            raise ValueError("a tcp listener needs a backend")
        if self.protocol == "tcp" and self.http2:
            raise ValueError("http2 is for http and https listeners")
        return self

    @property
    def serves_http2(self) -> bool:
        if self.protocol == "tcp":
            return False
        return self.http2 if self.http2 is not None else self.protocol == "https"


class ServerSpec(Spec):
    workers: int = Field(default=1, ge=1, le=256)
    max_connections: int | None = Field(
        default=None,
        ge=1,
        description="client connections of all listeners, divided among the workers; each "
        "worker also holds at most (its file-descriptor limit - 64) / 2 (HAProxy's maxconn)",
    )
    shutdown_delay: Duration = Field(
        default=0.0,
        description="on SIGTERM, keep accepting this long before draining, while readiness "
        "already answers 503 (a cloud load balancer takes seconds to stop sending)",
    )
    shutdown_grace: Duration = 30.0
    access_log: bool = Field(
        default=True,
        description="a line per request and per tunnel on the wslb.access logger (nginx: on)",
    )
    secret: str | None = Field(
        default=None,
        description="key for affinity cookies; give every replica the same one "
        "(default: one random key per start, shared by its workers)",
    )


# --------------------------------------------------------------------------- ACME


class AcmeCertificateSpec(Spec):
    """One certificate to order: its hosts, under a name that stays the same across renewals
    (DigitalOcean's certificate-name)."""

    name: str | None = Field(default=None, description="default: the first host")
    hosts: tuple[str, ...] = Field(min_length=1)

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for h in v:
            if not _ACME_HOST.fullmatch(h):
                raise ValueError(f"{h!r} is not a DNS name")
        return tuple(h.lower() for h in v)

    @property
    def key(self) -> str:
        return self.name or self.hosts[0]


_ACME_HOST = re.compile(r"(?=.{1,253}$)(\*\.)?([A-Za-z0-9-]{1,63}\.)*[A-Za-z0-9-]{1,63}")


class AcmeSpec(Spec):
    """Automatic certificates from an ACME CA (Let's Encrypt by default)."""

    directory: str = "https://acme-v02.api.letsencrypt.org/directory"
    email: str | None = None
    storage: str = Field(
        default="acme",
        description="directory for the account, "
        "certificates and challenges (shared by workers and replicas)",
    )
    challenge: Literal["http-01", "tls-alpn-01"] = "http-01"
    ca_file: str | None = Field(
        default=None, description="CA bundle to trust the directory's TLS with (a test CA)"
    )
    hosts: tuple[str, ...] = Field(default=(), description="shorthand: one certificate per host")
    certificates: tuple[AcmeCertificateSpec, ...] = ()
    renew_fraction: float = Field(default=1 / 3, gt=0, lt=1)
    check_interval: Duration = Field(default=3600.0, gt=0)
    retry_first: Duration = Field(default=60.0, gt=0)
    retry_max: Duration = Field(default=3600.0, gt=0)
    order_timeout: Duration = Field(default=120.0, gt=0)

    def all_certificates(self) -> tuple[AcmeCertificateSpec, ...]:
        return tuple(AcmeCertificateSpec(hosts=(h,)) for h in self.hosts) + self.certificates

    @model_validator(mode="after")
    def _unique(self) -> AcmeSpec:
        names = [c.key for c in self.all_certificates()]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"certificate names used twice: {', '.join(twice)}")
        return self


class Config(Spec):
    server: ServerSpec = ServerSpec()
    listeners: tuple[ListenerSpec, ...] = ()
    backends: tuple[BackendSpec, ...] = ()
    routes: tuple[RouteSpec, ...] = ()
    acme: AcmeSpec | None = None

    def backend(self, name: str) -> BackendSpec:
        for b in self.backends:
            if b.name == name:
                return b
        raise KeyError(name)
