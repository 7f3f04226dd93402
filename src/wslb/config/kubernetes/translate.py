"""Kubernetes manifests -> wslb :class:`~wslb.config.model.Config`.

wslb takes the place of both a DigitalOcean load balancer and ingress-nginx:

* a ``type: LoadBalancer`` Service with ``do-loadbalancer-*`` annotations gives wslb's
  listeners (one per Service port, HTTP or TLS as the annotations say); with no such Service,
  wslb listens as ingress-nginx does, HTTP on 80 and HTTPS on 443;
* Ingress rules give the routes of every HTTP(S) listener, their annotations the middlewares;
* the Services they name are backends whose endpoints are pods: EndpointSlices / Endpoints in
  the files, else ``--endpoints``, else, for a headless Service only, DNS
  (``SVC.NS.svc.cluster.local``, re-resolved); never a ClusterIP (an error naming the fixes);
  from the API (``from_api``, controller mode) the slices alone;
* TLS Secrets give certificates, picked by SNI.

Every problem is reported with the file and line of the key it is about (objects from the API:
with the object and the key).
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from wslb.config.certs import CertificateProblem, load_pair, self_signed_for
from wslb.config.kubernetes import annotations as ann
from wslb.config.kubernetes import configmap as cmap
from wslb.config.kubernetes.annotations import DO, NGINX, WSLB, AnnotationError
from wslb.config.kubernetes.objects import KObject
from wslb.config.kubernetes.snippet import SnippetError, parse_snippet
from wslb.config.model import (
    AcmeCertificateSpec,
    AcmeSpec,
    AdmissionSpec,
    BackendSpec,
    CertificateSpec,
    Config,
    CookieSpec,
    CorsSpec,
    DiscoverySpec,
    HeaderRule,
    HeadersSpec,
    HealthSpec,
    KeepaliveSpec,
    LimitsSpec,
    ListenerSpec,
    ListenerTLSSpec,
    RedirectSpec,
    RouteSpec,
    ServerSpec,
    TimeoutsOverride,
)
from wslb.errors import ConfigError, ConfigIssue

M = TypeVar("M", bound=BaseModel)

SOCKET_IO_MIN = 45  # Socket.IO pingInterval 25 s + pingTimeout 20 s

_DRAIN_WINDOW: float = BackendSpec.model_fields["drain_window"].default


@dataclass
class ManifestOptions:
    endpoints: dict[str, list[str]] = field(default_factory=dict)  # "ns/svc" -> ["h:p", ...]
    port_map: dict[int, int] = field(default_factory=dict)
    certificates_dir: str | None = None
    ingress_class: str | None = None
    dns_suffix: str = "svc.cluster.local"
    bind_address: str = "0.0.0.0"
    secret: str | None = None
    #: AcmeSpec fields (directory, email, storage, ...) from --acme-*: hosts whose TLS Secret
    #: is missing get certificates from ACME; None: only Ingresses annotated wslb.io/acme do
    acme: dict[str, Any] | None = None
    #: "NAMESPACE/NAME" of ingress-nginx's controller ConfigMap (its --configmap): its keys
    #: are the defaults under the Ingress annotations (configmap.py); other ConfigMaps are not read
    configmap: str | None = None
    #: "NAMESPACE/NAME" of the Service whose ports and do-loadbalancer-* annotations are the
    #: listeners (the controller's --publish-service); None: the first LoadBalancer Service
    #: of the files (from the API: none, and HTTP on 80 and HTTPS on 443)
    lb_service: str | None = None
    #: the LoadBalancer Service's cloud balancer is in front of wslb (the controller in a
    #: cluster, --balancer-in-front): its do-loadbalancer-* annotations configure that balancer
    balancer_in_front: bool = False
    #: the objects come from the API (controller mode): endpoints only from EndpointSlices
    from_api: bool = False


# ingress-nginx backend-protocol -> wslb backend protocol (gRPC is HTTP/2: h2c, or with TLS)
_BACKEND_PROTOCOLS = {
    "HTTP": "http",
    "AUTO_HTTP": "http",
    "HTTPS": "https",
    "GRPC": "h2c",
    "GRPCS": "http2",
}


@dataclass
class _Backend:
    ref: str  # ns/svc
    port: int | str  # as the Ingress names it
    source: KObject
    path: tuple[str | int, ...]
    protocol: str = "http"
    balance: str = "round_robin"
    max_tunnels: int | None = None
    drain_window: int | None = None


class Translator:
    def __init__(self, objects: list[KObject], options: ManifestOptions) -> None:
        self.objects = objects
        self.opt = options
        self.issues: list[ConfigIssue] = []
        self.by_kind: dict[str, list[KObject]] = {}
        for o in objects:
            self.by_kind.setdefault(o.kind, []).append(o)
        self.services = {o.ref: o for o in self.by_kind.get("Service", [])}
        self.secrets = {o.ref: o for o in self.by_kind.get("Secret", [])}
        self.backends: dict[str, _Backend] = {}
        self.routes: list[RouteSpec] = []
        self.sni: list[CertificateSpec] = []
        self.acme_certs: list[AcmeCertificateSpec] = []
        self.do_acme = False  # DO's certificate-name is kept by ACME
        self.tls_hosts: set[str] = set()
        self.ingress_hosts: list[str] = []
        self._parsed: dict[tuple[int, str], Any] = {}
        self.route_sources: dict[int, KObject] = {}  # id(route) -> its Ingress
        self.cm = cmap.ControllerConfig()  # the controller's ConfigMap, read by translate()

    # ------------------------------------------------------------------ helpers
    def error(self, obj: KObject, path: tuple[str | int, ...], msg: str) -> None:
        self.issues.append(obj.issue(path, msg))

    def _model(
        self, obj: KObject, cls: type[M], fields: dict[str, tuple[str, Any]], prefix: str = NGINX
    ) -> M | None:
        """``cls`` made of annotation values, ``{field: (annotation, value)}`` (None: the
        default); a value the model refuses is an error on its annotation."""
        try:
            return cls(**{k: v for k, (_, v) in fields.items() if v is not None})
        except ValidationError as exc:
            for err in exc.errors():
                key = str(err["loc"][0]) if err["loc"] else ""
                name = fields[key][0] if key in fields else next(iter(fields.values()))[0]
                self.error(obj, ("metadata", "annotations", prefix + name), _msg(err))
            return None

    def warn(self, obj: KObject, path: tuple[str | int, ...], msg: str) -> None:
        self.issues.append(obj.issue(path, msg, "warning"))

    def annotation(self, obj: KObject, name: str) -> Any:
        """Parsed value of an annotation (None when absent or malformed, reported once)."""
        key = (id(obj), name)
        if key in self._parsed:
            return self._parsed[key]
        try:
            result = ann.value(obj.annotations, name)
        except AnnotationError as exc:
            self.error(obj, ("metadata", "annotations", name), f"{name.rsplit('/', 1)[-1]}: {exc}")
            result = None
        self._parsed[key] = result
        return result

    def ingress_value(self, ing: KObject, name: str) -> Any:
        """The ingress-nginx annotation ``name`` of ``ing``, else the controller ConfigMap's key
        of that name (its global default), else None."""
        value = self.annotation(ing, NGINX + name)
        return value if value is not None else self.cm.get(name)

    def check_annotations(self, obj: KObject, prefixes: tuple[str, ...]) -> None:
        for key in obj.annotations:
            if not key.startswith(prefixes):
                continue
            row = ann.BY_NAME.get(key)
            path = ("metadata", "annotations", key)
            if row is None:
                self.error(
                    obj, path, f"wslb cannot honour this annotation ({key}); see docs/kubernetes.md"
                )
            elif row.status == "unsupported":
                self.error(obj, path, f"{row.short}: not supported: {row.meaning}")
            else:
                if row.status == "accepted":
                    self.warn(obj, path, f"{row.short}: {row.meaning}")
                self.annotation(obj, key)  # every value is checked, used or not

    # ------------------------------------------------------------------ entry point
    def translate(self) -> Config | None:
        self.cm, cm_issues = cmap.read(self.by_kind.get("ConfigMap", []), self.opt.configmap)
        self.issues += cm_issues
        self._cm_checks()
        ingresses = [i for i in self.by_kind.get("Ingress", []) if self._class_ok(i)]
        for ing in ingresses:
            self._ingress(ing)
        listeners = self._listeners(bool(ingresses))
        backends = [self._backend_spec(name, b) for name, b in sorted(self.backends.items())]
        self._warn_socketio()
        self._hsts(listeners)
        if any(i.severity == "error" for i in self.issues):
            return None
        acme = None
        if self.acme_certs:
            acme = AcmeSpec(**(self.opt.acme or {}), certificates=tuple(self.acme_certs))
        try:
            return Config(
                server=ServerSpec(secret=self.opt.secret, **self._cm_server()),
                listeners=tuple(listeners),
                backends=tuple(b for b in backends if b is not None),
                routes=tuple(self.routes),
                acme=acme,
            )
        except ValidationError as exc:
            for err in exc.errors():
                self.issues.append(
                    ConfigIssue("(translated)", None, ".".join(map(str, err["loc"])), err["msg"])
                )
            return None

    # ------------------------------------------------------------------ Ingress
    def _class_ok(self, ing: KObject) -> bool:
        cls = ing.get("spec", "ingressClassName") or ing.annotations.get(
            "kubernetes.io/ingress.class"
        )
        want = self.opt.ingress_class
        if want is None:
            return True
        if cls == want:
            return True
        self.issues.append(
            ing.issue(
                ("metadata",), f"skipped: ingress class {cls or '(none)'} is not {want}", "info"
            )
        )
        return False

    def _ingress(self, ing: KObject) -> None:
        v = ing.api_version
        if v in ("extensions/v1beta1", "networking.k8s.io/v1beta1"):
            self.warn(
                ing,
                ("apiVersion",),
                f"{v} Ingress is deprecated (removed in Kubernetes 1.22); use networking.k8s.io/v1",
            )
        elif v != "networking.k8s.io/v1":
            self.error(ing, ("apiVersion",), f"unknown Ingress apiVersion {v!r}")
            return
        self.check_annotations(ing, (NGINX, WSLB))
        spec = ing.get("spec")
        if not isinstance(spec, dict):
            self.error(ing, ("spec",), "an Ingress needs a spec")
            return
        tls_hosts = self._ingress_tls(ing)
        base = self._route_options(ing)
        default = spec.get("defaultBackend") or spec.get("backend")
        if isinstance(default, dict):
            key = "defaultBackend" if "defaultBackend" in spec else "backend"
            name = self._backend_ref(ing, default, ("spec", key))
            if name:
                self._add_route(ing, ("spec", key), base, None, "/", "prefix", name, tls_hosts)
        for i, rule in enumerate(spec.get("rules") or []):
            if not isinstance(rule, dict):
                continue
            host = rule.get("host")
            if host is not None:
                self.ingress_hosts.append(str(host))
            http = rule.get("http") or {}
            for j, p in enumerate(http.get("paths") or []):
                path = ("spec", "rules", i, "http", "paths", j)
                ptype = p.get("pathType", "ImplementationSpecific")
                if ptype not in ("Exact", "Prefix", "ImplementationSpecific"):
                    self.error(ing, (*path, "pathType"), f"unknown pathType {ptype!r}")
                    continue
                name = self._backend_ref(ing, p.get("backend") or {}, (*path, "backend"))
                if not name:
                    continue
                kind = "exact" if ptype == "Exact" else "prefix"
                self._add_route(ing, path, base, host, p.get("path") or "/", kind, name, tls_hosts)

    def _acme(self, obj: KObject, path: tuple[str | int, ...], name: str, hosts: list[str]) -> bool:
        """Hosts that get a certificate from ACME, under a name kept across renewals; whether
        one is kept for them."""
        if not hosts:
            self.warn(obj, path, "no hosts to ask ACME a certificate for")
            return False
        for i, known in enumerate(self.acme_certs):
            if known.key == name:  # the same Secret named twice: one certificate, every host
                hosts = sorted(set(known.hosts) | set(hosts))
                del self.acme_certs[i]
                break
        try:
            self.acme_certs.append(AcmeCertificateSpec(name=name, hosts=tuple(sorted(hosts))))
        except ValidationError as exc:
            self.error(obj, path, _msg(exc.errors()[0]))
            return False
        return True

    def _ingress_tls(self, ing: KObject) -> set[str]:
        hosts: set[str] = set()
        entries = ing.get("spec", "tls") or []
        by_annotation = self.annotation(ing, WSLB + "acme") is True
        if by_annotation and not entries:
            rule_hosts = sorted(
                {str(r["host"]).lower() for r in ing.get("spec", "rules") or [] if r.get("host")}
            )
            self._acme(
                ing,
                ("metadata", "annotations", WSLB + "acme"),
                f"{ing.namespace}.{ing.name}",
                rule_hosts,
            )
            hosts.update(rule_hosts)
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict):
                continue
            entry_hosts = [str(h).lower() for h in entry.get("hosts") or []]
            hosts.update(entry_hosts)
            secret = entry.get("secretName")
            path = ("spec", "tls", i)
            missing = not secret or f"{ing.namespace}/{secret}" not in self.secrets
            if by_annotation or (missing and self.opt.acme is not None):
                # named as the Secret would be: unique across namespaces
                self._acme(
                    ing, path, f"{ing.namespace}.{secret or ing.name + '-' + str(i)}", entry_hosts
                )
                continue
            if not secret:
                self.warn(
                    ing, path, "tls entry without secretName: the default certificate serves it"
                )
                continue
            obj = self.secrets.get(f"{ing.namespace}/{secret}")
            if obj is None:
                self.warn(
                    ing,
                    (*path, "secretName"),
                    f"Secret {ing.namespace}/{secret} is not in the files: a self-signed "
                    f"certificate serves {', '.join(entry_hosts) or 'these hosts'} until it is",
                )
                pem, key = self_signed_for(tuple(entry_hosts or ["localhost"]))
                self.sni.append(
                    CertificateSpec(
                        certificate_pem=pem, key_pem=key, name=f"self-signed for {secret}"
                    )
                )
                continue
            cert = self._secret_cert(obj)
            if cert is not None:
                self.sni.append(cert)
        self.tls_hosts |= hosts
        return hosts

    def _secret_cert(self, obj: KObject) -> CertificateSpec | None:
        if obj.body.get("type") not in ("kubernetes.io/tls", None):
            self.error(
                obj, ("type",), f"Secret {obj.ref} is {obj.body.get('type')}, not kubernetes.io/tls"
            )
            return None
        data = obj.get("data") or {}
        string_data = obj.get("stringData") or {}
        pems: dict[str, str] = {}
        for key in ("tls.crt", "tls.key"):
            if key in string_data:
                pems[key] = str(string_data[key])
            elif key in data:
                try:
                    pems[key] = base64.b64decode(str(data[key]), validate=True).decode()
                except (binascii.Error, UnicodeDecodeError):
                    self.error(obj, ("data", key), "not base64 of a PEM text")
                    return None
            else:
                self.error(obj, ("data",), f"Secret {obj.ref} has no {key}")
                return None
        spec = CertificateSpec(
            certificate_pem=pems["tls.crt"], key_pem=pems["tls.key"], name=f"Secret {obj.ref}"
        )
        try:
            load_pair(spec)
        except CertificateProblem as exc:
            self.error(obj, ("data",), str(exc))
            return None
        return spec

    def _backend_ref(
        self, ing: KObject, backend: dict[str, Any], path: tuple[str | int, ...]
    ) -> str | None:
        svc = backend.get("service")
        if isinstance(svc, dict):  # networking.k8s.io/v1
            name = svc.get("name")
            port_obj = svc.get("port") or {}
            port = port_obj.get("number") if "number" in port_obj else port_obj.get("name")
        else:
            name = backend.get("serviceName")
            port = backend.get("servicePort")
        if backend.get("resource"):
            self.error(ing, (*path, "resource"), "resource backends are not supported")
            return None
        if not name or port is None:
            self.error(ing, path, "a backend needs a service name and port")
            return None
        if isinstance(port, str) and port.isascii() and port.isdigit():
            port = int(port)
        ref = f"{ing.namespace}/{name}"
        key = f"{ref}:{port}"
        backend_state = self.backends.get(key)
        protocol = self.annotation(ing, NGINX + "backend-protocol") or "HTTP"
        proto = _BACKEND_PROTOCOLS.get(protocol)
        if proto is None:
            self.error(
                ing,
                ("metadata", "annotations", NGINX + "backend-protocol"),
                f"backend-protocol {protocol}: wslb speaks HTTP/1.1 and HTTP/2 to backends "
                "(HTTP, HTTPS, GRPC, GRPCS), not AJP or FastCGI",
            )
            proto = "http"
        balance = self.ingress_value(ing, "load-balance") or "round_robin"
        cap = self.annotation(ing, WSLB + "max-tunnels")
        window = self.annotation(ing, WSLB + "drain-window")
        if backend_state is None:
            self.backends[key] = _Backend(ref, port, ing, path, proto, balance, cap, window)
        elif window is not None:  # the smallest window holds
            windows = [w for w in (backend_state.drain_window, window) if w is not None]
            backend_state.drain_window = min(windows)
        elif cap is not None and backend_state.max_tunnels != cap:
            # several Ingresses cap the same Service: the smallest cap holds
            caps = [c for c in (backend_state.max_tunnels, cap) if c is not None]
            backend_state.max_tunnels = min(caps)
        if backend_state is not None and (backend_state.protocol, backend_state.balance) != (
            proto,
            balance,
        ):
            self.warn(
                ing,
                path,
                f"{key} is used by several Ingresses with different backend-protocol or "
                f"load-balance; the first ({backend_state.source.ref}) wins",
            )
        return key

    def _route_options(self, ing: KObject) -> dict[str, Any]:
        """Route fields from the Ingress annotations (shared by all its paths)."""

        def a(name: str) -> Any:
            return self.annotation(ing, NGINX + name)

        def a_w(name: str) -> Any:
            return self.annotation(ing, WSLB + name)

        def g(name: str) -> Any:  # the annotation, else the ConfigMap's global default
            return self.ingress_value(ing, name)

        opts: dict[str, Any] = {}
        # timeouts: read/send also govern tunnels, as in nginx
        connect, read, send = (
            g("proxy-connect-timeout"),
            g("proxy-read-timeout"),
            g("proxy-send-timeout"),
        )
        if connect or read or send:
            tunnel = max(x for x in (read, send) if x) if (read or send) else None
            opts["timeouts"] = TimeoutsOverride(
                connect=connect, read=read, send=send, tunnel=tunnel
            )
        size = g("proxy-body-size")
        if size is not None:
            opts["max_body_size"] = size
        if a("affinity") == "cookie":
            secure = a("session-cookie-secure")
            cookie = self._model(
                ing,
                CookieSpec,
                {
                    "name": ("session-cookie-name", a("session-cookie-name") or "INGRESSCOOKIE"),
                    "mode": ("affinity-mode", a("affinity-mode") or "balanced"),
                    "expires": ("session-cookie-expires", a("session-cookie-expires")),
                    "max_age": ("session-cookie-max-age", a("session-cookie-max-age")),
                    "domain": ("session-cookie-domain", a("session-cookie-domain")),
                    "samesite": ("session-cookie-samesite", a("session-cookie-samesite")),
                    "conditional_samesite_none": (
                        "session-cookie-conditional-samesite-none",
                        bool(a("session-cookie-conditional-samesite-none")),
                    ),
                    "secure": ("session-cookie-secure", True if secure else None),
                    "change_on_failure": (
                        "session-cookie-change-on-failure",
                        bool(a("session-cookie-change-on-failure")),
                    ),
                },
            )
            if cookie is not None:
                opts["affinity"] = cookie
                # Without session-cookie-path the cookie's path is each route's own.
                opts["_affinity_path"] = a("session-cookie-path")
        hash_by = g("upstream-hash-by")
        if hash_by:
            from wslb.middleware.templates import Template

            try:
                Template(hash_by)
                opts["hash_by"] = hash_by
            except ValueError as exc:
                self.error(ing, ("metadata", "annotations", NGINX + "upstream-hash-by"), str(exc))
        if a("enable-cors"):
            cors: dict[str, Any] = {}
            origins = a("cors-allow-origin")
            if origins:
                cors["allow_origins"] = (
                    "cors-allow-origin",
                    ("*",) if "*" in origins else tuple(origins),
                )
            for name, key in (
                ("cors-allow-methods", "allow_methods"),
                ("cors-allow-headers", "allow_headers"),
                ("cors-expose-headers", "expose_headers"),
            ):
                cors[key] = (name, a(name) or None)
            cors["allow_credentials"] = ("cors-allow-credentials", a("cors-allow-credentials"))
            cors["max_age"] = ("cors-max-age", a("cors-max-age"))
            spec = self._model(ing, CorsSpec, cors)
            if spec is not None:
                opts["cors"] = spec
            if (
                opts.get("cors")
                and opts["cors"].allow_credentials
                and "*" in opts["cors"].allow_origins
            ):
                self.warn(
                    ing,
                    ("metadata", "annotations", NGINX + "enable-cors"),
                    "CORS allows any origin (*) with credentials: browsers refuse that pair, and "
                    "echoing origins instead would let any site make credentialed requests; "
                    "list the origins in cors-allow-origin",
                )
        allow = (
            a("whitelist-source-range")
            or a("allowlist-source-range")
            or self.cm.get("whitelist-source-range")
        )
        deny = g("denylist-source-range")
        if allow:
            opts["allow"] = tuple(allow)
        if deny:
            opts["deny"] = tuple(deny)
        conn, rps, rpm = a("limit-connections"), a("limit-rps"), a("limit-rpm")
        if conn or rps or rpm:
            opts["limits"] = LimitsSpec(
                connections=conn,
                rps=rps,
                rpm=rpm,
                exempt=tuple(a("limit-whitelist") or ()),
                status=self._limit_status(),
            )
        if self.annotation(ing, WSLB + "engineio-affinity") is False:
            opts["engineio_affinity"] = False
        ws_rate, ws_client_rate = a_w("websocket-rate"), a_w("websocket-client-rate")
        if ws_rate or ws_client_rate:
            opts["admission"] = AdmissionSpec(
                rate=ws_rate,
                client_rate=ws_client_rate,
                status=int(a_w("websocket-limit-status") or 503),  # type: ignore[arg-type]
            )
        redirect_code = int(g("http-redirect-code") or 308)
        opts["_ssl_redirect"] = g("ssl-redirect") is not False
        opts["_force_ssl_redirect"] = bool(g("force-ssl-redirect"))
        opts["_redirect"] = RedirectSpec(code=redirect_code)  # type: ignore[arg-type]
        snippet = ing.annotations.get(NGINX + "configuration-snippet")
        if snippet:
            try:
                headers = parse_snippet(snippet)
                opts["headers"] = headers
            except SnippetError as exc:
                self.error(
                    ing, ("metadata", "annotations", NGINX + "configuration-snippet"), str(exc)
                )
            else:
                self._warn_echoed_origin(ing, headers, opts.get("cors"))
        return opts

    def _warn_echoed_origin(
        self, ing: KObject, headers: HeadersSpec, cors: CorsSpec | None
    ) -> None:
        echoes = any(
            r.name.lower() == "access-control-allow-origin" and "$http_origin" in r.value.lower()
            for r in (*headers.response_set, *headers.response_add)
        )
        if echoes and (cors is None or cors.allow_credentials):
            self.warn(
                ing,
                ("metadata", "annotations", NGINX + "configuration-snippet"),
                "Access-Control-Allow-Origin echoes $http_origin with credentials allowed: any "
                "web site a user visits can make credentialed requests to this API with the "
                "user's cookies and read the answers (cross-site request forgery with read "
                "access); list trusted origins in cors-allow-origin instead",
            )

    def _add_route(self, ing: KObject, where: tuple[str | int, ...], *args: Any) -> None:
        """A route of ``ing`` made by ``_route(ing, *args)``; where the model refuses a host or
        a path, an error at ``where`` (the rule's path entry) instead."""
        try:
            route = self._route(ing, *args)
        except ValidationError as exc:
            for err in exc.errors():
                key = str(err["loc"][0]) if err["loc"] else ""
                at = (*where[:-3], "host") if key == "host" and len(where) > 3 else where
                self.error(ing, (*at, "path") if key == "path" else at, _msg(err))
            return
        self.routes.append(route)
        self.route_sources[id(route)] = ing

    def _route(
        self,
        ing: KObject,
        base: dict[str, Any],
        host: str | None,
        path: str,
        path_type: str,
        backend: str,
        tls_hosts: set[str],
    ) -> RouteSpec:
        opts = {k: v for k, v in base.items() if not k.startswith("_")}
        if "affinity" in opts:
            cookie_path = base["_affinity_path"] or (path if path_type == "prefix" else "/")
            opts["affinity"] = opts["affinity"].model_copy(update={"path": cookie_path})
        host_l = host.lower() if host else None
        if base["_force_ssl_redirect"] or (base["_ssl_redirect"] and host_l in tls_hosts):
            opts["redirect_https"] = base["_redirect"]
        return RouteSpec(host=host_l, path=path, path_type=path_type, backend=backend, **opts)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ backends
    def _backend_spec(self, name: str, b: _Backend) -> BackendSpec | None:
        endpoints, discovery = self._endpoints(b)
        if endpoints is None:
            return None
        # a balancer in front: keep-alive, health checks and PROXY headers towards its nodes
        # are its own (the PROXY header it sends ends at wslb's listeners)
        lb = None if self.opt.balancer_in_front else self._lb_service()
        # ingress-nginx keeps upstream connections alive by default (320 idle ones); its
        # ConfigMap's upstream-keepalive-connections 0 turns that off
        conns = self.cm.get("upstream-keepalive-connections")
        keepalive = conns != 0
        health = HealthSpec()
        proxy_protocol = None
        # the PROXY header DigitalOcean's balancer sent went to ingress-nginx (its ConfigMap's
        # use-proxy-protocol), which wslb replaces; only tcp ports send it on to the pods
        to_ingress = b.protocol != "tcp" and self.cm.get("use-proxy-protocol") is True
        if lb is not None:
            ka = self.annotation(lb, DO + "enable-backend-keepalive")
            if ka is not None:
                keepalive = ka
            if DO + "override-health-check" in lb.annotations:
                health = self._do_health(lb) or health
            if self.annotation(lb, DO + "enable-proxy-protocol") and not to_ingress:
                proxy_protocol = "v1"
                if b.protocol in ("h2c", "http2"):
                    self.warn(
                        b.source,
                        b.path,
                        f"{b.ref}: no PROXY header towards a gRPC (HTTP/2) backend: one "
                        "connection carries the requests of many clients",
                    )
                    proxy_protocol = None
        return BackendSpec(
            name=name,
            protocol=b.protocol,  # type: ignore[arg-type]
            endpoints=tuple(endpoints),  # type: ignore[arg-type]
            balance=b.balance,  # type: ignore[arg-type]
            max_tunnels=b.max_tunnels,
            drain_window=_DRAIN_WINDOW if b.drain_window is None else float(b.drain_window),
            keepalive=self._keepalive(keepalive, conns),
            health=health,
            proxy_protocol=proxy_protocol,  # type: ignore[arg-type]
            discovery=discovery,
        )

    def _do_health(self, lb: KObject) -> HealthSpec | None:
        """The health check of DO's annotations; None (the default check) when the model
        refuses one of them (an error on that annotation)."""

        def a(n: str) -> Any:
            return self.annotation(lb, DO + n)

        path = a("healthcheck-path")
        protocol = a("healthcheck-protocol") or ("http" if path else "tcp")
        fields: dict[str, tuple[str, Any]] = {"type": ("healthcheck-protocol", protocol)}
        if path:
            fields["path"] = ("healthcheck-path", path)
        for key, name in (
            ("interval", "healthcheck-check-interval-seconds"),
            ("timeout", "healthcheck-response-timeout-seconds"),
            ("unhealthy_threshold", "healthcheck-unhealthy-threshold"),
            ("healthy_threshold", "healthcheck-healthy-threshold"),
        ):
            fields[key] = (name, a(name))
        if fields["healthy_threshold"][1] is None:
            fields["healthy_threshold"] = ("healthcheck-healthy-threshold", 5)
        if a("healthcheck-port") is not None:
            self.warn(
                lb,
                ("metadata", "annotations", DO + "healthcheck-port"),
                "wslb checks every pod on the port it sends traffic to",
            )
        return self._model(lb, HealthSpec, fields, DO)

    def _endpoints(
        self, b: _Backend
    ) -> tuple[list[str | dict[str, Any]] | None, DiscoverySpec | None]:
        """The pods behind a backend: EndpointSlices (or Endpoints), else ``--endpoints``,
        else, for a headless Service only, its DNS name (one address per pod). A ClusterIP is
        never dialled: its virtual IP would balance a second time behind wslb (kube-proxy),
        so the requests of one session would reach different pods. From the API
        (``from_api``) the slices are the whole truth: none, or none ready, is no endpoint."""
        ns, svc_name = b.ref.split("/", 1)
        svc = self.services.get(b.ref)
        known = len(self.issues)
        port_name, target = self._service_port(b, svc)
        if len(self.issues) > known:  # the Service has no such port (reported)
            return None, None
        found = self._slice_endpoints(b.ref, port_name, target)
        if found:
            return found, None
        explicit = None if self.opt.from_api else self.opt.endpoints.get(b.ref)
        if explicit:
            return list(explicit), None
        if svc is not None and svc.get("spec", "type") == "ExternalName":
            return self._external_name(b, svc, target)
        if self.opt.from_api:
            return [], None
        if self._has_slices(b.ref):  # the files say where the pods are: none is ready
            self.warn(
                b.source,
                b.path,
                f"{b.ref}: its EndpointSlices in the files have no ready endpoint for port "
                f"{b.port!r}: it answers 503",
            )
            return [], None
        if not _headless(svc):
            self.error(b.source, b.path, self._cluster_ip_message(b, svc))
            return None, None
        if isinstance(target, str) or target is None:
            self.error(
                b.source,
                b.path,
                f"{b.ref} port {b.port!r}: the target port is named {target!r}; give --endpoints "
                f"{b.ref}=HOST:PORT or the Service and its EndpointSlices",
            )
            return None, None
        host = f"{svc_name}.{ns}.{self.opt.dns_suffix}"
        self.issues.append(
            b.source.issue(
                b.path,
                f"{b.ref}: no EndpointSlices and no --endpoints; endpoints come from DNS of the "
                f"headless Service, {host}:{target}, re-resolved every 10s",
                "info",
            )
        )
        return [f"{host}:{target}"], DiscoverySpec()

    def _cluster_ip_message(self, b: _Backend, svc: KObject | None) -> str:
        """Why a Service whose pods wslb does not know is refused, and what to give instead."""
        if svc is None:
            where = (
                f"Service {b.ref} is not in the files (nor its EndpointSlices), so wslb cannot "
                "know whether it is headless: its DNS name may be a virtual IP"
            )
        else:
            where = (
                f"Service {b.ref} has a cluster IP and no EndpointSlices in the files: its DNS "
                "name is a virtual IP"
            )
        if b.protocol == "tcp":
            why = (
                "(two levels of balancing: wslb's health checks, connection counts and drains "
                "would see one address, not the pods)"
            )
            headless = ""
        else:
            why = (
                "(two levels of balancing: cookie affinity and Engine.IO sessions break, the "
                "requests of one Socket.IO session reach different pods: 400 Session ID unknown)"
            )
            headless = (
                "make the Service headless (clusterIP: None, whose DNS name gives the pods), "
            )
        return (
            f"{where} that kube-proxy balances again behind wslb {why}; give wslb the "
            f"pods: {headless}add its EndpointSlices to the files, give --endpoints "
            f"{b.ref}=POD_IP:PORT,..., or run wslb controller, which reads the EndpointSlices "
            "from the API"
        )

    def _external_name(
        self, b: _Backend, svc: KObject, target: int | str | None
    ) -> tuple[list[str | dict[str, Any]] | None, DiscoverySpec | None]:
        """An ExternalName Service: its name, on the target port, re-resolved (no virtual IP
        in between); as ingress-nginx, never a loopback name or address."""
        name = str(svc.get("spec", "externalName") or "").rstrip(".")
        path = ("spec", "externalName")
        if not name:
            self.error(svc, path, f"ExternalName Service {b.ref} without spec.externalName")
            return None, None
        if name == "localhost" or _loopback(name):
            self.error(svc, path, f"{b.ref}: ExternalName {name} is a loopback address")
            return None, None
        if not isinstance(target, int):
            self.error(
                b.source,
                b.path,
                f"{b.ref} port {b.port!r}: an ExternalName Service needs a target port number",
            )
            return None, None
        return [_hostport(name, target)], DiscoverySpec()

    def _service_port(
        self, b: _Backend, svc: KObject | None
    ) -> tuple[str | None, int | str | None]:
        """(port name, target port) of the Service port the Ingress names; a Service that is
        not in the files, or an ExternalName one without ports: the Ingress's port."""
        ports = [] if svc is None else [p for p in svc.get("spec", "ports") or [] if p]
        if svc is None or (not ports and svc.get("spec", "type") == "ExternalName"):
            return (b.port if isinstance(b.port, str) else None), (
                b.port if isinstance(b.port, int) else None
            )
        for p in ports:
            if not isinstance(p, dict):
                continue
            if p.get("port") == b.port or (p.get("name") is not None and p.get("name") == b.port):
                target = p.get("targetPort", p.get("port"))
                if isinstance(target, str) and target.isascii() and target.isdigit():
                    target = int(target)
                return p.get("name"), target
        self.error(b.source, b.path, f"Service {b.ref} has no port {b.port!r}")
        return None, None

    def _slice_endpoints(
        self, ref: str, port_name: str | None, target: int | str | None
    ) -> list[str | dict[str, Any]]:
        """The Service's EndpointSlices merged (and its legacy Endpoints): ready addresses
        (``ready`` null counts as ready) serve; ``ready: false`` but ``serving`` and
        ``terminating`` ones are draining (no new sessions, their WebSockets closed over the
        drain window); the others (not serving) are left out. An address ready in one slice
        and draining in another is ready; each slice names its own port numbers."""
        ns, name = ref.split("/", 1)
        ready: set[str] = set()
        ending: set[str] = set()
        for s in self.by_kind.get("EndpointSlice", []):
            labels = s.get("metadata", "labels") or {}
            if s.namespace != ns or labels.get("kubernetes.io/service-name") != name:
                continue
            port = self._pick_port(s.get("ports") or [], port_name, target)
            if port is None:
                continue
            for e in s.get("endpoints") or []:
                cond = e.get("conditions") or {}
                addrs = {_hostport(str(a), port) for a in e.get("addresses") or [] if a}
                if cond.get("ready") is not False:
                    ready |= addrs
                elif cond.get("serving") and cond.get("terminating"):
                    ending |= addrs
        ep_obj = next((o for o in self.by_kind.get("Endpoints", []) if o.ref == ref), None)
        if ep_obj is not None:
            for sub in ep_obj.get("subsets") or []:
                port = self._pick_port(sub.get("ports") or [], port_name, target)
                if port is None:
                    continue
                # notReadyAddresses are not served
                ready |= {
                    _hostport(a.get("ip"), port) for a in sub.get("addresses") or [] if a.get("ip")
                }
        out: list[str | dict[str, Any]] = []
        out += sorted(ready)
        out += [{"address": a, "draining": True} for a in sorted(ending - ready)]
        return out

    def _has_slices(self, ref: str) -> bool:
        """Whether the files have EndpointSlices (or Endpoints) of the Service ``ref``."""
        ns, name = ref.split("/", 1)
        return any(
            s.namespace == ns
            and (s.get("metadata", "labels") or {}).get("kubernetes.io/service-name") == name
            for s in self.by_kind.get("EndpointSlice", [])
        ) or any(o.ref == ref for o in self.by_kind.get("Endpoints", []))

    @staticmethod
    def _pick_port(ports: list[Any], port_name: str | None, target: int | str | None) -> int | None:
        """The number of the Service port in one slice's (or Endpoints subset's) ``ports``, as
        ingress-nginx and kube-proxy match them: the port named as the Service port (a Service
        port without a name: the slice's port); else a port named as the target port (slices
        written by hand), else a target port number as it is, else the only port; no ports
        at all: a target port number. None: the slice does not serve that Service port."""
        tcp = [
            p
            for p in ports
            if isinstance(p, dict)
            and isinstance(p.get("port"), int)
            and (p.get("protocol") or "TCP") == "TCP"
        ]
        if not ports:  # no ports defined: the Service's target port, if it is a number
            return target if isinstance(target, int) else None
        if not tcp:  # UDP or SCTP ports only, or ports without numbers
            return None
        for p in tcp:
            if (p.get("name") or "") == (port_name or ""):
                return int(p["port"])
        if isinstance(target, str):
            for p in tcp:
                if p.get("name") == target:
                    return int(p["port"])
        if isinstance(target, int):
            return target
        if len(tcp) == 1:
            return int(tcp[0]["port"])
        return None

    # ------------------------------------------------------------------ listeners
    def _lb_service(self) -> KObject | None:
        if self.opt.lb_service is not None:
            return self.services.get(self.opt.lb_service)
        if self.opt.from_api:  # an app's own LoadBalancer Service is not the controller's
            return None
        for svc in self.by_kind.get("Service", []):
            if svc.get("spec", "type") == "LoadBalancer":
                return svc
        return None

    def _listeners(self, ingress_front: bool) -> list[ListenerSpec]:
        lb = self._lb_service()
        ingress_front = ingress_front or self.opt.from_api  # a controller always listens
        if lb is None:
            if not ingress_front:
                self.issues.append(
                    ConfigIssue(
                        "(manifests)",
                        None,
                        "",
                        "no Ingress and no LoadBalancer Service: nothing to serve",
                    )
                )
                return []
            return [
                self._listener("http", 80, "http", None, {}),
                self._listener("https", 443, "https", self._default_cert(), {}),
            ]
        self.check_annotations(lb, (DO,))
        if self.opt.balancer_in_front:
            return self._listeners_behind(lb)

        def a(n: str) -> Any:
            return self.annotation(lb, DO + n)

        protocol = a("protocol") or "tcp"
        self.do_acme = False
        cert = self._do_certificate(lb)
        # a certificate ACME keeps under DO's certificate-name is a certificate too
        has_cert = cert is not None or self.do_acme
        passthrough = bool(a("tls-passthrough"))
        tls_ports = set(a("tls-ports") or [])
        http2_ports = set(a("http2-ports") or [])
        http_ports = set(a("http-ports") or [])
        if (has_cert or passthrough) and not tls_ports and 443 not in http2_ports:
            tls_ports.add(443)
        common: dict[str, Any] = {}
        idle = a("http-idle-timeout-seconds")
        if idle is not None:
            common["client"] = {"keepalive_timeout": idle}
        allow, deny = a("allow-rules"), a("deny-rules")
        ranges = lb.get("spec", "loadBalancerSourceRanges")
        if ranges:
            allow = [str(r) for r in ranges]
        if allow:
            common["allow"] = tuple(allow)
        if deny:
            common["deny"] = tuple(deny)
        sticky = a("sticky-sessions-type") == "cookies"
        if sticky:
            self._do_sticky(lb)
        listeners = []
        for name, port, p in _tcp_ports(lb):
            if (
                port in http2_ports
                or port in tls_ports
                or (protocol in ("https", "http2", "http3") and port not in http_ports)
            ):
                if protocol == "http3":
                    self.warn(
                        lb,
                        ("metadata", "annotations", DO + "protocol"),
                        f"port {port}: HTTP/3 is not served; HTTP/2 and HTTP/1.1 over TLS",
                    )
                # HTTP/2 on http2 ports (DO's http2 entry protocol) and where the ingress
                # terminated TLS itself (passthrough: ingress-nginx offers h2 by default); an
                # https entry of DO's own is HTTP/1.1 only.
                h2 = (
                    port in http2_ports
                    or protocol in ("http2", "http3")
                    or (passthrough and self.cm.get("use-http2") is not False)
                )
                # passthrough: the ingress behind terminated TLS with the Ingress Secrets
                certificate = self._default_cert() if passthrough else cert or self._default_cert()
                listeners.append(
                    self._listener(name, port, "https", certificate, {**common, "http2": h2})
                )
            elif ingress_front or protocol in ("http",) or port in http_ports:
                extra = dict(common)
                if a("redirect-http-to-https"):
                    extra["redirect_https"] = RedirectSpec(code=308)
                listeners.append(self._listener(name, port, "http", None, extra))
            else:
                if sticky:
                    self.warn(
                        lb,
                        ("metadata", "annotations", DO + "sticky-sessions-type"),
                        f"sticky sessions cannot work on tcp port {port}: there is no HTTP to "
                        "carry a cookie",
                    )
                listeners.append(self._tcp_listener(lb, name, port, p, common))
        return listeners

    def _listeners_behind(self, lb: KObject) -> list[ListenerSpec]:
        """wslb behind the balancer the LoadBalancer Service makes (DigitalOcean's), as
        ingress-nginx is: a listener per Service port, taking what the balancer forwards.
        Where the balancer terminates TLS (DO's https/http2 entry, tls-ports) it sends plain
        HTTP with X-Forwarded-Proto, which is kept; elsewhere port 443 (or a port named https)
        carries TLS, which wslb terminates with the Ingresses' Secrets (DO's tcp entry, its
        tls-passthrough). With enable-proxy-protocol every connection starts with the PROXY
        header the balancer sends (ingress-nginx's use-proxy-protocol); DO's certificates,
        redirect, health checks and sticky sessions are the balancer's own."""

        def a(n: str) -> Any:
            return self.annotation(lb, DO + n)

        protocol = a("protocol") or "tcp"
        passthrough = bool(a("tls-passthrough"))
        at_balancer = set(a("tls-ports") or []) | set(a("http2-ports") or [])
        http_ports = set(a("http-ports") or [])
        proxy = bool(a("enable-proxy-protocol")) or self.cm.get("use-proxy-protocol") is True
        listeners = []
        for name, port, p in _tcp_ports(lb):
            extra: dict[str, Any] = {"proxy_protocol": True} if proxy else {}
            terminated = not passthrough and (
                port in at_balancer
                or (protocol in ("https", "http2", "http3") and port not in http_ports)
            )
            if terminated:
                extra["trusted_proxies"] = ("0.0.0.0/0", "::/0")
                listeners.append(self._listener(name, port, "http", None, extra))
            elif port == 443 or p.get("name") == "https":
                listeners.append(self._listener(name, port, "https", self._default_cert(), extra))
            else:
                listeners.append(self._listener(name, port, "http", None, extra))
        return listeners

    def _do_sticky(self, lb: KObject) -> None:
        name = self.annotation(lb, DO + "sticky-sessions-cookie-name")
        ttl = self.annotation(lb, DO + "sticky-sessions-cookie-ttl")
        if not name or not ttl:
            self.error(
                lb,
                ("metadata", "annotations", DO + "sticky-sessions-type"),
                "sticky-sessions-type cookies needs sticky-sessions-cookie-name and -cookie-ttl",
            )
            return
        spec = self._model(
            lb,
            CookieSpec,
            {
                "name": ("sticky-sessions-cookie-name", name),
                "mode": ("sticky-sessions-type", "persistent"),
                "max_age": ("sticky-sessions-cookie-ttl", ttl),
            },
            DO,
        )
        if spec is None:
            return
        routes = []
        for r in self.routes:
            if r.affinity is None:
                copy = r.model_copy(update={"affinity": spec})
                if id(r) in self.route_sources:
                    self.route_sources[id(copy)] = self.route_sources[id(r)]
                r = copy
            routes.append(r)
        self.routes = routes

    def _tcp_listener(
        self, lb: KObject, name: str, port: int, p: dict[str, Any], common: dict[str, Any]
    ) -> ListenerSpec:
        key = f"{lb.ref}:{port}"
        self.backends[key] = _Backend(lb.ref, port, lb, ("spec", "ports"), "tcp")
        fields = {k: v for k, v in common.items() if k in ("allow", "deny")}
        return ListenerSpec(
            name=name,
            address=self.opt.bind_address,
            port=self.opt.port_map.get(port, port),
            protocol="tcp",
            backend=key,
            **fields,
        )

    def _listener(
        self,
        name: str,
        port: int,
        protocol: str,
        cert: CertificateSpec | None,
        extra: dict[str, Any],
    ) -> ListenerSpec:
        tls = None
        if protocol == "https":
            certs = [c for c in (cert, *self.sni) if c is not None]
            tls = ListenerTLSSpec(
                certificates=tuple(certs),
                acme=bool(self.acme_certs),
                min_version=self._cm_tls_min(),  # type: ignore[arg-type]
            )
        return ListenerSpec(
            name=name,
            address=self.opt.bind_address,
            port=self.opt.port_map.get(port, port),
            protocol=protocol,  # type: ignore[arg-type]
            tls=tls,
            **{**extra, **self._cm_listener(extra, protocol)},
        )

    def _do_certificate(self, lb: KObject) -> CertificateSpec | None:
        cid = self.annotation(lb, DO + "certificate-id")
        cname = self.annotation(lb, DO + "certificate-name")
        ident = cid or cname
        if not ident:
            return None
        key = DO + ("certificate-id" if cid else "certificate-name")
        d = self.opt.certificates_dir
        if d:
            crt, pem_key = os.path.join(d, f"{ident}.crt"), os.path.join(d, f"{ident}.key")
            if os.path.isfile(crt) and os.path.isfile(pem_key):
                spec = CertificateSpec(certificate=crt, key=pem_key, name=f"certificate {ident}")
                try:
                    load_pair(spec)
                except CertificateProblem as exc:
                    self.error(lb, ("metadata", "annotations", key), str(exc))
                    return None
                return spec
        if self.opt.acme is not None:
            # DigitalOcean's Let's Encrypt certificates: one name, every host, renewed under it
            hosts = sorted(set(self.ingress_hosts))
            self.do_acme = self._acme(lb, ("metadata", "annotations", key), str(ident), hosts)
            if self.do_acme:
                return None
        self.warn(
            lb,
            ("metadata", "annotations", key),
            f"certificate {ident} is not in --certificates ({d or 'not given'}): a self-signed "
            f"certificate for {', '.join(self.ingress_hosts) or 'localhost'} serves instead",
        )
        pem, pkey = self_signed_for(tuple(sorted(set(self.ingress_hosts)) or ["localhost"]))
        return CertificateSpec(certificate_pem=pem, key_pem=pkey, name=f"self-signed for {ident}")

    def _default_cert(self) -> CertificateSpec:
        hosts = sorted(set(self.ingress_hosts)) or ["localhost"]
        pem, key = self_signed_for(tuple(hosts))
        return CertificateSpec(
            certificate_pem=pem, key_pem=key, name="default self-signed certificate"
        )

    # ------------------------------------------------------------------ the controller's ConfigMap
    def _cm_checks(self) -> None:
        """Warnings about ConfigMap values wslb honours only in part."""
        cm = self.cm
        if cm.obj is None:
            return
        header = cm.get("forwarded-for-header")
        if header is not None and header.lower() != "x-forwarded-for":
            self.issues.append(
                cm.issue(
                    "forwarded-for-header",
                    f"forwarded-for-header: wslb reads only X-Forwarded-For, not {header}",
                )
            )
        req, conn = cm.get("limit-req-status-code"), cm.get("limit-conn-status-code")
        if req is not None and conn is not None and req != conn:
            self.issues.append(
                cm.issue(
                    "limit-conn-status-code",
                    f"limit-conn-status-code: wslb's limits answer with one status: {req}, "
                    "limit-req-status-code's",
                )
            )
        protocols = cm.get("ssl-protocols")
        if protocols is not None:
            old = [p for p in protocols if p not in ("TLSv1.2", "TLSv1.3")]
            if len(old) == len(protocols):
                self.issues.append(
                    cm.issue("ssl-protocols", "ssl-protocols: wslb offers TLS 1.2 and 1.3", "error")
                )
            elif old:
                self.issues.append(
                    cm.issue(
                        "ssl-protocols",
                        f"ssl-protocols: wslb does not offer {', '.join(old)}; TLS 1.2 is its "
                        "lowest version",
                    )
                )
        if (
            cm.get("use-proxy-protocol")
            and self._lb_service() is not None
            and not self.opt.balancer_in_front
        ):
            self.issues.append(
                cm.issue(
                    "use-proxy-protocol",
                    "use-proxy-protocol: wslb is the LoadBalancer Service's balancer and takes "
                    "client connections directly, with no PROXY header (and sends the pods "
                    "none for do-loadbalancer-enable-proxy-protocol)",
                )
            )

    def _cm_server(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.cm.get("disable-access-log"):
            out["access_log"] = False
        grace = self.cm.get("worker-shutdown-timeout")
        if grace is not None:
            out["shutdown_grace"] = grace
        return out

    def _cm_listener(self, extra: dict[str, Any], protocol: str) -> dict[str, Any]:
        """Fields of an HTTP(S) listener from the controller ConfigMap; those of ``extra``
        (from the LoadBalancer Service's annotations) win."""
        cm = self.cm
        out: dict[str, Any] = {}
        client: dict[str, Any] = {}
        for key, name in (
            ("keepalive_timeout", "keep-alive"),
            ("header_timeout", "client-header-timeout"),
            ("body_timeout", "client-body-timeout"),
            ("max_concurrent_streams", "http2-max-concurrent-streams"),
        ):
            if cm.get(name) is not None:
                client[key] = cm.get(name)
        buffers = cm.get("large-client-header-buffers")
        if buffers is not None:
            number, size = buffers
            client["max_uri_size"] = size
            client["max_header_size"] = number * size
        client.update(extra.get("client") or {})
        if client:
            out["client"] = client
        if cm.get("use-forwarded-headers"):
            out["trusted_proxies"] = tuple(cm.get("proxy-real-ip-cidr") or ("0.0.0.0/0",))
        block = cm.get("block-cidrs")
        if block:
            out["deny"] = (*extra.get("deny", ()), *block)
        # behind a LoadBalancer Service's ports, wslb is the balancer: no PROXY header comes
        if cm.get("use-proxy-protocol") and (
            self._lb_service() is None or self.opt.balancer_in_front
        ):
            out["proxy_protocol"] = True
        if protocol == "https" and "http2" not in extra and cm.get("use-http2") is False:
            out["http2"] = False
        return out

    def _cm_tls_min(self) -> str:
        protocols = self.cm.get("ssl-protocols") or ()
        return "1.3" if "TLSv1.3" in protocols and "TLSv1.2" not in protocols else "1.2"

    def _limit_status(self) -> int:
        """The status of limit-rps/-rpm/-connections: wslb's limits have one."""
        req, conn = self.cm.get("limit-req-status-code"), self.cm.get("limit-conn-status-code")
        return int(req if req is not None else conn if conn is not None else 503)

    def _keepalive(self, enabled: bool, conns: int | None) -> KeepaliveSpec:
        fields: dict[str, Any] = {
            "enabled": enabled,
            "max_idle": (conns or 320) if enabled else 32,
        }
        for key, name in (
            ("idle_timeout", "upstream-keepalive-timeout"),
            ("max_requests", "upstream-keepalive-requests"),
        ):
            if self.cm.get(name) is not None:
                fields[key] = self.cm.get(name)
        return KeepaliveSpec(**fields)

    def _hsts(self, listeners: list[ListenerSpec]) -> None:
        """ingress-nginx's Strict-Transport-Security, sent over HTTPS only: each route becomes
        one for the HTTPS listeners, with the header, and one for the plain ones, without."""
        value = cmap.hsts_value(self.cm)
        tls = tuple(x.name for x in listeners if x.protocol == "https")
        if value is None or not tls:
            return
        plain = tuple(x.name for x in listeners if x.protocol == "http")
        rule = HeaderRule(name="Strict-Transport-Security", value=value)
        routes: list[RouteSpec] = []
        for r in self.routes:
            on_tls = tuple(n for n in tls if r.listeners is None or n in r.listeners)
            on_plain = tuple(n for n in plain if r.listeners is None or n in r.listeners)
            if on_plain:
                routes.append(r.model_copy(update={"listeners": on_plain}))
            if not on_tls:
                continue
            h = r.headers
            if not any(
                x.name.lower() == "strict-transport-security"
                for x in (*h.response_set, *h.response_add)
            ):  # a configuration-snippet's own header stays
                h = h.model_copy(update={"response_set": (*h.response_set, rule)})
            # (a redirect to HTTPS is for the plain listeners only)
            update = {"listeners": on_tls, "headers": h, "redirect_https": None}
            routes.append(r.model_copy(update=update))
        self.routes = routes

    # ------------------------------------------------------------------ checks
    def _warn_socketio(self) -> None:
        warned: set[str] = set()
        for route in self.routes:
            t = route.timeouts
            short = [x for x in (t.read, t.send) if x is not None and x < SOCKET_IO_MIN]
            looks = "socket.io" in route.path or route.path == "/"
            ing = self.route_sources.get(id(route))
            if not (short and looks and ing is not None):
                continue
            key = "proxy-read-timeout" if t.read in short else "proxy-send-timeout"
            msg = (
                f"{key} {min(short):g}s is shorter than Socket.IO's ping interval plus timeout "
                f"({SOCKET_IO_MIN}s): idle Socket.IO connections on {route.host or '*'}"
                f"{route.path} will be cut"
            )
            if NGINX + key not in ing.annotations and self.cm.given(key):
                if key not in warned:  # the ConfigMap's value: one warning on its key
                    warned.add(key)
                    self.issues.append(self.cm.issue(key, msg))
                continue
            self.warn(ing, ("metadata", "annotations", NGINX + key), msg)


def _msg(err: Any) -> str:
    """A pydantic error's message, as a config error says it."""
    return str(err["msg"]).removeprefix("Value error, ")


def _hostport(addr: str, port: int) -> str:
    """``host:port``; an IPv6 address in brackets."""
    addr = addr.removeprefix("[").removesuffix("]")
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def _headless(svc: KObject | None) -> bool:
    """A headless Service (``clusterIP: None``): its DNS name gives the pods' addresses. A
    Service that is not in the files may have a cluster IP: not headless."""
    if svc is None:
        return False
    ips = svc.get("spec", "clusterIPs")
    return svc.get("spec", "clusterIP") == "None" or (isinstance(ips, list) and ips == ["None"])


def _loopback(host: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def translate(objects: list[KObject], options: ManifestOptions) -> tuple[Config, list[ConfigIssue]]:
    t = Translator(objects, options)
    config = t.translate()
    if config is None:
        raise ConfigError(t.issues)
    return config, t.issues


Loader = Callable[[list[str]], tuple[list[KObject], list[ConfigIssue]]]


def _tcp_ports(lb: KObject) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """The LoadBalancer Service's TCP ports: (listener name, port, the port's entry)."""
    for p in lb.get("spec", "ports") or []:
        port = p.get("port")
        if isinstance(port, int) and p.get("protocol", "TCP") == "TCP":
            yield f"{lb.name}-{p.get('name') or port}", port, p
