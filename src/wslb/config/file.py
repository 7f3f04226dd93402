"""wslb's own YAML configuration -> :class:`~wslb.config.model.Config`.

Every problem is collected before anything is refused: pydantic's field errors, cross-references
(a route naming a backend that does not exist, a tcp listener pointing at an http backend) and
files that cannot be used (a missing certificate, a key that does not match its certificate).
Each comes out as ``file:line: key: message``. Relative paths are resolved against the directory
of the config file.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
import typing
from collections import Counter
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ValidationError

from wslb.config.model import Config
from wslb.config.source import DUPLICATE_KEY, STDIN, STDIN_NAME, Locator, load_documents
from wslb.errors import ConfigError, ConfigIssue


def read_config(path: str) -> tuple[Config, list[ConfigIssue]]:
    """Load and validate one config file (``-``: standard input, its relative paths against
    the working directory); returns the config and its warnings.

    Raises :class:`ConfigError` listing every error (warnings included for context)."""
    if path == STDIN:
        return parse_config(sys.stdin.read(), STDIN_NAME)
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError([ConfigIssue(path, None, "", f"cannot read: {exc.strerror}")]) from None
    return parse_config(text, path, base_dir=os.path.dirname(os.path.abspath(path)))


def parse_config(text: str, source: str, base_dir: str = ".") -> tuple[Config, list[ConfigIssue]]:
    docs, issues = load_documents(text, source)
    if any(i.message != DUPLICATE_KEY for i in issues) or not docs:
        raise ConfigError(issues)  # a syntax error: nothing more can be read
    # a duplicate key (the last one stands, as YAML loaders do) hides no other error
    if len(docs) != 1:
        raise ConfigError([ConfigIssue(source, None, "", "expected exactly one YAML document")])
    data, loc = docs[0].data, docs[0].locator
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([loc.issue((), "the top level must be a mapping")])

    issues.extend(_cross_references(data, loc))
    config: Config | None = None
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            path = tuple(err["loc"])
            if err.get("type") != "missing":
                # name what the user wrote (``endpoints[0]``), not a key a validator made up
                while path and path not in loc.lines:
                    path = path[:-1]
            issues.append(loc.issue(path, _message(err, tuple(err["loc"]))))
    if config is not None:
        config = _resolve_paths(config, base_dir)
        issues.extend(_check_files(config, loc))
    errors = [i for i in issues if i.severity == "error"]
    if errors or config is None:
        issues.sort(key=lambda i: (i.line or 0, i.key))
        raise ConfigError(issues)
    return config, issues


def suggest(word: object, choices: Iterable[str]) -> str:
    """``; did you mean 'x'?`` for the closest of ``choices`` to a misspelt ``word``, or ''."""
    if not isinstance(word, str):
        return ""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds (through Optional, tuple[X, ...], Annotated, ...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _keys_at(path: tuple[Any, ...]) -> list[str]:
    """The keys the model takes in the mapping at ``path`` (list indexes skipped)."""
    model: type[BaseModel] | None = Config
    for part in path:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if model is not None else None
        model = _model_of(field.annotation) if field is not None else None
        if model is None:
            return []
    return list(model.model_fields) if model is not None else []


# pydantic's messages, in the project's words (the rest keep theirs, "Input should" aside)
_PLAIN = {
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
}


def _message(err: Any, loc: tuple[Any, ...] = ()) -> str:
    kind = err.get("type", "")
    ctx = err.get("ctx") or {}
    given = err.get("input")
    if kind == "extra_forbidden":
        return "unknown key" + suggest(loc[-1] if loc else None, _keys_at(loc[:-1]))
    if kind == "missing":
        return "required key is missing"
    if kind == "literal_error":
        allowed = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        return f"{given!r} is not one of {', '.join(allowed)}" + suggest(given, allowed)
    if kind in _PLAIN:
        return f"{_PLAIN[kind]}, not {given!r}"
    for bound, words in (("le", "at most"), ("ge", "at least"), ("lt", "below"), ("gt", "above")):
        if bound in ctx and kind.endswith(("_equal", "_than")):
            return f"must be {words} {ctx[bound]}, not {given!r}"
    if kind == "string_too_short":
        return "must not be empty" if ctx.get("min_length") == 1 else str(err.get("msg"))
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    return msg.replace("Input should be", "must be", 1)


def _items(data: dict[str, Any], key: str) -> list[tuple[int, dict[str, Any]]]:
    value = data.get(key)
    if not isinstance(value, list):
        return []
    return [(i, v) for i, v in enumerate(value) if isinstance(v, dict)]


def _cross_references(data: dict[str, Any], loc: Locator) -> list[ConfigIssue]:
    """Checks between objects, done on the raw data so they show up next to field errors."""
    issues: list[ConfigIssue] = []
    listeners = _items(data, "listeners")
    backends = _items(data, "backends")
    routes = _items(data, "routes")

    for kind, items in (("listener", listeners), ("backend", backends)):
        counts = Counter(v.get("name") for _, v in items if isinstance(v.get("name"), str))
        for i, v in items:
            if isinstance(v.get("name"), str) and counts[v["name"]] > 1:
                issues.append(
                    loc.issue((f"{kind}s", i, "name"), f"{kind} name {v['name']!r} is used twice")
                )

    # Only values of the right type are compared here: the model reports the others.
    def bind(v: dict[str, Any]) -> tuple[str, int] | None:
        address, port = v.get("address", "0.0.0.0"), v.get("port")
        if isinstance(address, str) and isinstance(port, int) and port != 0:
            return address, port
        return None

    binds = Counter(bind(v) for _, v in listeners)
    for i, v in listeners:
        port = v.get("port")
        if bind(v) is not None and binds[bind(v)] > 1:
            issues.append(loc.issue(("listeners", i, "port"), f"port {port} is bound twice"))

    backend_proto = {
        v["name"]: v.get("protocol", "http") for _, v in backends if isinstance(v.get("name"), str)
    }
    listener_proto = {
        v["name"]: v.get("protocol") for _, v in listeners if isinstance(v.get("name"), str)
    }

    for i, v in listeners:
        name = v.get("backend")
        if not isinstance(name, str):
            continue
        if name not in backend_proto:
            issues.append(
                loc.issue(
                    ("listeners", i, "backend"),
                    f"no backend named {name!r}" + suggest(name, backend_proto),
                )
            )
        elif v.get("protocol") == "tcp" and backend_proto[name] != "tcp":
            issues.append(
                loc.issue(
                    ("listeners", i, "backend"),
                    f"a tcp listener forwards to a tcp backend; {name!r} is {backend_proto[name]}",
                )
            )
        elif v.get("protocol") in ("http", "https"):
            issues.append(
                loc.issue(("listeners", i, "backend"), "http(s) listeners route with `routes`")
            )

    # the same host and path (on the same listeners) sent to two backends: one would never serve
    first: dict[tuple[Any, ...], tuple[int, object]] = {}
    for i, v in routes:
        host = v.get("host")
        names = v.get("listeners")
        key = (
            host.strip().lower() if isinstance(host, str) else host,
            v.get("path", "/"),
            v.get("path_type", "prefix"),
            tuple(sorted(map(str, names))) if isinstance(names, list) else names,
        )
        if not all(isinstance(k, str | tuple | None) for k in key):
            continue  # a value the model refuses anyway
        if key not in first:
            first[key] = (i, v.get("backend"))
        elif first[key][1] != v.get("backend"):
            j, other = first[key]
            issues.append(
                loc.issue(
                    ("routes", i),
                    f"the same host and path as routes[{j}], which sends them to backend "
                    f"{other!r}: this route would never be used",
                )
            )

    for i, v in routes:
        name = v.get("backend")
        if isinstance(name, str):
            if name not in backend_proto:
                issues.append(
                    loc.issue(
                        ("routes", i, "backend"),
                        f"no backend named {name!r}" + suggest(name, backend_proto),
                    )
                )
            elif backend_proto[name] == "tcp":
                issues.append(
                    loc.issue(
                        ("routes", i, "backend"),
                        f"backend {name!r} is tcp; a route needs an http or https backend",
                    )
                )
        names = v.get("listeners")
        if isinstance(names, list):
            for j, ln in enumerate(names):
                if not isinstance(ln, str):
                    continue
                if ln not in listener_proto:
                    issues.append(
                        loc.issue(
                            ("routes", i, "listeners", j),
                            f"no listener named {ln!r}" + suggest(ln, listener_proto),
                        )
                    )
                elif listener_proto[ln] == "tcp":
                    issues.append(
                        loc.issue(
                            ("routes", i, "listeners", j),
                            f"listener {ln!r} is tcp; routes apply to http and https listeners",
                        )
                    )

    if not isinstance(data.get("acme"), dict):
        for i, v in listeners:
            tls = v.get("tls")
            if isinstance(tls, dict) and tls.get("acme") is True:
                issues.append(loc.issue(("listeners", i, "tls", "acme"), "needs an `acme` section"))

    for i, v in backends:
        if not v.get("endpoints"):
            issues.append(
                loc.issue(
                    ("backends", i),
                    f"backend {v.get('name')!r} has no endpoints; it will answer 503",
                    "warning",
                )
            )
    if routes and not any(v.get("protocol") in ("http", "https") for _, v in listeners):
        issues.append(loc.issue(("routes",), "routes but no http or https listener", "warning"))
    return issues


def _resolve_paths(config: Config, base_dir: str) -> Config:
    def fix(p: str | None) -> str | None:
        return p if p is None or os.path.isabs(p) else os.path.join(base_dir, p)

    listeners = []
    for lst in config.listeners:
        if lst.tls is not None:
            tls = lst.tls.model_copy(
                update={
                    "certificate": fix(lst.tls.certificate),
                    "key": fix(lst.tls.key),
                    "certificates": tuple(
                        c.model_copy(update={"certificate": fix(c.certificate), "key": fix(c.key)})
                        if c.certificate is not None
                        else c
                        for c in lst.tls.certificates
                    ),
                }
            )
            lst = lst.model_copy(update={"tls": tls})
        listeners.append(lst)
    backends = [
        b.model_copy(update={"tls": b.tls.model_copy(update={"ca_file": fix(b.tls.ca_file)})})
        for b in config.backends
    ]
    acme = config.acme
    if acme is not None:
        acme = acme.model_copy(update={"storage": fix(acme.storage), "ca_file": fix(acme.ca_file)})
    return config.model_copy(
        update={"listeners": tuple(listeners), "backends": tuple(backends), "acme": acme}
    )


def _check_files(config: Config, loc: Locator) -> list[ConfigIssue]:
    from wslb.config.certs import CertificateProblem, load_pair

    issues: list[ConfigIssue] = []
    for i, lst in enumerate(config.listeners):
        if lst.tls is None:
            continue
        for j, cert in enumerate(lst.tls.all_certificates()):
            path: tuple[str | int, ...]
            if lst.tls.certificate is not None:
                path = (
                    ("listeners", i, "tls")
                    if j == 0
                    else ("listeners", i, "tls", "certificates", j - 1)
                )
            else:
                path = ("listeners", i, "tls", "certificates", j)
            try:
                load_pair(cert)
            except CertificateProblem as exc:
                issues.append(loc.issue(path, str(exc)))
    for i, b in enumerate(config.backends):
        if b.tls.ca_file is not None and not os.path.isfile(b.tls.ca_file):
            issues.append(loc.issue(("backends", i, "tls", "ca_file"), f"no file {b.tls.ca_file}"))
    return issues
