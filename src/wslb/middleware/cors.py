"""CORS answered at the proxy, with ingress-nginx's ``enable-cors`` semantics.

An origin is allowed when the list holds ``*``, the origin itself, or a pattern whose one
leading ``*.`` label matches exactly one label (``https://*.example.com`` allows
``https://app.example.com``, not ``https://example.com`` nor ``https://a.b.example.com``).
As in ingress-nginx: the request's own ``Origin`` is echoed (``*`` when the list allows any);
a preflight (``OPTIONS`` from an allowed origin) is answered with 204, ``Content-Length: 0``, and
never reaches the backend; other responses to an allowed origin get the same headers; a request
from any other origin (an ``OPTIONS`` included) passes through untouched.
"""

from __future__ import annotations

from wslb.config.model import CorsSpec


class Cors:
    def __init__(self, spec: CorsSpec) -> None:
        self.spec = spec
        self.any = "*" in spec.allow_origins
        self.exact = frozenset(o.lower() for o in spec.allow_origins if "*" not in o)
        # "https://*.example.com" -> ("https://", ".example.com")
        self.wildcards = tuple(
            (o[: o.index("*")].lower(), o[o.index("*") + 1 :].lower())
            for o in spec.allow_origins
            if o != "*" and "*" in o
        )
        common = []
        if spec.allow_credentials:
            common.append(b"Access-Control-Allow-Credentials: true\r\n")
        self._common = common
        self._expose = (
            [f"Access-Control-Expose-Headers: {spec.expose_headers}\r\n".encode("latin-1")]
            if spec.expose_headers
            else []
        )
        self._preflight = [
            f"Access-Control-Allow-Methods: {spec.allow_methods}\r\n".encode("latin-1"),
            f"Access-Control-Allow-Headers: {spec.allow_headers}\r\n".encode("latin-1"),
            f"Access-Control-Max-Age: {spec.max_age}\r\n".encode("latin-1"),
        ]

    def allow_origin(self, origin: bytes | None) -> bytes | None:
        """The Access-Control-Allow-Origin value for ``origin``, or None when not allowed."""
        if self.any:
            return b"*"
        if not origin:
            return None
        o = origin.decode("latin-1").lower()
        if o in self.exact:
            return origin
        for prefix, suffix in self.wildcards:
            if o.startswith(prefix) and o.endswith(suffix):
                label = o[len(prefix) : len(o) - len(suffix)]
                if label and "." not in label and "/" not in label:
                    return origin
        return None

    def response_lines(self, origin: bytes | None) -> list[bytes]:
        """Headers for any response to an allowed origin (none otherwise)."""
        allowed = self.allow_origin(origin)
        if allowed is None:
            return []
        lines = [b"Access-Control-Allow-Origin: " + allowed + b"\r\n", *self._common]
        lines += self._preflight
        lines += self._expose
        if allowed != b"*":
            lines.append(b"Vary: Origin\r\n")
        return lines
