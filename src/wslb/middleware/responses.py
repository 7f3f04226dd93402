"""Header rules and the response steps (see :mod:`wslb.middleware.chain`), in the order a
response head meets them (the endpoint's, or a local answer):

    CorsHeaders -> AffinityCookie -> SetHeaders -> AddHeaders

and :class:`RequestHeaders`, the route's rules on the head forwarded to the endpoint.
"""

from __future__ import annotations

import time

from wslb.config.model import HeaderRule
from wslb.middleware.affinity import CookieAffinity
from wslb.middleware.chain import Request
from wslb.middleware.cors import Cors
from wslb.middleware.templates import Template

# nginx add_header adds to these statuses unless "always" is given
_ADD_HEADER_STATUSES = frozenset({200, 201, 204, 206, 301, 302, 303, 304, 307, 308})


class HeaderTemplate:
    """A header rule with its name prepared for matching and output."""

    __slots__ = ("always", "lname", "prefix", "template")

    def __init__(self, rule: HeaderRule) -> None:
        self.lname = rule.name.lower().encode("latin-1")
        self.prefix = rule.name.encode("latin-1") + b": "
        self.template = Template(rule.value)
        self.always = rule.always


def _replace(lines: list[bytes], rules: list[HeaderTemplate], request: Request) -> list[bytes]:
    """``lines`` without the fields ``rules`` name, then the rules' fields, rendered."""
    names = {rule.lname for rule in rules}
    lines = [ln for ln in lines if ln[: ln.find(b":")].lower() not in names]
    ctx = request.context()
    lines += [r.prefix + r.template.render(ctx) + b"\r\n" for r in rules]
    return lines


class RequestHeaders:
    """``headers.request_set``: fields set (replaced) on the head sent to the endpoint."""

    __slots__ = ("rules",)

    def __init__(self, rules: list[HeaderTemplate]) -> None:
        self.rules = rules

    def apply(self, request: Request, lines: list[bytes]) -> list[bytes]:
        return _replace(lines, self.rules, request)


class CorsHeaders:
    """The CORS fields on every response to an allowed origin (a preflight has them)."""

    __slots__ = ("cors",)

    def __init__(self, cors: Cors) -> None:
        self.cors = cors

    def on_response(self, request: Request, status: int, lines: list[bytes]) -> list[bytes]:
        if not request.preflight:
            lines += self.cors.response_lines(request.head.header(b"origin"))
        return lines


class AffinityCookie:
    """The affinity cookie, when the chooser gave the request a new one."""

    __slots__ = ("affinity",)

    def __init__(self, affinity: CookieAffinity) -> None:
        self.affinity = affinity

    def on_response(self, request: Request, status: int, lines: list[bytes]) -> list[bytes]:
        value = request.set_cookie
        if value is not None:
            lines.append(
                self.affinity.set_cookie(
                    value,
                    tls=request.tls,
                    user_agent=request.head.header(b"user-agent"),
                    now=time.time(),
                )
            )
        return lines


class SetHeaders:
    """``headers.response_set``: fields set (replaced) on every response."""

    __slots__ = ("rules",)

    def __init__(self, rules: list[HeaderTemplate]) -> None:
        self.rules = rules

    def on_response(self, request: Request, status: int, lines: list[bytes]) -> list[bytes]:
        return _replace(lines, self.rules, request)


class AddHeaders:
    """``headers.response_add``: fields added, as nginx's ``add_header``: to successful
    responses only, unless the rule says ``always``."""

    __slots__ = ("rules",)

    def __init__(self, rules: list[HeaderTemplate]) -> None:
        self.rules = rules

    def on_response(self, request: Request, status: int, lines: list[bytes]) -> list[bytes]:
        success = status < 400 and status in _ADD_HEADER_STATUSES
        rules = [r for r in self.rules if r.always or success]
        if rules:
            ctx = request.context()
            lines += [r.prefix + r.template.render(ctx) + b"\r\n" for r in rules]
        return lines
