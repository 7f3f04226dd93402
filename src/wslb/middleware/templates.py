"""Header values with variables, nginx style: ``$http_origin``, ``$host``, ``$scheme``,
``$remote_addr``, ``$request_uri``, ``$cookie_<name>``, mixed with literal text.

Templates are compiled once, at configuration time; evaluating one is a few lookups.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from wslb.proto.cookies import request_cookie
from wslb.proto.http1 import RequestHead

_VAR = re.compile(r"\$(\{[a-z0-9_]+\}|[a-z0-9_]+)", re.IGNORECASE)
VARIABLES = ("host", "scheme", "remote_addr", "request_uri", "http_<name>", "cookie_<name>")


@dataclass(frozen=True)
class RequestContext:
    head: RequestHead
    scheme: bytes
    client_ip: bytes


class Template:
    """A compiled header value. Raises ValueError for unknown variables."""

    __slots__ = ("_parts", "literal", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        parts: list[tuple[str, bytes]] = []
        pos = 0
        for m in _VAR.finditer(source):
            if m.start() > pos:
                parts.append(("", source[pos : m.start()].encode("latin-1")))
            name = m.group(1).strip("{}").lower()
            if name.startswith("http_"):
                parts.append(("http", name[5:].replace("_", "-").encode()))
            elif name.startswith("cookie_"):
                parts.append(("cookie", name[7:].encode()))
            elif name in ("host", "scheme", "remote_addr", "request_uri"):
                parts.append((name, b""))
            else:
                raise ValueError(f"unknown variable ${name} (known: {', '.join(VARIABLES)})")
            pos = m.end()
        if pos < len(source):
            parts.append(("", source[pos:].encode("latin-1")))
        self._parts = parts
        self.literal = all(kind == "" for kind, _ in parts)

    def render(self, ctx: RequestContext) -> bytes:
        out = []
        head = ctx.head
        for kind, arg in self._parts:
            if kind == "":
                out.append(arg)
            elif kind == "http":
                out.append(head.header(arg) or b"")
            elif kind == "host":
                out.append((head.host or "").encode("latin-1"))
            elif kind == "scheme":
                out.append(ctx.scheme)
            elif kind == "remote_addr":
                out.append(ctx.client_ip)
            elif kind == "request_uri":
                out.append(head.target)
            else:
                out.append(request_cookie(head, arg) or b"")
        return b"".join(out)
