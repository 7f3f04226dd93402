"""The shape of Kubernetes objects, checked against the official OpenAPI schemas of the API
server as the ``kubernetes-validate`` package ships them (its *strict* variants: an unknown
field is refused, as ``kubectl apply --validate=strict`` refuses it).

The API server refuses an object of the wrong shape, so ``kubectl apply`` never stores one; a
manifest file can hold anything. Each object is checked here when it is read: every mismatch
(all of them, not the first) becomes a ``(key path, message)`` that objects.py turns into
``file:line: key: message``, and the translator only ever sees objects of the right shape.

- The schemas are those of :data:`KUBERNETES_VERSION`; an apiVersion that version no longer
  serves is checked against the newest shipped version that still has it. The Ingress
  apiVersions removed in 1.22 (``extensions/v1beta1``, ``networking.k8s.io/v1beta1``), which no
  shipped version has, are converted to ``networking.k8s.io/v1`` (as the API server converted
  them), checked, and every problem is reported at the object's own v1beta1 key.
- ``null`` is accepted wherever the schemas accept it (where Kubernetes reads it as unset),
  except as a list item; int-or-string fields take either; ports are 1-65535 (the API
  server's validation, which the schemas leave out); YAML floats are not integers and YAML
  timestamps are not strings (as the models this replaced had it: the translator relies on
  it).
- A kind with no schema at all is not checked (``[]``).
"""

from __future__ import annotations

import copy
import datetime
import difflib
import functools
import importlib.resources
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import jsonschema
import referencing
from kubernetes_validate import utils as kv_utils

Path = tuple[str | int, ...]

#: The Kubernetes minor whose schemas manifests are checked against: the newest that
#: kubernetes-validate ships. A newer minor only adds fields (removed apiVersions fall back
#: below), so the newest refuses no manifest an older cluster takes, while naming as unknown
#: every field that no Kubernetes has. With an older kubernetes-validate, the newest it ships.
KUBERNETES_VERSION = "1.37"

_DEFINITIONS = "https://kubernetes.io/api/_definitions.json"
_V1BETA1_INGRESS = ("extensions/v1beta1", "networking.k8s.io/v1beta1")
_PORT = "port"  # the mark (under _MARK) of a port number field
_PORT_OR_NAME = "port-or-name"  # of an int-or-string port (a number or a port's name)
_MARK = "x-wslb-field"


# ------------------------------------------------------------------------- schemas and caches


@functools.cache
def _versions() -> tuple[str, ...]:
    """Shipped versions in the order they are tried: KUBERNETES_VERSION (or the newest shipped
    not newer than it), then older ones newest first, then newer ones."""
    shipped = sorted(set(kv_utils.all_versions()), key=_minor_key)  # 1.25.0, ...
    want = _minor_key(KUBERNETES_VERSION)
    base = [v for v in shipped if _minor_key(v) <= want] or shipped[:1]
    first = base[-1]
    older = [v for v in reversed(shipped) if _minor_key(v) < _minor_key(first)]
    newer = [v for v in shipped if _minor_key(v) > _minor_key(first)]
    return (first, *older, *newer)


def _minor_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in kv_utils.major_minor(version).split("."))


def _dir(version: str) -> str:
    return f"kubernetes-json-schema/v{version}-local-strict"


def _file(kind: str, api_version: str) -> str:
    # as kubernetes_validate.validate: rbac.authorization.k8s.io/v1 -> rbac-v1
    api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    return f"{kind.lower()}-{api}.json"


def _has(version: str, name: str) -> bool:
    root = importlib.resources.files("kubernetes_validate")
    return root.joinpath(f"{_dir(version)}/{name}").is_file()


@functools.cache
def schema_version(kind: str, api_version: str) -> str | None:
    """The shipped Kubernetes version (``1.37.0``) whose schema checks ``kind`` in
    ``api_version``: KUBERNETES_VERSION's, else the newest that serves it; None: none does."""
    name = _file(kind, api_version)
    return next((v for v in _versions() if _has(v, name)), None)


@functools.cache
def served(kind: str) -> tuple[str, ...]:
    """The apiVersions of ``kind`` that KUBERNETES_VERSION serves (for messages)."""
    version = _versions()[0]
    root = importlib.resources.files("kubernetes_validate").joinpath(_dir(version))
    found: list[str] = []
    for entry in root.iterdir():
        if not entry.name.startswith(f"{kind.lower()}-"):
            continue
        schema = kv_utils.schema_contents(f"{_dir(version)}/{entry.name}", version)
        for gvk in schema.get("x-kubernetes-group-version-kind") or []:
            if gvk.get("kind") == kind:
                group, ver = gvk.get("group"), gvk.get("version")
                found.append(f"{group}/{ver}" if group else str(ver))
    return tuple(sorted(found))


@functools.cache
def _known_kind(kind: str) -> bool:
    prefix = f"{kind.lower()}-"
    for version in _versions():
        root = importlib.resources.files("kubernetes_validate").joinpath(_dir(version))
        if any(e.name.startswith(prefix) for e in root.iterdir()):
            return True
    return False


@functools.cache
def _registry(version: str) -> referencing.Registry[Any]:
    """The version's ``_definitions.json`` (with wslb's port rules added) as a Registry."""
    defs = kv_utils.schema_contents(f"{_dir(version)}/_definitions.json", version)
    _add_port_rules(defs.get("$defs", {}))
    _no_null_items(defs, defs.get("$defs", {}))
    resource: referencing.Resource[Any] = referencing.Resource.from_contents(defs)
    return resource @ referencing.Registry()


def _add_port_rules(defs: dict[str, Any]) -> None:
    """What the API server's validation adds to the OpenAPI schema, for the fields wslb reads:
    ports are 1-65535; an int-or-string is either (the schemas' ``oneOf`` of two nullable types
    refuses ``null``, which Kubernetes reads as unset)."""
    if "io.k8s.apimachinery.pkg.util.intstr.IntOrString" in defs:
        defs["io.k8s.apimachinery.pkg.util.intstr.IntOrString"] = {
            "type": ["integer", "string", "null"]
        }
    ports = [
        ("io.k8s.api.core.v1.ServicePort", "port", _PORT),
        ("io.k8s.api.core.v1.ServicePort", "targetPort", _PORT_OR_NAME),
        ("io.k8s.api.networking.v1.ServiceBackendPort", "number", _PORT),
        ("io.k8s.api.discovery.v1.EndpointPort", "port", _PORT),
        ("io.k8s.api.core.v1.EndpointPort", "port", _PORT),
    ]
    for name, prop, mark in ports:
        props = defs.get(name, {}).get("properties", {})
        if prop not in props:
            continue
        field = props[prop]
        if mark == _PORT_OR_NAME:
            field = {"type": ["integer", "string", "null"]}
        props[prop] = {**field, "minimum": 1, "maximum": 65535, _MARK: mark}


def _no_null_items(node: Any, defs: dict[str, Any]) -> None:
    """List items are never null: the API server reads a null item as an empty object (or
    string), which its validation refuses for every list wslb reads, and wslb's translator
    reads every item of its lists as an object (or string). The schemas, whose types are all
    nullable (for optional fields), would take one."""
    if isinstance(node, list):
        for item in node:
            _no_null_items(item, defs)
        return
    if not isinstance(node, dict):
        return
    items = node.get("items")
    if isinstance(items, dict):
        types = items.get("type")
        if isinstance(types, list) and "null" in types:
            items["type"] = [t for t in types if t != "null"]
        ref = items.get("$ref")
        if isinstance(ref, str) and "type" not in items:
            target = defs.get(ref.rsplit("/", 1)[-1], {})
            types = target.get("type")
            if isinstance(types, list) and "object" in types:
                items["type"] = "object"
    for value in node.values():
        if isinstance(value, dict | list):
            _no_null_items(value, defs)


def _is_integer(_checker: Any, value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # 80.0 is not a port


def _is_string(_checker: Any, value: Any) -> bool:
    return isinstance(value, str)  # a YAML timestamp (a datetime) is not


_Validator: Any = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine_many(
        {"integer": _is_integer, "string": _is_string}
    ),
)


@functools.cache
def _validator(version: str, kind: str, api_version: str) -> tuple[Any, _Check | None]:
    """The compiled validator of ``kind`` in ``api_version`` with ``version``'s schemas, as
    kubernetes_validate.validate builds it (strict), and the same schema compiled into a
    quick yes/no check (None where it has a keyword the check does not know), made once."""
    schema = kv_utils.schema_contents(f"{_dir(version)}/{_file(kind, api_version)}", version)
    defs = _registry(version).contents(_DEFINITIONS)["$defs"]
    _no_null_items(schema, defs)
    registry = referencing.Resource.from_contents(schema) @ _registry(version)
    resolver = registry.resolver(str(schema.get("$id", "")))
    try:
        quick: _Check | None = _Compiler().compile(schema, resolver)
    except _Unsupported:
        quick = None
    return _Validator(schema, registry=registry), quick


# A valid object costs jsonschema about 0.7 ms (a validator object per subschema visited);
# wslb checks every object of a file, and the controller every stored object on each
# rebuild. The schema compiled into nested closures answers "valid?" in a few dozen
# microseconds; only an object that fails it goes through iter_errors, for the messages.

_Check = Callable[[Any], bool]


class _Unsupported(Exception):
    pass


_IGNORED = {"description", "format", "$schema", "$id", "$defs", "title", "default", "example"}
_PY_TYPES: dict[str, tuple[type, ...]] = {
    "null": (type(None),),
    "boolean": (bool,),
    "integer": (int,),  # not bool: see below
    "number": (int, float),
    "string": (str,),
    "object": (dict,),
    "array": (list,),
}
_NO_KEYWORD: Any = object()


class _Compiler:
    """Draft 2020-12's keywords that the Kubernetes schemas use, with _Validator's types, each
    schema compiled into one closure; any other keyword raises _Unsupported."""

    def __init__(self) -> None:
        self.done: dict[int, _Check] = {}

    def compile(self, schema: Any, resolver: Any) -> _Check:
        if schema is True or schema == {}:
            return _always
        if schema is False:
            return _never
        if not isinstance(schema, dict):
            raise _Unsupported(schema)
        if id(schema) in self.done:
            return self.done[id(schema)]
        cell: list[_Check] = []
        self.done[id(schema)] = lambda v: cell[0](v)  # a recursive schema
        cell.append(self._node(schema, resolver))
        self.done[id(schema)] = cell[0]
        return cell[0]

    def _node(self, schema: dict[str, Any], resolver: Any) -> _Check:
        classes: tuple[type, ...] | None = None
        bools = True
        props: dict[str, _Check] | None = None
        extra: Any = _NO_KEYWORD  # additionalProperties: a check, or _NO_KEYWORD
        required: tuple[str, ...] = ()
        items: _Check | None = None
        allowed: frozenset[str | None] | None = None
        low: Any = None
        high: Any = None
        also: list[_Check] = []  # $ref and the combinators
        for key, value in schema.items():
            if key in _IGNORED or key.startswith("x-"):
                continue
            if key == "$ref":
                resolved = resolver.lookup(value)
                also.append(self.compile(resolved.contents, resolved.resolver))
            elif key == "type":
                names = [value] if isinstance(value, str) else list(value)
                classes = tuple(c for n in names for c in _PY_TYPES[n])
                bools = "boolean" in names
            elif key == "properties":
                props = {name: self.compile(sub, resolver) for name, sub in value.items()}
            elif key == "additionalProperties":
                if schema.get("patternProperties"):
                    raise _Unsupported(key)
                extra = self.compile(value, resolver)
            elif key == "required":
                required = tuple(value)
            elif key == "items":
                items = self.compile(value, resolver)
            elif key == "enum":
                if not all(e is None or isinstance(e, str) for e in value):
                    raise _Unsupported(key)
                allowed = frozenset(value)
            elif key == "minimum":
                low = value
            elif key == "maximum":
                high = value
            elif key in ("oneOf", "anyOf", "allOf"):
                also.append(self._combine(key, [self.compile(sub, resolver) for sub in value]))
            else:
                raise _Unsupported(key)
        known = props or {}
        if extra is _NO_KEYWORD:
            extra = None if props is None else _always
        elif props is None:
            props = {}

        def check(v: Any) -> bool:
            if classes is not None and (
                not isinstance(v, classes) or (not bools and isinstance(v, bool))
            ):
                return False
            if isinstance(v, dict):
                if extra is not None:  # every key: a property's value, or an extra one
                    for k, item in v.items():
                        c = known.get(k)
                        if not (c(item) if c is not None else extra(item)):
                            return False
                for k in required:
                    if k not in v:
                        return False
            elif isinstance(v, list):
                if items is not None:
                    for item in v:
                        if not items(item):
                            return False
            elif (
                isinstance(v, int | float)
                and not isinstance(v, bool)
                and ((low is not None and v < low) or (high is not None and v > high))
            ):
                return False
            if allowed is not None and (not (v is None or isinstance(v, str)) or v not in allowed):
                return False
            return all(c(v) for c in also)

        return check

    @staticmethod
    def _combine(key: str, subs: list[_Check]) -> _Check:
        if key == "allOf":
            return lambda v: all(c(v) for c in subs)
        if key == "anyOf":
            return lambda v: any(c(v) for c in subs)
        return lambda v: sum(1 for c in subs if c(v)) == 1


def _always(_value: Any) -> bool:
    return True


def _never(_value: Any) -> bool:
    return False


# ------------------------------------------------------------------------------ the check


def shape_errors(kind: str, data: dict[str, Any]) -> list[tuple[Path, str]]:
    """(path, message) for every field of ``data`` that has not the shape Kubernetes gives it,
    in the order of the document; [] for a kind no Kubernetes schema has."""
    if not _known_kind(kind):
        return []
    api_version = data.get("apiVersion")
    if api_version is None:
        return [(("apiVersion",), 'missing required field "apiVersion"')]
    if not isinstance(api_version, str):
        return [(("apiVersion",), f"must be a string, not {_type(api_version)}")]
    found: dict[Path, str] = {}
    if kind == "Ingress" and api_version in _V1BETA1_INGRESS:
        converted, back, problems = _v1beta1_ingress(data)
        found.update(problems)
        v1 = schema_version(kind, "networking.k8s.io/v1") or _versions()[0]
        for path, message in _check(v1, kind, "networking.k8s.io/v1", converted):
            path, message = _map_back(path, message, back, data)
            found.setdefault(path, message)
    else:
        version = schema_version(kind, api_version)
        if version is None:
            names = ", ".join(served(kind)) or "none"
            return [
                (
                    ("apiVersion",),
                    f"{kind} is not served as {api_version!r} by Kubernetes "
                    f"{_span()}; Kubernetes {KUBERNETES_VERSION} serves {kind} as {names}",
                )
            ]
        for path, message in _check(version, kind, api_version, data):
            found.setdefault(path, message)
    return sorted(found.items(), key=lambda item: _order(data, item[0]))


def _span() -> str:
    shipped = sorted(_versions(), key=_minor_key)
    return f"{kv_utils.major_minor(shipped[0])} to {kv_utils.major_minor(shipped[-1])}"


def _check(
    version: str, kind: str, api_version: str, data: dict[str, Any]
) -> Iterator[tuple[Path, str]]:
    validator, quick = _validator(version, kind, api_version)
    if quick is not None and quick(data):
        return
    for error in validator.iter_errors(data):
        yield from _describe(error)


def _describe(error: Any) -> Iterator[tuple[Path, str]]:
    """A jsonschema error as (path, message): an unknown field at its own key, a missing one
    at the key it should have, anything else at the value."""
    path: Path = tuple(error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = list(schema.get("properties") or {})
        patterns = list(schema.get("patternProperties") or {})
        for key in error.instance:
            if key in known or any(re.search(p, str(key)) for p in patterns):
                continue
            yield (*path, str(key)), _unknown(str(key), known)  # str: as the Locator has it
        return
    if error.validator == "required" and isinstance(error.instance, dict):
        for key in error.validator_value:
            if key not in error.instance:
                yield (*path, key), f'missing required field "{key}"'
        return
    mark = schema.get(_MARK)
    if mark == _PORT_OR_NAME:
        yield path, f"must be a port number (1-65535) or a name, not {_show(error.instance)}"
    elif mark == _PORT:
        yield path, f"must be a port number (1-65535), not {_show(error.instance)}"
    elif error.validator == "type":
        yield path, f"must be {_expected(error.validator_value)}, not {_type(error.instance)}"
    elif error.validator == "enum":
        choices = ", ".join(json.dumps(v) for v in error.validator_value if v is not None)
        yield path, f"must be one of {choices}, not {_show(error.instance)}"
    else:
        yield path, str(error.message)


def _unknown(key: str, known: list[str]) -> str:
    """An unknown field, with the known one it is closest to (ignoring case)."""
    lowered = {k.lower(): k for k in known}
    close = difflib.get_close_matches(key.lower(), list(lowered), n=1, cutoff=0.6)
    hint = f' (did you mean "{lowered[close[0]]}"?)' if close else ""
    return f'unknown field "{key}"{hint}'


_NAMES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "object": "a mapping",
    "array": "a list",
}


def _expected(types: Any) -> str:
    listed = [types] if isinstance(types, str) else list(types)
    return " or ".join(_NAMES.get(t, t) for t in listed if t != "null") or "null"


def _type(value: Any) -> str:
    """The YAML name of a value's type."""
    if value is None:
        return "null"
    if isinstance(value, datetime.date):
        return "a timestamp (quote it to make it a string)"
    for types, name in (
        (bool, "a boolean"),
        (int, "an integer"),
        (float, "a float"),
        (str, "a string"),
        (dict, "a mapping"),
        (list, "a list"),
    ):
        if isinstance(value, types):
            return name
    return type(value).__name__


def _show(value: Any) -> str:
    """A value as a message shows it (YAML's spelling of null and booleans)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _order(data: Any, path: Path) -> tuple[int, ...]:
    """Where ``path`` is in the document: keys in the order written, a missing one first (its
    line is its parent's)."""
    out: list[int] = []
    node = data
    for part in path:
        if isinstance(node, dict):
            keys = list(node)
            out.append(keys.index(part) if part in node else -1)
            node = node.get(part) if part in node else None
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            out.append(part)
            node = node[part]
        else:
            out.append(0)
            node = None
    return tuple(out)


# ----------------------------------------------------------- extensions/v1beta1 Ingress


_V1BETA1_SPEC = ("backend", "ingressClassName", "rules", "tls")
_V1BETA1_BACKEND = ("serviceName", "servicePort", "resource")


def _v1beta1_ingress(
    data: dict[str, Any],
) -> tuple[dict[str, Any], dict[Path, Path], list[tuple[Path, str]]]:
    """A v1beta1 Ingress in the networking.k8s.io/v1 shape (as the API server converted it),
    the v1 key paths that differ from the original's (v1 -> v1beta1), and the fields v1beta1
    has not (refused here with its own names, since the v1 schema would take them)."""
    out = copy.copy(data)
    out["apiVersion"] = "networking.k8s.io/v1"
    back: dict[Path, Path] = {}
    problems: list[tuple[Path, str]] = []
    spec = data.get("spec")
    if not isinstance(spec, dict):
        return out, back, problems
    new_spec: dict[str, Any] = {}
    for key, value in spec.items():
        if key not in _V1BETA1_SPEC:
            problems.append((("spec", key), _unknown(str(key), list(_V1BETA1_SPEC))))
        elif key == "backend":
            back[("spec", "defaultBackend")] = ("spec", "backend")
            new_spec["defaultBackend"] = _v1beta1_backend(
                value, ("spec", "defaultBackend"), ("spec", "backend"), back, problems
            )
        elif key == "rules" and isinstance(value, list):
            new_spec["rules"] = [_v1beta1_rule(r, i, back, problems) for i, r in enumerate(value)]
        else:
            new_spec[key] = value
    out["spec"] = new_spec
    return out, back, problems


def _v1beta1_rule(
    rule: Any, i: int, back: dict[Path, Path], problems: list[tuple[Path, str]]
) -> Any:
    if not isinstance(rule, dict) or not isinstance(rule.get("http"), dict):
        return rule
    http: dict[str, Any] = rule["http"]
    paths = http.get("paths")
    if not isinstance(paths, list):
        return rule
    new_paths: list[Any] = []
    for j, item in enumerate(paths):
        if isinstance(item, dict):
            item = dict(item)
            if item.get("pathType") is None:  # v1beta1's default
                item["pathType"] = "ImplementationSpecific"
            if "backend" in item:
                at: Path = ("spec", "rules", i, "http", "paths", j, "backend")
                item["backend"] = _v1beta1_backend(item["backend"], at, at, back, problems)
        new_paths.append(item)
    return {**rule, "http": {**http, "paths": new_paths}}


def _v1beta1_backend(
    backend: Any, new: Path, old: Path, back: dict[Path, Path], problems: list[tuple[Path, str]]
) -> Any:
    """serviceName/servicePort -> service.name/service.port.number|name."""
    if not isinstance(backend, dict):
        return backend
    out: dict[str, Any] = {}
    service: dict[str, Any] = {}
    for key, value in backend.items():
        if key not in _V1BETA1_BACKEND:
            problems.append(((*old, key), _unknown(str(key), list(_V1BETA1_BACKEND))))
        elif key == "serviceName":
            service["name"] = value
        elif key == "servicePort":
            if value is not None:
                # a number, a name, or (refused as a port number) anything else
                service["port"] = {"name" if isinstance(value, str) else "number": value}
        else:
            out[key] = value
    if service:
        out["service"] = service
        back[(*new, "service", "name")] = (*old, "serviceName")
        back[(*new, "service", "port")] = (*old, "servicePort")
        back[(*new, "service")] = old
    return out


def _map_back(
    path: Path, message: str, back: dict[Path, Path], data: dict[str, Any]
) -> tuple[Path, str]:
    """A problem of the converted Ingress at the original's key, in the original's words."""
    for n in range(len(path), 0, -1):
        old = back.get(path[:n])
        if old is None:
            continue
        if old[-1] == "servicePort":  # service.port.number or .name
            value = _show(_get(data, old))
            return old, f"must be a port number (1-65535) or a name, not {value}"
        if old[-1] == "serviceName":
            return old, message.replace('"name"', '"serviceName"')
        return (*old, *path[n:]), message
    return path, message


def _get(data: Any, path: Path) -> Any:
    for part in path:
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        else:
            return None
    return data
