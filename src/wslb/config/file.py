"""wslb's own YAML configuration -> :class:`~wslb.config.model.Config`.

Every problem is collected before anything is refused: pydantic's field errors, cross-references
(a route naming a backend that does not exist, a tcp listener pointing at an http backend) and
files that cannot be used (a missing certificate, a key that does not match its certificate).
Each comes out as ``file:line: key: message``. Relative paths are resolved against the directory
of the config file.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from typing import Any

from pydantic import ValidationError

from wslb.config.model import Config
from wslb.config.source import Locator, load_documents
from wslb.errors import ConfigError, ConfigIssue

STDIN = "-"  # the path that means standard input (named "<stdin>" in what is reported)


def read_config(path: str) -> tuple[Config, list[ConfigIssue]]:
    """Load and validate one config file (``-``: standard input, its relative paths against
    the working directory); returns the config and its warnings.

    Raises :class:`ConfigError` listing every error (warnings included for context)."""
    if path == STDIN:
        return parse_config(sys.stdin.read(), "<stdin>")
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError([ConfigIssue(path, None, "", f"cannot read: {exc.strerror}")]) from None
    return parse_config(text, path, base_dir=os.path.dirname(os.path.abspath(path)))


def parse_config(text: str, source: str, base_dir: str = ".") -> tuple[Config, list[ConfigIssue]]:
    docs, issues = load_documents(text, source)
    if issues:
        raise ConfigError(issues)
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
            issues.append(loc.issue(path, _message(err)))
    if config is not None:
        config = _resolve_paths(config, base_dir)
        issues.extend(_check_files(config, loc))
    errors = [i for i in issues if i.severity == "error"]
    if errors or config is None:
        issues.sort(key=lambda i: (i.line or 0, i.key))
        raise ConfigError(issues)
    return config, issues


def _message(err: Any) -> str:
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    msg = str(err.get("msg", "invalid"))
    return msg.removeprefix("Value error, ")


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
            issues.append(loc.issue(("listeners", i, "backend"), f"no backend named {name!r}"))
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

    for i, v in routes:
        name = v.get("backend")
        if isinstance(name, str):
            if name not in backend_proto:
                issues.append(loc.issue(("routes", i, "backend"), f"no backend named {name!r}"))
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
                        loc.issue(("routes", i, "listeners", j), f"no listener named {ln!r}")
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
