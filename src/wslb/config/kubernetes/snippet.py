"""The safe part of ingress-nginx's ``configuration-snippet``: header directives only.

wslb runs no nginx. It reads the snippet with nginx's token rules (whitespace, single and
double quotes, backslash escapes, ``;`` ends a directive, ``#`` a comment) and accepts:

* ``more_set_headers "Name: value" ...``  -> response header set (replaces), on every status
* ``add_header Name value [always]``      -> response header added (2xx/3xx unless ``always``)
* ``proxy_set_header Name value``         -> request header set towards the backend

Values may hold the variables :mod:`wslb.middleware.templates` knows. Anything else is an
error that names the directive.
"""

from __future__ import annotations

from wslb.config.model import HeaderRule, HeadersSpec
from wslb.middleware.templates import Template


class SnippetError(ValueError):
    pass


def _tokens(text: str) -> list[list[str]]:
    directives: list[list[str]] = []
    current: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c == "#":
            while i < n and text[i] != "\n":
                i += 1
        elif c == ";":
            if current:
                directives.append(current)
            current = []
            i += 1
        elif c in "{}":
            raise SnippetError("blocks ({ ... }) are not supported in configuration-snippet")
        elif c in "\"'":
            quote, i, buf = c, i + 1, []
            while i < n and text[i] != quote:
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                buf.append(text[i])
                i += 1
            if i >= n:
                raise SnippetError("unterminated quoted string in configuration-snippet")
            current.append("".join(buf))
            i += 1
        else:
            start = i
            while i < n and not text[i].isspace() and text[i] not in ";{}\"'":
                i += 1
            current.append(text[start:i])
    if current:
        raise SnippetError(f"directive {current[0]} is not ended with ';'")
    return directives


def _rule(name: str, value: str, directive: str, always: bool = False) -> HeaderRule:
    if not name or any(c in name for c in " \t:"):
        raise SnippetError(f"{directive}: {name!r} is not a header name")
    try:
        Template(value)
    except ValueError as exc:
        raise SnippetError(f"{directive}: {exc}") from None
    return HeaderRule(name=name, value=value, always=always)


def parse_snippet(text: str) -> HeadersSpec:
    request_set: list[HeaderRule] = []
    response_set: list[HeaderRule] = []
    response_add: list[HeaderRule] = []
    for words in _tokens(text):
        directive, args = words[0], words[1:]
        if directive == "more_set_headers":
            if not args or any(a.startswith("-") for a in args):
                raise SnippetError('more_set_headers: only "Name: value" arguments are supported')
            for arg in args:
                name, sep, value = arg.partition(":")
                if not sep:
                    raise SnippetError(f'more_set_headers: {arg!r} is not "Name: value"')
                response_set.append(_rule(name.strip(), value.strip(), directive))
        elif directive == "add_header":
            always = len(args) == 3 and args[2] == "always"
            if len(args) != 2 and not always:
                raise SnippetError("add_header takes: Name value [always]")
            response_add.append(_rule(args[0], args[1], directive, always))
        elif directive == "proxy_set_header":
            if len(args) != 2:
                raise SnippetError("proxy_set_header takes: Name value")
            request_set.append(_rule(args[0], args[1], directive))
        else:
            raise SnippetError(
                f"directive {directive} is not supported: wslb runs no nginx and honours only "
                "more_set_headers, add_header and proxy_set_header"
            )
    return HeadersSpec(
        request_set=tuple(request_set),
        response_set=tuple(response_set),
        response_add=tuple(response_add),
    )
