"""A Kubernetes API server stand-in for tests: the real REST wire protocol, in memory.

``KubeAPI`` serves the paths, verbs, query parameters, status codes and ``Status`` bodies of
kube-apiserver (checked against the API concepts / conventions docs and the apiserver's own
code), so that ``kubernetes_asyncio`` (or kubectl, or any other client) talks to it exactly as to
a cluster, through an ordinary kubeconfig (``write_kubeconfig``). It runs an ``aiohttp`` server
on 127.0.0.1 in a thread of its own with its own event loop, so test code in any event loop, in
plain synchronous code, or in a subprocess can use it. Tests drive the "cluster" the way kubectl
would (``apply``, ``delete``) and break it the way a real one breaks (``compact``,
``cut_watches``, ``pause``/``resume``, ``forbid``). Plain http by default; ``tls=True`` serves
https from a throwaway CA that the kubeconfig trusts (client-go programs such as kubectl send
no credentials over http; kubectl get/apply/delete/watch work, apply with ``--validate=false``).

Implemented:

- discovery (``/api``, ``/apis``, ``/api/v1``, ``/apis/G``, ``/apis/G/V``), ``/version``,
  ``/healthz``, ``/livez``, ``/readyz``; bearer-token authentication (401 ``Unauthorized``);
- the resources of ``RESOURCES`` (a table: adding one is a line), namespaced and cluster-scoped,
  with the ``status`` subresource where the real one has it; core ``v1`` events and
  ``events.k8s.io/v1`` events are one storage seen in two representations, as in the apiserver;
- get, list, watch, create, update, patch, delete and deletecollection, with the apiserver's
  strategy rules per resource: create-on-update, unconditional update, ``metadata.generation``,
  status cleared on create and kept by main-resource writes, ``/status`` writes that change only
  ``.status``, no-op updates that write nothing, ``generateName`` (retried on a clash),
  finalizers (``deletionTimestamp`` until the last one goes), namespace deletion that removes the
  namespace's objects, delete preconditions, ``dryRun=All``;
- one resourceVersion counter for everything (as etcd's revision); a bounded event history from
  which watches are replayed and exact-resourceVersion lists and ``continue`` pages are rebuilt
  (older than that: 410 ``Expired``, with the apiserver's messages);
- list: label selectors (``=``, ``==``, ``!=``, exists, ``!``, ``in``, ``notin``, ``>``, ``<``),
  field selectors (``metadata.name``, ``metadata.namespace`` and each resource's own fields),
  ``limit``/``continue`` (the apiserver's token format, ``remainingItemCount``), the
  ``resourceVersion``/``resourceVersionMatch`` table of the API concepts docs, 504 "Too large
  resource version" after the apiserver's 3 s wait; items without kind/apiVersion;
- watch: ``resourceVersion`` (unset or ``0``: synthetic ADDED first), ``allowWatchBookmarks``
  (BOOKMARK every ``bookmark_interval`` s), ``timeoutSeconds``, ``sendInitialEvents`` (the
  ``k8s.io/initial-events-end`` bookmark), selectors (an object that stops or starts matching is
  sent as DELETED or ADDED, as the watch cache does); a too old resourceVersion is HTTP 200 then
  one ERROR event with the 410 Status;
- patch: ``application/merge-patch+json`` and ``application/strategic-merge-patch+json`` (both as
  RFC 7386 merge patches; the ``$setElementOrder``/``$retainKeys`` hints are dropped),
  ``application/json-patch+json`` (RFC 6902); a ``metadata.resourceVersion`` in a patch is a
  precondition (409);
- every stored object is validated against the official schemas
  (``kubernetes_validate``, ``K8S_VERSION``, strict), with compiled validators cached; a client
  write that fails gets 422 ``Invalid`` with ``details.causes`` naming the fields.

The test-side ``apply`` is kubectl's create-or-replace, with one liberty: a ``status`` given is
stored as given (as if another controller had written it); left out, the stored one is kept.

Deliberately not implemented: admission (no namespace-existence check, no quotas, no webhooks),
server-side apply (``application/apply-patch+yaml`` gets 415) and ``managedFields``, the
strategic-merge-patch list semantics (merge keys, ``$patch`` directives), defaulting (no
``clusterIP`` allocation, no default protocols or policies), the apiserver's Go validation beyond
the schemas (only object names are checked; a wrong type is 422 here, 400 there), the
``fieldValidation`` modes (an unknown field is always 422, where the apiserver's default drops
it with a warning), protobuf/CBOR and Table output, OpenAPI documents, aggregated discovery,
a last-applied annotation from the test-side ``apply``, graceful pod deletion (pods go at once),
slow-watcher termination, controllers (no default ``kubernetes`` Service, no namespace
controller delay), RBAC (``forbid`` is the whole authorizer) and HTTP/2.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import copy
import functools
import hmac
import json
import random
import re
import secrets
import ssl
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from aiohttp import web
from kubernetes_validate import utils as kv_utils
from referencing import Registry
from referencing import Resource as SchemaResource

K8S_VERSION = "1.34"
USER = "system:serviceaccount:ingress:wslb"
HISTORY = 10_000
TOO_LARGE_WAIT = 3.0  # the apiserver waits this long for a resourceVersion it has not reached

Obj = dict[str, Any]


# --------------------------------------------------------------------------- the resource table


def _fields(**paths: str) -> dict[str, Callable[[Obj], str]]:
    """Field selectors beyond metadata.*: label -> dotted path in the object."""

    def getter(path: str) -> Callable[[Obj], str]:
        def get(obj: Obj) -> str:
            value: Any = obj
            for part in path.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            if isinstance(value, bool):
                return "true" if value else "false"
            return "" if value is None else str(value)

        return get

    return {label: getter(path) for label, path in paths.items()}


@dataclass(frozen=True)
class Resource:
    """One row of the table: a resource as the apiserver registers it."""

    plural: str
    group: str
    version: str
    kind: str
    namespaced: bool
    status: bool = False  # has a status subresource
    create_on_update: bool = False  # PUT of a missing object creates it
    unconditional_update: bool = True  # PUT without metadata.resourceVersion is allowed
    generation: str | None = None  # "spec": bumped on spec changes; "all": on any non-metadata
    returns_deleted: bool = False  # DELETE answers with the object, not a Status
    short_names: tuple[str, ...] = ()
    fields: dict[str, Callable[[Obj], str]] = field(default_factory=dict, compare=False)
    storage: str = ""  # resources sharing one storage (events) name it; default: own

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """The GroupResource string of messages: "ingresses.networking.k8s.io"."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def store(self) -> str:
        return self.storage or f"{self.group}/{self.plural}"

    @property
    def singular(self) -> str:
        return self.kind.lower()


_POD_FIELDS = _fields(
    **{
        "spec.nodeName": "spec.nodeName",
        "spec.restartPolicy": "spec.restartPolicy",
        "spec.schedulerName": "spec.schedulerName",
        "spec.serviceAccountName": "spec.serviceAccountName",
        "spec.hostNetwork": "spec.hostNetwork",
        "status.phase": "status.phase",
        "status.podIP": "status.podIP",
        "status.nominatedNodeName": "status.nominatedNodeName",
    }
)
_EVENT_FIELDS = _fields(
    **{
        f"involvedObject.{f}": f"involvedObject.{f}"
        for f in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")
    },
    reason="reason",
    reportingComponent="reportingComponent",
    source="source.component",
    type="type",
)
_EVENTS_V1_FIELDS = _fields(
    **{
        f"regarding.{f}": f"regarding.{f}"
        for f in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")
    },
    reason="reason",
    reportingController="reportingController",
    type="type",
)

_FLAGS = {
    "cluster": "cluster-scoped (else namespaced)",
    "status": "has the status subresource",
    "put-creates": "PUT of a missing object creates it (AllowCreateOnUpdate)",
    "needs-rv": "PUT must carry metadata.resourceVersion (no AllowUnconditionalUpdate)",
    "generation": "metadata.generation bumped on .spec changes",
    "generation=all": "metadata.generation bumped on any change but metadata (and labels)",
    "deleted-object": "DELETE answers with the object (ReturnDeletedObject), not a Status",
}


def _row(
    group_version: str,
    plural: str,
    kind: str,
    flags: str = "",
    short: str = "",
    fields: dict[str, Callable[[Obj], str]] | None = None,
    storage: str = "",
) -> Resource:
    """One line of the table: ``flags`` are words of ``_FLAGS``."""
    words = set(flags.split())
    if words - set(_FLAGS):
        raise ValueError(f"unknown flags {words - set(_FLAGS)} for {plural}")
    group, _, version = group_version.rpartition("/")
    return Resource(
        plural,
        group,
        version,
        kind,
        namespaced="cluster" not in words,
        status="status" in words,
        create_on_update="put-creates" in words,
        unconditional_update="needs-rv" not in words,
        generation="all"
        if "generation=all" in words
        else "spec"
        if "generation" in words
        else None,
        returns_deleted="deleted-object" in words,
        short_names=tuple(short.split()),
        fields=fields or {},
        storage=storage,
    )


_SERVICE_FIELDS = _fields(**{"spec.clusterIP": "spec.clusterIP", "spec.type": "spec.type"})
_NAMESPACE_FIELDS = _fields(**{"status.phase": "status.phase"})

# the apiserver's registry (pkg/registry/*/strategy.go, storage.go) for these resources
# fmt: off
RESOURCES: tuple[Resource, ...] = (
    _row("v1", "namespaces", "Namespace", "cluster status deleted-object", "ns", _NAMESPACE_FIELDS),
    _row("v1", "services", "Service", "status put-creates deleted-object", "svc", _SERVICE_FIELDS),
    _row("v1", "endpoints", "Endpoints", "put-creates", "ep"),
    _row("v1", "pods", "Pod", "status generation deleted-object", "po", _POD_FIELDS),
    _row("v1", "secrets", "Secret", "", "", _fields(type="type")),
    _row("v1", "configmaps", "ConfigMap", "", "cm"),
    _row("v1", "events", "Event", "put-creates", "ev", _EVENT_FIELDS),
    _row("networking.k8s.io/v1", "ingresses", "Ingress", "status generation", "ing"),
    _row("networking.k8s.io/v1", "ingressclasses", "IngressClass", "cluster generation"),
    _row("discovery.k8s.io/v1", "endpointslices", "EndpointSlice", "generation=all"),
    _row("coordination.k8s.io/v1", "leases", "Lease", "put-creates needs-rv"),
    # one storage with core v1 events, converted (pkg/apis/events/v1)
    _row("events.k8s.io/v1", "events", "Event", "put-creates", "ev", _EVENTS_V1_FIELDS, "/events"),
)
# fmt: on

_BY_PATH: dict[tuple[str, str, str], Resource] = {
    (r.group, r.version, r.plural): r for r in RESOURCES
}
_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
_NAMESPACE_SUBRESOURCES = {"status", "finalize"}

# events.k8s.io/v1 Event field <-> core v1 Event field (pkg/apis/events/v1 conversion)
_EVENT_RENAMES = {
    "regarding": "involvedObject",
    "note": "message",
    "reportingController": "reportingComponent",
    "deprecatedSource": "source",
    "deprecatedFirstTimestamp": "firstTimestamp",
    "deprecatedLastTimestamp": "lastTimestamp",
    "deprecatedCount": "count",
}
_EVENT_SAME = (
    "metadata",
    "eventTime",
    "series",
    "action",
    "related",
    "reason",
    "type",
    "reportingInstance",
)


def _to_view(res: Resource, stored: Obj) -> Obj:
    """The stored object as ``res`` presents it (a copy, with kind and apiVersion)."""
    if res.storage == "/events":
        out: Obj = {"kind": res.kind, "apiVersion": res.group_version}
        for new, old in _EVENT_RENAMES.items():
            if old in stored:
                out[new] = copy.deepcopy(stored[old])
        for key in _EVENT_SAME:
            if key in stored:
                out[key] = copy.deepcopy(stored[key])
        return out
    out = copy.deepcopy(stored)
    out["kind"], out["apiVersion"] = res.kind, res.group_version
    return out


def _from_view(res: Resource, obj: Obj) -> Obj:
    """An object in ``res``'s representation, as stored."""
    if res.storage == "/events":
        out: Obj = {"kind": "Event", "apiVersion": "v1"}
        for new, old in _EVENT_RENAMES.items():
            if new in obj:
                out[old] = copy.deepcopy(obj[new])
        for key in _EVENT_SAME:
            if key in obj:
                out[key] = copy.deepcopy(obj[key])
        return out
    return copy.deepcopy(obj)


# --------------------------------------------------------------------------------- validation


@functools.lru_cache(maxsize=1)
def _schema_dir() -> str:
    # the same choice as kubernetes_validate.validate: the newest schemas not newer than asked
    version = [
        v
        for v in kv_utils.all_versions()
        if kv_utils.major_minor(v) <= kv_utils.major_minor(K8S_VERSION)
    ][-1]
    return f"kubernetes-json-schema/v{version}-local-strict"


@functools.lru_cache(maxsize=1)
def _definitions() -> Registry[Any]:
    defs = kv_utils.schema_contents(f"{_schema_dir()}/_definitions.json", K8S_VERSION)
    registry: Registry[Any] = SchemaResource.from_contents(defs) @ Registry()
    return registry


@functools.cache
def _validator(api_version: str, kind: str) -> jsonschema.Draft202012Validator:
    """kubernetes_validate.validate(obj, K8S_VERSION, strict=True), compiled once per kind."""
    api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    schema = kv_utils.schema_contents(f"{_schema_dir()}/{kind.lower()}-{api}.json", K8S_VERSION)
    registry = SchemaResource.from_contents(schema) @ _definitions()
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _field_path(path: Iterable[Any]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _join(parent: str, child: str) -> str:
    return f"{parent}.{child}" if parent else child


def _cause(reason: str, field_name: str, message: str) -> Obj:
    """A metav1.StatusCause (its Type is "reason" on the wire)."""
    return {"reason": reason, "message": message, "field": field_name}


def _causes(error: jsonschema.ValidationError) -> list[Obj]:
    """A jsonschema error as apiserver field errors."""
    path = _field_path(error.absolute_path)
    if error.validator == "required":
        missing = re.match(r"'([^']*)' is a required property", error.message)
        name = _join(path, missing.group(1) if missing else "")
        return [_cause("FieldValueRequired", name, "Required value")]
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
        unknown = [_join(path, key) for key in error.instance if key not in known]
        return [_cause("FieldValueInvalid", f, f"unknown field {json.dumps(f)}") for f in unknown]
    value = json.dumps(error.instance)
    if error.validator == "enum" and isinstance(error.validator_value, list):
        supported = ", ".join(json.dumps(v) for v in error.validator_value if v is not None)
        message = f"Unsupported value: {value}: supported values: {supported}"
        return [_cause("FieldValueNotSupported", path, message)]
    return [_cause("FieldValueInvalid", path, f"Invalid value: {value}: {error.message}")]


_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_1123 = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_LABEL_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_NAME_RULES: dict[str, tuple[re.Pattern[str], int, str]] = {
    "subdomain": (
        _SUBDOMAIN,
        253,
        "a lowercase RFC 1123 subdomain must consist of lower case "
        "alphanumeric characters, '-' or '.', and must start and end with an "
        "alphanumeric character (e.g. 'example.com', regex used for validation is "
        f"'{_SUBDOMAIN.pattern}')",
    ),
    "label": (
        _LABEL_1123,
        63,
        "a lowercase RFC 1123 label must consist of lower case "
        "alphanumeric characters or '-', and must start and end with an alphanumeric "
        f"character (e.g. 'my-name',  or '123-abc', regex used for validation is "
        f"'{_LABEL_1123.pattern}')",
    ),
    "1035": (
        _LABEL_1035,
        63,
        "a DNS-1035 label must consist of lower case alphanumeric "
        "characters or '-', start with an alphabetic character, and end with an "
        "alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation "
        f"is '{_LABEL_1035.pattern}')",
    ),
}


def _check(res: Resource, obj: Obj) -> list[Obj]:
    """Field errors of ``obj`` (in ``res``'s representation); empty when it may be stored."""
    causes: list[Obj] = []
    name = obj.get("metadata", {}).get("name") if isinstance(obj.get("metadata"), dict) else None
    if not name:
        message = "Required value: name or generateName is required"
        causes.append(_cause("FieldValueRequired", "metadata.name", message))
    elif isinstance(name, str):
        rule = {"namespaces": "label", "services": "1035"}.get(res.plural, "subdomain")
        pattern, longest, text = _NAME_RULES[rule]
        if len(name) > longest:
            text = f"must be no more than {longest} characters"
        if len(name) > longest or not pattern.fullmatch(name):
            message = f"Invalid value: {json.dumps(name)}: {text}"
            causes.append(_cause("FieldValueInvalid", "metadata.name", message))
    validator = _validator(res.group_version, res.kind)
    errors = sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
    for error in errors:
        causes.extend(_causes(error))
    return causes


def _invalid_message(what: str, name: str, causes: list[Obj]) -> str:
    parts = [f"{c['field']}: {c['message']}" if c.get("field") else c["message"] for c in causes]
    joined = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    return f"{what} {json.dumps(name)} is invalid: {joined}"


# ------------------------------------------------------------------------------------- errors


class ApiError(Exception):
    """A request that ends in a Status (raised inside the server, answered to the client)."""

    def __init__(
        self, code: int, reason: str, message: str, details: Obj | None = None, **extra: Any
    ) -> None:
        super().__init__(message)
        self.code = code
        self.status: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
        }
        if reason:
            self.status["reason"] = reason
        if details is not None:
            self.status["details"] = {k: v for k, v in details.items() if v not in ("", None)}
        self.status.update(extra)
        self.status["code"] = code


def _details(res: Resource, name: str = "", **more: Any) -> Obj:
    return {"name": name, "group": res.group, "kind": res.plural, **more}


def not_found(res: Resource, name: str) -> ApiError:
    return ApiError(
        404, "NotFound", f"{res.qualified} {json.dumps(name)} not found", _details(res, name)
    )


def already_exists(res: Resource, name: str) -> ApiError:
    return ApiError(
        409,
        "AlreadyExists",
        f"{res.qualified} {json.dumps(name)} already exists",
        _details(res, name),
    )


def conflict(res: Resource, name: str, why: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f"Operation cannot be fulfilled on {res.qualified} {json.dumps(name)}: {why}",
        _details(res, name),
    )


def invalid(res: Resource, name: str, causes: list[Obj], *, by_resource: bool = False) -> ApiError:
    what = res.qualified if by_resource else res.qualified_kind
    details = {
        "name": name,
        "group": res.group,
        "kind": res.plural if by_resource else res.kind,
        "causes": causes,
    }
    return ApiError(422, "Invalid", _invalid_message(what, name, causes), details)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def expired(message: str, **extra: Any) -> ApiError:
    return ApiError(410, "Expired", message, **extra)


def _method_not_allowed() -> ApiError:
    return ApiError(
        405,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource",
        {},
    )


def _server_not_found() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


OPTIMISTIC_LOCK = (
    "the object has been modified; please apply your changes to the latest version and try again"
)
LIST_TOO_OLD = "The resourceVersion for the provided list is too old."
CONTINUE_TOO_OLD = (
    "The provided continue parameter is too old to display a consistent list result. You can "
    "start a new list without the continue parameter, or use the continue token in this "
    "response to retrieve the remainder of the results. Continuing with the provided token "
    "results in an inconsistent list - objects that were created, modified, or deleted between "
    "the time the first chunk was returned and now may show up in the list."
)
PATCH_TYPES = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
)


# ---------------------------------------------------------------------------------- selectors

Matcher = Callable[[Obj], bool]
_LABEL_REQ = re.compile(
    r"\s*(?P<not>!)?\s*(?P<key>[A-Za-z0-9][-A-Za-z0-9_./]*)\s*"
    r"(?:(?P<op>==|=|!=|>|<)\s*(?P<value>[-A-Za-z0-9_.]*)"
    r"|\s(?P<setop>in|notin)\s*\((?P<set>[^()]*)\))?\s*"
)


def _split_top(text: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def _label_requirement(labels: dict[str, str], key: str, op: str, values: list[str]) -> bool:
    value = labels.get(key)
    if op == "exists":
        return value is not None
    if op == "!":
        return value is None
    if op in ("=", "=="):
        return value == values[0]
    if op == "!=":
        return value != values[0]  # an object without the label matches, as in Kubernetes
    if op == "in":
        return value in values
    if op == "notin":
        return value not in values
    if value is None or not re.fullmatch(r"-?\d+", value):  # > and <: integers only
        return False
    return int(value) > int(values[0]) if op == ">" else int(value) < int(values[0])


def label_matcher(selector: str) -> Matcher:
    """A label selector (k8s.io/apimachinery/pkg/labels syntax) as a predicate on labels."""
    requirements: list[tuple[str, str, list[str]]] = []
    for req in _split_top(selector) if selector.strip() else []:
        m = _LABEL_REQ.fullmatch(req)
        if not m or (m["not"] and (m["op"] or m["setop"])):
            raise bad_request(f"unable to parse requirement: {req.strip()!r}: invalid selector")
        if m["not"]:
            requirements.append((m["key"], "!", []))
        elif m["setop"]:
            values = [v.strip() for v in m["set"].split(",")]
            requirements.append((m["key"], m["setop"], values))
        elif m["op"]:
            value = m["value"] or ""
            if m["op"] in (">", "<") and not re.fullmatch(r"-?\d+", value):
                raise bad_request(
                    "unable to parse requirement: for 'Gt', 'Lt' operators, the value must be "
                    f"an integer: {value!r}"
                )
            requirements.append((m["key"], m["op"], [value]))
        else:
            requirements.append((m["key"], "exists", []))

    def matches(labels: Obj) -> bool:
        return all(_label_requirement(labels, *r) for r in requirements)

    return matches


def _split_unescaped(text: str, sep: str) -> list[str]:
    parts, cur, escaped = [], "", False
    for ch in text:
        if escaped:
            cur += "\\" + ch
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == sep:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur + ("\\" if escaped else ""))
    return parts


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def field_matcher(res: Resource, selector: str) -> Matcher:
    """A field selector as a predicate on the object (in ``res``'s representation)."""
    getters: dict[str, Callable[[Obj], str]] = {
        "metadata.name": lambda o: str(o.get("metadata", {}).get("name", "")),
        "metadata.namespace": lambda o: str(o.get("metadata", {}).get("namespace", "")),
        **res.fields,
    }
    requirements: list[tuple[Callable[[Obj], str], bool, str]] = []  # (getter, equal, value)
    for req in _split_unescaped(selector, ",") if selector.strip() else []:
        m = re.fullmatch(r"\s*([^!=\s]+)\s*(==|=|!=)(.*)", req)
        if not m:
            raise bad_request(f"invalid selector: '{selector}'; can't understand '{req}'")
        label, op, value = m[1], m[2], _unescape(m[3].strip())
        if label not in getters:
            if res.fields:  # the kinds with their own field labels say it their way
                raise bad_request(f"field label not supported: {label}")
            raise bad_request(
                f'"{label}" is not a known field selector: only '
                f'"metadata.name", "metadata.namespace"'
            )
        requirements.append((getters[label], op != "!=", value))

    def matches(obj: Obj) -> bool:
        return all((get(obj) == value) == equal for get, equal, value in requirements)

    return matches


# ------------------------------------------------------------------------------------ patches


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strip_directives(patch: Any) -> Any:
    """A strategic merge patch without its ordering/retaining hints (``$setElementOrder/...``,
    ``$retainKeys``), which change nothing under merge-patch semantics. Other directives stay,
    and fail validation naming themselves."""
    if isinstance(patch, dict):
        return {
            k: strip_directives(v)
            for k, v in patch.items()
            if not (k.startswith("$setElementOrder/") or k == "$retainKeys")
        }
    if isinstance(patch, list):
        return [strip_directives(v) for v in patch]
    return patch


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ValueError(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _index(container: list[Any], token: str, *, adding: bool = False) -> int:
    if adding and token == "-":
        return len(container)
    if not re.fullmatch(r"0|[1-9]\d*", token):
        raise ValueError(f"invalid array index {token!r}")
    i = int(token)
    if i > len(container) or (i == len(container) and not adding):
        raise ValueError(f"array index {i} out of bounds")
    return i


def json_patch(doc: Any, ops: list[Any]) -> Any:
    """RFC 6902 JSON patch."""
    doc = copy.deepcopy(doc)

    def parent(path: str) -> tuple[Any, str]:
        tokens = _pointer(path)
        if not tokens:
            raise ValueError("cannot address the document root here")
        node = doc
        for token in tokens[:-1]:
            node = node[_index(node, token)] if isinstance(node, list) else node[token]
        return node, tokens[-1]

    def get(path: str) -> Any:
        node = doc
        for token in _pointer(path):
            node = node[_index(node, token)] if isinstance(node, list) else node[token]
        return node

    def add(path: str, value: Any) -> None:
        nonlocal doc
        if path == "":
            doc = value
            return
        node, last = parent(path)
        if isinstance(node, list):
            node.insert(_index(node, last, adding=True), value)
        else:
            node[last] = value

    def remove(path: str) -> Any:
        node, last = parent(path)
        if isinstance(node, list):
            return node.pop(_index(node, last))
        return node.pop(last)

    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise ValueError(f"invalid operation {op!r}")
        kind, path = op["op"], op["path"]
        try:
            if kind == "add":
                add(path, copy.deepcopy(op["value"]))
            elif kind == "remove":
                remove(path)
            elif kind == "replace":
                remove(path)
                add(path, copy.deepcopy(op["value"]))
            elif kind == "move":
                add(path, remove(op["from"]))
            elif kind == "copy":
                add(path, copy.deepcopy(get(op["from"])))
            elif kind == "test":
                if get(path) != op["value"]:
                    raise ValueError(f"testing value {path} failed")
            else:
                raise ValueError(f"unexpected kind of operation {kind!r}")
        except (KeyError, IndexError, TypeError) as e:
            raise ValueError(f"{kind} operation does not apply: doc is missing path: {path}") from e
    return doc


# -------------------------------------------------------------------------------- the server


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _meta(obj: Obj) -> Obj:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        meta = obj["metadata"] = {}
    return meta


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def _query_bool(value: str | None) -> bool:
    # the apiserver's query-parameter conversion: absent, "0" and "false" are false
    return value is not None and value != "0" and value.lower() != "false"


def _non_meta(obj: Obj, *, spec_only: bool) -> Any:
    if spec_only:
        return obj.get("spec")
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "kind", "apiVersion")}


@dataclass
class Request:
    """One request as the apiserver's RequestInfo sees it, and the code it got."""

    method: str
    path: str
    verb: str
    resource: str  # "ingresses", "ingresses/status"; "" for non-resource paths
    namespace: str | None
    name: str | None
    query: dict[str, str]
    code: int | None = None


@dataclass(frozen=True)
class _Target:
    """Where a resource request goes, and what the authorizer is asked about it."""

    res: Resource
    namespace: str | None  # of the object (None: cluster-scoped, or across namespaces)
    name: str | None  # from the URL
    sub: str | None
    verb: str
    watch: bool
    authz_namespace: str | None  # a namespace is its own namespace here
    authz_name: str | None  # the name, or the one a metadata.name field selector pins

    @property
    def resource(self) -> str:
        return f"{self.res.plural}/{self.sub}" if self.sub else self.res.plural


@dataclass
class _Event:
    rv: int
    store: str
    type: str  # ADDED, MODIFIED, DELETED
    obj: Obj  # stored form, metadata.resourceVersion == rv
    prev: Obj | None


def _line(kind: str, obj: Obj) -> bytes:
    """One watch event: a JSON object on a line of its own."""
    return json.dumps({"type": kind, "object": obj}, separators=(",", ":")).encode() + b"\n"


_END = object()
_CUT = object()


class _Watcher:
    """One open watch: its filters and the queue of lines its stream writes."""

    def __init__(
        self,
        res: Resource,
        namespace: str | None,
        labels: Matcher,
        fields: Matcher,
        request: web.BaseRequest,
    ) -> None:
        self.res, self.namespace = res, namespace
        self.labels, self.fields = labels, fields
        self.request = request
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.after = 0  # events at or before this resourceVersion are not for this watch

    def matches(self, stored: Obj) -> bool:
        meta = stored.get("metadata", {})
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        if not self.labels(meta.get("labels") or {}):
            return False
        return self.fields(_to_view(self.res, stored) if self.res.storage else stored)

    def line(self, kind: str, stored: Obj) -> bytes:
        return _line(kind, _to_view(self.res, stored))

    def offer(self, ev: _Event) -> None:
        if ev.rv <= self.after:
            return
        now = ev.type != "DELETED" and self.matches(ev.obj)
        before = ev.prev is not None and self.matches(ev.prev)
        if now and before:
            self.queue.put_nowait(self.line("MODIFIED", ev.obj))
        elif now:
            self.queue.put_nowait(self.line("ADDED", ev.obj))
        elif before:
            if ev.type == "DELETED":
                self.queue.put_nowait(self.line("DELETED", ev.obj))
            else:  # stopped matching: the last matching state, at this event's version
                assert ev.prev is not None
                gone = copy.deepcopy(ev.prev)
                _meta(gone)["resourceVersion"] = str(ev.rv)
                self.queue.put_nowait(self.line("DELETED", gone))

    def bookmark(self, rv: int, *, initial_end: bool = False) -> bytes:
        meta: Obj = {"resourceVersion": str(rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        obj = {"kind": self.res.kind, "apiVersion": self.res.group_version, "metadata": meta}
        return _line("BOOKMARK", obj)

    def cut(self) -> None:
        transport = self.request.transport
        if transport is not None:
            transport.abort()
        self.queue.put_nowait(_CUT)


class KubeAPI:
    """The stand-in. Test-side methods are synchronous and thread-safe (they run on the
    server's loop); ``await_until`` is the one for a test's own event loop."""

    def __init__(
        self,
        *,
        user: str = USER,
        namespaces: Iterable[str] = ("default", "kube-system", "kube-public", "kube-node-lease"),
        history: int = HISTORY,
        tls: bool = False,
    ) -> None:
        """``tls``: serve https with a certificate from a throwaway CA (``ca_pem``, and the
        kubeconfig trusts it); kubectl, like every client-go program, sends no credentials over
        plain http."""
        self.token = secrets.token_urlsafe(24)
        self.ca_pem: bytes | None = None
        self._ssl: ssl.SSLContext | None = None
        if tls:
            import trustme  # a test dependency, needed only here

            ca = trustme.CA()
            self._ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ca.issue_cert("127.0.0.1", "localhost").configure_cert(self._ssl)
            self.ca_pem = ca.cert_pem.bytes()
        self.user = user
        self.bookmark_interval = 1.0
        self.port = 0
        self._initial_namespaces = tuple(namespaces)
        self._history_size = history
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: web.Server | None = None
        self._listener: asyncio.AbstractServer | None = None
        self._data: dict[str, dict[str, Obj]] = {r.store: {} for r in RESOURCES}
        self._history: deque[_Event] = deque()
        self._rv = 1
        self._floor = 1  # the history holds every event after this resourceVersion
        self._watchers: set[_Watcher] = set()
        self._forbidden: set[tuple[str, str, str | None]] = set()
        self._requests: list[Request] = []
        self._requests_lock = threading.Lock()
        self._changed: asyncio.Event | None = None

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> KubeAPI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"{'https' if self._ssl else 'http'}://127.0.0.1:{self.port}"

    @property
    def resource_version(self) -> int:
        """The current global resourceVersion (etcd's revision)."""
        return self._rv

    def start(self) -> KubeAPI:
        if self._thread is not None:
            return self
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=self._run_loop, name="kubeapi", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._astart(), loop).result(timeout=30)
        return self

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        loop, thread = self._loop, self._thread
        asyncio.run_coroutine_threadsafe(self._astop(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()
        self._thread = self._loop = None

    def _run_loop(self) -> None:
        assert self._loop is not None
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    async def _astart(self) -> None:
        self._changed = asyncio.Event()
        self._server = web.Server(self._handle, handler_cancellation=True, access_log=None)
        for name in self._initial_namespaces:
            self._apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        await self._listen()

    async def _listen(self) -> None:
        assert self._loop is not None and self._server is not None
        if self._listener is not None:
            return  # listening already
        self._listener = await self._loop.create_server(
            self._server, "127.0.0.1", self.port, reuse_address=True, ssl=self._ssl
        )
        self.port = self._listener.sockets[0].getsockname()[1]

    def _drop_connections(self) -> None:
        assert self._server is not None
        for conn in self._server.connections:
            if conn.transport is not None:
                conn.transport.abort()
        for w in list(self._watchers):
            w.queue.put_nowait(_CUT)

    async def _astop(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self._drop_connections()
        assert self._server is not None
        await self._server.shutdown(1.0)

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self._loop is None or self._thread is None:
            raise RuntimeError("KubeAPI is not started")
        if threading.get_ident() == self._thread.ident:
            return fn(*args, **kwargs)

        async def run() -> Any:
            return fn(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=30)

    # -------------------------------------------------------------- test-side API

    def apply(self, obj: Obj) -> Obj:
        """Create or replace ``obj`` as ``kubectl apply`` would; returns the stored object.
        A ``status`` given is stored too (as another controller would have written it); one
        left out keeps the stored status. Raises ValueError for an invalid object."""
        result: Obj = self._call(self._apply, copy.deepcopy(obj))
        return result

    def apply_many(self, objs: Iterable[Obj]) -> list[Obj]:
        return [self.apply(o) for o in objs]

    def delete(self, kind: str, namespace: str | None, name: str) -> Obj | None:
        """Delete like ``kubectl delete`` (finalizers hold it); the last state, or None."""
        result: Obj | None = self._call(self._test_delete, kind, namespace, name)
        return result

    def get(self, kind: str, namespace: str | None, name: str) -> Obj | None:
        result: Obj | None = self._call(self._test_get, kind, namespace, name)
        return result

    def objects(self, kind: str, namespace: str | None = None) -> list[Obj]:
        """Every stored object of ``kind`` (a Kind, or a plural), with kind and apiVersion."""
        result: list[Obj] = self._call(self._test_objects, kind, namespace)
        return result

    def compact(self) -> None:
        """Forget the event history (etcd compaction): older resourceVersions now get 410."""
        self._call(self._compact)

    def expire_watches(self) -> int:
        """What a client coming back from a long disconnection finds: writes elsewhere in the
        cluster moved the resourceVersion on, etcd compacted the history and every open watch is
        cut, so that every watcher's last resourceVersion is now too old (410 on resuming, even
        for a watcher that a bookmark had brought up to date). Returns how many were cut."""
        result: int = self._call(self._expire_watches)
        return result

    def cut_watches(self) -> int:
        """Abort every open watch stream mid-stream; returns how many there were."""
        result: int = self._call(self._cut_watches)
        return result

    def pause(self) -> None:
        """Become unreachable: stop listening and drop every connection (connects refused)."""
        self._call_async(self._pause())

    def resume(self) -> None:
        """Listen again, on the same port."""
        self._call_async(self._listen())

    def forbid(self, verb: str, resource: str, namespace: str | None = None) -> None:
        """Requests of ``verb`` on ``resource`` ("secrets", "ingresses/status"; "*" for any),
        in ``namespace`` (None: everywhere) get 403 Forbidden."""
        with self._requests_lock:
            self._forbidden.add((verb, resource, namespace))

    def allow(self, verb: str, resource: str, namespace: str | None = None) -> None:
        with self._requests_lock:
            self._forbidden.discard((verb, resource, namespace))

    @property
    def requests(self) -> list[Request]:
        with self._requests_lock:
            return list(self._requests)

    def count(self, verb: str, resource: str) -> int:
        """How many ``verb`` requests ``resource`` got ("list", "watch", "ingresses/status")."""
        with self._requests_lock:
            return sum(1 for r in self._requests if r.verb == verb and r.resource == resource)

    def open_watches(self, resource: str | None = None) -> int:
        """Watch streams open now, on ``resource`` (a plural) or on any."""
        result: int = self._call(
            lambda: sum(1 for w in self._watchers if resource in (None, w.res.plural))
        )
        return result

    def wait_until(self, predicate: Callable[[KubeAPI], bool], timeout: float = 10.0) -> None:
        """Block until ``predicate(self)`` holds (checked on every request, write and watch
        change); TimeoutError after ``timeout`` s."""
        self._call_async(self._until(predicate, timeout), timeout=timeout + 5)

    async def await_until(
        self, predicate: Callable[[KubeAPI], bool], timeout: float = 10.0
    ) -> None:
        """``wait_until`` for a coroutine in any event loop."""
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(self._until(predicate, timeout), self._loop)
        await asyncio.wrap_future(future)

    def write_kubeconfig(self, path: str | Path, namespace: str = "default") -> Path:
        """A kubeconfig for this server (token user, current context); returns its path."""
        path = Path(path)
        cluster: Obj = {"server": self.url}
        if self.ca_pem is not None:
            cluster["certificate-authority-data"] = base64.b64encode(self.ca_pem).decode()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kubeapi", "cluster": cluster}],
            "users": [{"name": "wslb", "user": {"token": self.token}}],
            "contexts": [
                {
                    "name": "kubeapi",
                    "context": {"cluster": "kubeapi", "user": "wslb", "namespace": namespace},
                }
            ],
            "current-context": "kubeapi",
            "preferences": {},
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def _call_async(self, coro: Any, timeout: float = 30.0) -> Any:
        if self._loop is None:
            raise RuntimeError("KubeAPI is not started")
        future: concurrent.futures.Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout=timeout)

    async def _pause(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self._drop_connections()

    async def _until(self, predicate: Callable[[KubeAPI], bool], timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not predicate(self):
                assert self._changed is not None
                await self._changed.wait()

    def _touch(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = asyncio.Event()

    # --------------------------------------------------------- test-side internals

    def _resolve(self, kind: str, api_version: str | None = None) -> Resource:
        for res in RESOURCES:  # the first row wins: core Event before events.k8s.io's
            if kind in (res.kind, res.plural) and api_version in (None, res.group_version):
                return res
        raise ValueError(f"no resource for kind {kind!r} (apiVersion {api_version!r})")

    def _key(self, res: Resource, namespace: str | None, name: str) -> str:
        return f"{namespace or 'default'}/{name}" if res.namespaced else name

    def _apply(self, obj: Obj) -> Obj:
        if not isinstance(obj, dict) or not obj.get("kind") or not obj.get("apiVersion"):
            raise ValueError("an object needs kind and apiVersion")
        res = self._resolve(obj["kind"], obj["apiVersion"])
        meta = _meta(obj)
        if res.namespaced:
            meta.setdefault("namespace", "default")
        else:
            meta.pop("namespace", None)
        for key in (
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "generation",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
        ):
            meta.pop(key, None)
        key = self._key(res, meta.get("namespace"), str(meta.get("name", "")))
        cur = self._data[res.store].get(key)
        if cur is None:
            new = self._prepare_create(res, obj, keep_status="status" in obj)
            problems = _check(res, new)
            if problems:
                raise ValueError(
                    _invalid_message(res.qualified_kind, meta.get("name", ""), problems)
                )
            return _to_view(res, self._commit(res, key, "ADDED", _from_view(res, new), None))
        cur_view = _to_view(res, cur)
        new = self._prepare_update(res, cur_view, obj, take_status="status" in obj)
        problems = _check(res, new)
        if problems:
            raise ValueError(_invalid_message(res.qualified_kind, meta["name"], problems))
        return _to_view(res, self._store_update(res, key, cur, new))

    def _test_delete(self, kind: str, namespace: str | None, name: str) -> Obj | None:
        res = self._resolve(kind)
        key = self._key(res, namespace, name)
        if key not in self._data[res.store]:
            return None
        return _to_view(res, self._delete_object(res, key, None))

    def _test_get(self, kind: str, namespace: str | None, name: str) -> Obj | None:
        res = self._resolve(kind)
        cur = self._data[res.store].get(self._key(res, namespace, name))
        return None if cur is None else _to_view(res, cur)

    def _test_objects(self, kind: str, namespace: str | None) -> list[Obj]:
        res = self._resolve(kind)
        return [
            _to_view(res, o)
            for _, o in sorted(self._data[res.store].items())
            if namespace is None or o["metadata"].get("namespace") == namespace
        ]

    def _compact(self) -> None:
        self._history.clear()
        self._floor = self._rv

    def _expire_watches(self) -> int:
        self._rv += 1  # a write to an object nobody watches here (a node's Lease, say)
        self._compact()
        return self._cut_watches()

    def _cut_watches(self) -> int:
        watchers = list(self._watchers)
        for w in watchers:
            w.cut()
        return len(watchers)

    # -------------------------------------------------------------------- storage

    def _commit(self, res: Resource, key: str, kind: str, obj: Obj, prev: Obj | None) -> Obj:
        """Write one change at the next resourceVersion; tell the watchers."""
        self._rv += 1
        _meta(obj)["resourceVersion"] = str(self._rv)
        store = self._data[res.store]
        if kind == "DELETED":
            store.pop(key, None)
        else:
            store[key] = obj
        ev = _Event(self._rv, res.store, kind, obj, prev)
        self._history.append(ev)
        while len(self._history) > self._history_size:
            self._floor = self._history.popleft().rv
        for w in list(self._watchers):
            if w.res.store == res.store:
                w.offer(ev)
        self._touch()
        return obj

    def _snapshot(self, res: Resource, rv: int) -> dict[str, Obj]:
        """The storage of ``res`` as it was at ``rv`` (rebuilt from the history)."""
        state = dict(self._data[res.store])
        for ev in reversed(self._history):
            if ev.rv <= rv:
                break
            if ev.store != res.store:
                continue
            key = self._key(res, ev.obj["metadata"].get("namespace"), ev.obj["metadata"]["name"])
            if ev.prev is None:
                state.pop(key, None)
            else:
                state[key] = ev.prev
        return state

    def _prepare_create(self, res: Resource, obj: Obj, *, keep_status: bool) -> Obj:
        """The server's fields of a new object (in ``res``'s representation)."""
        obj["kind"], obj["apiVersion"] = res.kind, res.group_version
        meta = _meta(obj)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now()
        meta.pop("deletionTimestamp", None)
        meta.pop("deletionGracePeriodSeconds", None)
        if res.generation:
            meta["generation"] = 1
        if res.status and not keep_status:
            obj.pop("status", None)
        if res.plural == "namespaces":
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta.get("name", "")
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            if not keep_status:
                obj["status"] = {"phase": "Active"}
        elif res.plural == "pods" and not keep_status:
            obj["status"] = {"phase": "Pending"}
        return obj

    def _prepare_update(
        self, res: Resource, cur: Obj, new: Obj, *, status: bool = False, take_status: bool = False
    ) -> Obj:
        """``new`` replacing ``cur`` (both in ``res``'s representation), server fields kept.
        ``status``: a write of the status subresource (only .status changes); ``take_status``:
        a test's apply that gives a status (stored as given)."""
        if status:  # the status subresource: only .status changes
            out = copy.deepcopy(cur)
            if new.get("status") is None:
                out.pop("status", None)
            else:
                out["status"] = copy.deepcopy(new["status"])
            return out
        out = copy.deepcopy(new)
        out["kind"], out["apiVersion"] = res.kind, res.group_version
        meta, old = _meta(out), cur["metadata"]
        for key in (
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "namespace",
            "name",
        ):
            if key in old:
                meta[key] = old[key]
            else:
                meta.pop(key, None)
        if res.status and not take_status:
            if "status" in cur:
                out["status"] = copy.deepcopy(cur["status"])
            else:
                out.pop("status", None)
        if res.plural == "namespaces":
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
        if res.generation:
            spec_only = res.generation == "spec"
            changed = _non_meta(out, spec_only=spec_only) != _non_meta(cur, spec_only=spec_only)
            if res.generation == "all":
                changed = changed or meta.get("labels") != old.get("labels")
            if changed:
                meta["generation"] = int(old.get("generation", 0)) + 1
        return out

    def _store_update(self, res: Resource, key: str, cur: Obj, new_view: Obj) -> Obj:
        """Store an update (no write when nothing changed); the stored result."""
        new = _from_view(res, new_view)
        _meta(new)["resourceVersion"] = cur["metadata"]["resourceVersion"]
        if new == cur:
            return cur
        meta = _meta(new)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            return self._commit(res, key, "DELETED", new, cur)
        return self._commit(res, key, "MODIFIED", new, cur)

    def _delete_object(self, res: Resource, key: str, options: Obj | None) -> Obj:
        cur = self._data[res.store][key]
        meta = cur["metadata"]
        pre = (options or {}).get("preconditions") or {}
        if pre.get("uid") and pre["uid"] != meta.get("uid"):
            raise conflict(
                res,
                meta["name"],
                f"Precondition failed: UID in precondition: "
                f"{pre['uid']}, UID in object meta: {meta.get('uid')}",
            )
        if pre.get("resourceVersion") and pre["resourceVersion"] != meta["resourceVersion"]:
            raise conflict(
                res,
                meta["name"],
                "Precondition failed: ResourceVersion in "
                f"precondition: {pre['resourceVersion']}, ResourceVersion in object "
                f"meta: {meta['resourceVersion']}",
            )
        if res.plural == "namespaces":  # Terminating, its objects go, then it goes
            terminating = copy.deepcopy(cur)
            terminating["metadata"].setdefault("deletionTimestamp", _now())
            terminating["metadata"].setdefault("deletionGracePeriodSeconds", 0)
            terminating.setdefault("status", {})["phase"] = "Terminating"
            if terminating != cur:
                cur = self._commit(res, key, "MODIFIED", terminating, cur)
            done: set[str] = set()
            for other in RESOURCES:
                if other.namespaced and other.store not in done:
                    done.add(other.store)
                    for k, o in sorted(self._data[other.store].items()):
                        if o["metadata"].get("namespace") == meta["name"]:
                            self._delete_object(other, k, None)
            gone = copy.deepcopy(cur)
            self._commit(res, key, "DELETED", gone, cur)
            return terminating
        if meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                return cur
            pending = copy.deepcopy(cur)
            pending["metadata"]["deletionTimestamp"] = _now()
            pending["metadata"]["deletionGracePeriodSeconds"] = 0
            return self._commit(res, key, "MODIFIED", pending, cur)
        return self._commit(res, key, "DELETED", copy.deepcopy(cur), cur)

    # --------------------------------------------------------------- HTTP: entry

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        query: dict[str, str] = {}
        for k, v in request.query.items():
            query.setdefault(k, v)
        entry = Request(request.method, request.path, request.method.lower(), "", None, None, query)
        with self._requests_lock:
            self._requests.append(entry)
        self._touch()
        try:
            try:
                target = self._parse(request.path, request.method, query)
            except ApiError:
                if not self._authenticated(request):  # authentication comes first
                    raise ApiError(401, "Unauthorized", "Unauthorized") from None
                raise
            if target is not None:
                entry.verb, entry.resource = target.verb, target.resource
                entry.namespace, entry.name = target.authz_namespace, target.authz_name
            response = await self._dispatch(request, target, query)
        except ApiError as e:
            response = self._status_response(e)
        entry.code = response.status
        return response

    def _status_response(self, e: ApiError) -> web.Response:
        return web.Response(
            body=json.dumps(e.status).encode(), status=e.code, content_type="application/json"
        )

    def _json(self, data: Any, status: int = 200) -> web.Response:
        return web.Response(
            body=json.dumps(data, separators=(",", ":")).encode(),
            status=status,
            content_type="application/json",
        )

    def _parse(self, path: str, method: str, query: dict[str, str]) -> _Target | None:
        """The apiserver's RequestInfo of a resource path; None for a non-resource path
        (discovery, version, health)."""
        parts = [p for p in path.split("/") if p]
        if len(parts) >= 2 and parts[0] == "api":
            group, version, rest = "", parts[1], parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return None
        if not rest:
            return None
        watch_path = rest[0] == "watch"
        if watch_path:
            rest = rest[1:]
        namespace: str | None = None
        if len(rest) > 2 and rest[0] == "namespaces" and rest[2] not in _NAMESPACE_SUBRESOURCES:
            namespace, rest = rest[1], rest[2:]
        res = _BY_PATH.get((group, version, rest[0])) if rest else None
        if res is None or len(rest) > 3:
            raise _server_not_found()
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if namespace is not None and not res.namespaced:
            raise _server_not_found()
        if res.namespaced and namespace is None and name is not None:
            raise _server_not_found()
        if sub is not None and (sub != "status" or not res.status or watch_path):
            raise _server_not_found()
        watching = watch_path or (method == "GET" and _query_bool(query.get("watch")))
        verb = {
            "GET": "watch" if watching else ("get" if name else "list"),
            "POST": "create",
            "PUT": "update",
            "PATCH": "patch",
            "DELETE": "delete" if name else "deletecollection",
        }.get(method, method.lower())
        authz_name = name
        if verb in ("list", "watch") and not name:
            pinned = re.search(
                r"(?:^|,)\s*metadata\.name\s*==?([^,]*)", query.get("fieldSelector", "")
            )
            if pinned:
                authz_name = _unescape(pinned.group(1).strip())
        authz_namespace = name if res.plural == "namespaces" and name else namespace
        return _Target(res, namespace, name, sub, verb, watching, authz_namespace, authz_name)

    async def _dispatch(
        self, request: web.BaseRequest, t: _Target | None, query: dict[str, str]
    ) -> web.StreamResponse:
        if not self._authenticated(request):
            raise ApiError(401, "Unauthorized", "Unauthorized")
        if t is None:
            return self._non_resource(request)
        res, namespace, name = t.res, t.namespace, t.name
        self._authorize(t)
        method = request.method
        dry_run = query.get("dryRun") == "All"
        if t.watch:
            if method != "GET":
                raise _method_not_allowed()
            return await self._watch(request, res, namespace, query, name)
        if name is None:
            if method == "GET":
                return self._json(await self._list(res, namespace, query))
            if res.namespaced and namespace is None:
                raise _method_not_allowed()  # across namespaces: list and watch only
            if method == "POST":
                body = await self._body(request)
                obj = self._create(res, namespace, body, dry_run=dry_run)
                return self._json(_to_view(res, obj), 201)
            if method == "DELETE":
                return self._json(self._delete_collection(res, namespace, query))
            raise _method_not_allowed()
        key = self._key(res, namespace, name)
        if method == "GET":
            await self._wait_for_rv(query.get("resourceVersion", ""))
            cur = self._data[res.store].get(key)
            if cur is None:
                raise not_found(res, name)
            return self._json(_to_view(res, cur))
        if method == "PUT":
            body = await self._body(request)
            obj, created = self._update(
                res, namespace, name, body, t.sub == "status", dry_run=dry_run
            )
            return self._json(_to_view(res, obj), 201 if created else 200)
        if method == "PATCH":
            raw = await request.read()
            ctype = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
            obj = self._patch(res, namespace, name, raw, ctype, t.sub == "status", dry_run=dry_run)
            return self._json(_to_view(res, obj))
        if method == "DELETE" and t.sub is None:
            raw = await request.read()
            options = self._decode(raw) if raw.strip() else {}
            return self._json(self._delete(res, key, name, options, query))
        raise _method_not_allowed()

    def _authenticated(self, request: web.BaseRequest) -> bool:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip(), self.token)

    def _authorize(self, t: _Target) -> None:
        with self._requests_lock:
            rules = list(self._forbidden)
        for verb, resource, namespace in rules:
            if verb not in ("*", t.verb) or resource not in ("*", t.resource):
                continue
            if namespace is not None and namespace != t.authz_namespace:
                continue
            res = t.res
            where = (
                f"in the namespace {json.dumps(t.authz_namespace)}"
                if t.authz_namespace
                else "at the cluster scope"
            )
            why = (
                f"User {json.dumps(self.user)} cannot {t.verb} resource "
                f"{json.dumps(t.resource)} in API group {json.dumps(res.group)} {where}"
            )
            subject = (
                f"{res.qualified} {json.dumps(t.authz_name)}" if t.authz_name else res.qualified
            )
            raise ApiError(
                403,
                "Forbidden",
                f"{subject} is forbidden: {why}",
                _details(res, t.authz_name or ""),
            )

    def _non_resource(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        if request.method != "GET":
            raise _method_not_allowed()
        if path in ("/healthz", "/livez", "/readyz"):
            return web.Response(text="ok")
        if path == "/version":
            return self._json(
                {
                    "major": "1",
                    "minor": K8S_VERSION.split(".")[1],
                    "emulationMajor": "1",
                    "emulationMinor": K8S_VERSION.split(".")[1],
                    "gitVersion": f"v{K8S_VERSION}.0",
                    "gitCommit": "0" * 40,
                    "gitTreeState": "clean",
                    "buildDate": "2025-08-27T00:00:00Z",
                    "goVersion": "go1.24.6",
                    "compiler": "gc",
                    "platform": "linux/amd64",
                }
            )
        if path == "/api":
            return self._json(
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{self.port}"}
                    ],
                }
            )
        groups: dict[str, list[str]] = {}
        for r in RESOURCES:
            if r.group:
                versions = groups.setdefault(r.group, [])
                if r.version not in versions:
                    versions.append(r.version)

        def group_doc(name: str) -> Obj:
            versions = [{"groupVersion": f"{name}/{v}", "version": v} for v in groups[name]]
            return {"name": name, "versions": versions, "preferredVersion": versions[0]}

        if path == "/apis":
            return self._json(
                {
                    "kind": "APIGroupList",
                    "apiVersion": "v1",
                    "groups": [group_doc(g) for g in groups],
                }
            )
        parts = path.split("/")[1:]
        if len(parts) == 2 and parts[0] == "apis" and parts[1] in groups:
            return self._json({"kind": "APIGroup", "apiVersion": "v1", **group_doc(parts[1])})
        gv = parts[1] if parts[0] == "api" and len(parts) == 2 else "/".join(parts[1:3])
        if parts[0] in ("api", "apis") and len(parts) == (2 if parts[0] == "api" else 3):
            resources: list[Obj] = []
            for r in RESOURCES:
                if r.group_version != gv:
                    continue
                entry: Obj = {
                    "name": r.plural,
                    "singularName": r.singular,
                    "namespaced": r.namespaced,
                    "kind": r.kind,
                    "verbs": _VERBS,
                }
                if r.short_names:
                    entry["shortNames"] = list(r.short_names)
                resources.append(entry)
                if r.status:
                    resources.append(
                        {
                            "name": f"{r.plural}/status",
                            "singularName": "",
                            "namespaced": r.namespaced,
                            "kind": r.kind,
                            "verbs": ["get", "patch", "update"],
                        }
                    )
            if resources:
                doc: Obj = {"kind": "APIResourceList", "groupVersion": gv, "resources": resources}
                if parts[0] == "apis":
                    doc["apiVersion"] = "v1"
                return self._json(doc)
        if parts[0] in ("api", "apis"):
            raise _server_not_found()
        return web.Response(status=404, text="404 page not found\n")

    async def _body(self, request: web.BaseRequest) -> Obj:
        body = self._decode(await request.read())
        if not isinstance(body, dict):
            raise bad_request("the request body is not a JSON object")
        return body

    def _decode(self, raw: bytes) -> Any:
        try:
            return json.loads(raw)
        except ValueError as e:
            raise bad_request(f"error decoding the request body: {e}") from e

    # ---------------------------------------------------------------- HTTP: reads

    async def _wait_for_rv(self, raw: str) -> None:
        """Not older than ``raw``: wait briefly for it, then 504 as the apiserver does."""
        if raw in ("", "0"):
            return
        want = self._parse_rv(raw)
        deadline = time.monotonic() + TOO_LARGE_WAIT
        while want > self._rv:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ApiError(
                    504,
                    "Timeout",
                    f"Timeout: Too large resource version: {want}, current: {self._rv}",
                    {
                        "causes": [
                            {
                                "reason": "ResourceVersionTooLarge",
                                "message": "Too large resource version",
                            }
                        ],
                        "retryAfterSeconds": 1,
                    },
                )
            assert self._changed is not None
            try:
                async with asyncio.timeout(remaining):
                    await self._changed.wait()
            except TimeoutError:
                pass

    def _parse_rv(self, raw: str) -> int:
        if not re.fullmatch(r"\d+", raw):
            raise bad_request(
                f'resourceVersion: Invalid value: "{raw}": '
                'strconv.ParseUint: parsing "{raw}": invalid syntax'
            )
        return int(raw)

    async def _list(self, res: Resource, namespace: str | None, query: dict[str, str]) -> Obj:
        labels = label_matcher(query.get("labelSelector", ""))
        fields = field_matcher(res, query.get("fieldSelector", ""))
        raw_rv = query.get("resourceVersion", "")
        match = query.get("resourceVersionMatch", "")
        limit_raw = query.get("limit", "") or "0"
        if not re.fullmatch(r"-?\d+", limit_raw):
            raise bad_request(f"limit: Invalid value: {json.dumps(limit_raw)}")
        limit = max(int(limit_raw), 0)
        token = query.get("continue", "")
        start = ""
        if match not in ("", "Exact", "NotOlderThan"):
            raise self._list_options_invalid(
                "resourceVersionMatch",
                f'Unsupported value: "{match}": supported values: "Exact", "NotOlderThan"',
            )
        if match and raw_rv == "":
            raise self._list_options_invalid(
                "resourceVersionMatch",
                "Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
            )
        if match == "Exact" and raw_rv == "0":
            raise self._list_options_invalid(
                "resourceVersionMatch",
                'Forbidden: resourceVersionMatch "exact" is forbidden for resourceVersion "0"',
            )
        if token:
            if raw_rv not in ("", "0"):
                raise bad_request("specifying resource version is not allowed when using continue")
            snap_rv, start = self._decode_continue(token)
            if snap_rv == -1:
                snap_rv = self._rv
            elif snap_rv < self._floor:
                raise expired(
                    CONTINUE_TOO_OLD, metadata={"continue": self._encode_continue(-1, start)}
                )
        elif raw_rv not in ("", "0") and (match == "Exact" or (match == "" and limit > 0)):
            snap_rv = self._parse_rv(raw_rv)
            if snap_rv > self._rv:
                await self._wait_for_rv(raw_rv)
            if snap_rv < self._floor:
                raise expired(LIST_TOO_OLD)
        else:
            await self._wait_for_rv(raw_rv)
            snap_rv = self._rv
        state = self._data[res.store] if snap_rv == self._rv else self._snapshot(res, snap_rv)
        keys = sorted(k for k in state if k > start) if start else sorted(state)
        items: list[Obj] = []
        more = 0
        for key in keys:
            obj = state[key]
            meta = obj["metadata"]
            if namespace is not None and meta.get("namespace") != namespace:
                continue
            if not labels(meta.get("labels") or {}):
                continue
            view = _to_view(res, obj)
            if not fields(view):
                continue
            if limit and len(items) == limit:
                more += 1
                continue
            del view["kind"], view["apiVersion"]
            items.append(view)
        list_meta: Obj = {"resourceVersion": str(snap_rv)}
        if more:
            last = self._key(
                res, items[-1]["metadata"].get("namespace"), items[-1]["metadata"]["name"]
            )
            list_meta["continue"] = self._encode_continue(snap_rv, last + "\x00")
            if not query.get("labelSelector") and not query.get("fieldSelector"):
                list_meta["remainingItemCount"] = more
        return {
            "kind": f"{res.kind}List",
            "apiVersion": res.group_version,
            "metadata": list_meta,
            "items": items,
        }

    def _list_options_invalid(self, field_name: str, message: str) -> ApiError:
        causes = [_cause("FieldValueInvalid", field_name, message)]
        return ApiError(
            422,
            "Invalid",
            f'ListOptions.meta.k8s.io "" is invalid: {field_name}: {message}',
            {"group": "meta.k8s.io", "kind": "ListOptions", "causes": causes},
        )

    def _encode_continue(self, rv: int, start: str) -> str:
        token = {"v": "meta.k8s.io/v1", "rv": rv, "start": start}
        data = json.dumps(token, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    def _decode_continue(self, token: str) -> tuple[int, str]:
        try:
            data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            if data.get("v") != "meta.k8s.io/v1":
                raise ValueError("unsupported version")
            return int(data["rv"]), str(data["start"])
        except (ValueError, KeyError, TypeError) as e:
            raise bad_request(f"continue key is not valid: {e}") from e

    async def _watch(
        self,
        request: web.BaseRequest,
        res: Resource,
        namespace: str | None,
        query: dict[str, str],
        pinned: str | None,
    ) -> web.StreamResponse:
        labels = label_matcher(query.get("labelSelector", ""))
        fields = field_matcher(res, query.get("fieldSelector", ""))
        if pinned:  # .../NAME?watch=1 or /watch/.../NAME: fieldSelector=metadata.name=NAME
            by_fields = fields

            def fields(obj: Obj) -> bool:
                return by_fields(obj) and obj["metadata"].get("name") == pinned

        raw_rv = query.get("resourceVersion", "")
        rv = 0 if raw_rv == "" else self._parse_rv(raw_rv)
        timeout_raw = query.get("timeoutSeconds", "")
        if timeout_raw and not re.fullmatch(r"\d+", timeout_raw):
            raise bad_request(f"timeoutSeconds: Invalid value: {json.dumps(timeout_raw)}")
        # without timeoutSeconds: the apiserver's --min-request-timeout (1800 s), randomized
        timeout = int(timeout_raw) if timeout_raw else 1800 * (1 + random.random())
        bookmarks = _query_bool(query.get("allowWatchBookmarks"))
        initial_raw = query.get("sendInitialEvents")
        initial = None if initial_raw is None else _query_bool(initial_raw)
        if initial is not None and (
            query.get("resourceVersionMatch") != "NotOlderThan" or not bookmarks
        ):
            raise self._list_options_invalid(
                "sendInitialEvents",
                "Forbidden: sendInitialEvents is forbidden for watch unless "
                "resourceVersionMatch is NotOlderThan and allowWatchBookmarks is true",
            )
        w = _Watcher(res, namespace, labels, fields, request)
        # everything up to registering the watcher is synchronous: no change can slip between
        # the initial state (or the replay) and the live events
        if initial is True or (initial is None and rv == 0):
            for key in sorted(self._data[res.store]):
                obj = self._data[res.store][key]
                if w.matches(obj):
                    w.queue.put_nowait(w.line("ADDED", obj))
            if initial:
                w.queue.put_nowait(w.bookmark(self._rv, initial_end=True))
        elif rv != 0 and rv < self._floor:
            status = expired(f"too old resource version: {rv} ({self._floor})").status
            w.queue.put_nowait(_line("ERROR", status))
            w.queue.put_nowait(_END)
        elif rv != 0:  # start at exact: what came after rv (a future rv waits for it)
            w.after = rv
            for ev in self._history:
                if ev.rv > rv and ev.store == res.store:
                    w.offer(ev)
        self._watchers.add(w)
        self._touch()
        try:
            return await self._stream(request, w, timeout, bookmarks)
        finally:
            self._watchers.discard(w)
            self._touch()

    async def _stream(
        self, request: web.BaseRequest, w: _Watcher, timeout: float, bookmarks: bool
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            status=200,
            headers={"Content-Type": "application/json", "Cache-Control": "no-cache, private"},
        )
        response.enable_chunked_encoding()
        await response.prepare(request)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        next_bookmark = loop.time() + self.bookmark_interval
        try:
            while True:
                now = loop.time()
                if now >= deadline:
                    break
                until = min(deadline, next_bookmark) if bookmarks else deadline
                try:
                    async with asyncio.timeout_at(until):
                        item = await w.queue.get()
                except TimeoutError:
                    item = None
                if item is _CUT:
                    if request.transport is not None:
                        request.transport.abort()
                    return response
                if item is _END:
                    break
                if item is not None:
                    await response.write(item)
                if bookmarks and loop.time() >= next_bookmark and w.queue.empty():
                    # the queue is empty: every event up to the current version has been sent
                    await response.write(w.bookmark(self._rv))
                    next_bookmark = loop.time() + self.bookmark_interval
            await response.write_eof()
        except ConnectionError:
            pass
        return response

    # --------------------------------------------------------------- HTTP: writes

    def _check_body(self, res: Resource, namespace: str | None, body: Obj) -> Obj:
        """Kind, apiVersion and namespace of a request body against the URL's."""
        kind, api_version = body.get("kind"), body.get("apiVersion")
        if (kind and kind != res.kind) or (api_version and api_version != res.group_version):
            raise bad_request(
                f"the API version in the data ({api_version}) does not match the "
                f"expected API version ({res.group_version})"
                if api_version != res.group_version
                else f"the kind in the data ({kind}) does not match the expected kind ({res.kind})"
            )
        body = _drop_nulls(body)  # a JSON null decodes to the zero value: absent
        body["kind"], body["apiVersion"] = res.kind, res.group_version
        meta = _meta(body)
        if res.namespaced:
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise bad_request(
                    "the namespace of the provided object does not match the "
                    "namespace sent on the request"
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        return body

    def _validated(self, res: Resource, obj: Obj) -> Obj:
        causes = _check(res, obj)
        if causes:
            raise invalid(res, str(obj.get("metadata", {}).get("name") or ""), causes)
        return obj

    def _create(self, res: Resource, namespace: str | None, body: Obj, *, dry_run: bool) -> Obj:
        body = self._check_body(res, namespace, body)
        meta = _meta(body)
        if meta.get("resourceVersion"):
            raise ApiError(500, "", "resourceVersion should not be set on objects to be created")
        generate = meta.get("generateName") if not meta.get("name") else None
        for _attempt in range(8):  # the apiserver retries a generated name that clashes
            obj = copy.deepcopy(body)
            if generate:
                alphabet = "bcdfghjklmnpqrstvwxz2456789"
                _meta(obj)["name"] = generate[:58] + "".join(random.choices(alphabet, k=5))
            obj = self._validated(res, self._prepare_create(res, obj, keep_status=False))
            key = self._key(res, namespace, obj["metadata"]["name"])
            if key not in self._data[res.store]:
                break
            if not generate:
                raise already_exists(res, obj["metadata"]["name"])
        else:
            raise already_exists(res, obj["metadata"]["name"])
        if dry_run:
            return _from_view(res, obj)
        return self._commit(res, key, "ADDED", _from_view(res, obj), None)

    def _update(
        self,
        res: Resource,
        namespace: str | None,
        name: str,
        body: Obj,
        status: bool,
        *,
        dry_run: bool,
    ) -> tuple[Obj, bool]:
        body = self._check_body(res, namespace, body)
        meta = _meta(body)
        if meta.get("name") and meta["name"] != name:
            raise bad_request(
                f"the name of the object ({meta['name']}) does not match the name "
                f"on the URL ({name})"
            )
        meta["name"] = name
        key = self._key(res, namespace, name)
        cur = self._data[res.store].get(key)
        if cur is None:
            if status or not res.create_on_update:
                raise not_found(res, name)
            meta.pop("resourceVersion", None)
            return self._create(res, namespace, body, dry_run=dry_run), True
        rv = meta.get("resourceVersion")
        if not rv and not res.unconditional_update:
            message = "Invalid value: 0: must be specified for an update"
            cause = _cause("FieldValueInvalid", "metadata.resourceVersion", message)
            raise invalid(res, name, [cause], by_resource=True)
        uid = meta.get("uid")
        if uid and uid != cur["metadata"].get("uid"):
            raise conflict(
                res,
                name,
                f"Precondition failed: UID in precondition: {uid}, UID in "
                f"object meta: {cur['metadata'].get('uid')}",
            )
        if rv and rv != cur["metadata"]["resourceVersion"]:
            raise conflict(res, name, OPTIMISTIC_LOCK)
        cur_view = _to_view(res, cur)
        new = self._validated(res, self._prepare_update(res, cur_view, body, status=status))
        if dry_run:
            return _from_view(res, new), False
        return self._store_update(res, key, cur, new), False

    def _patch(
        self,
        res: Resource,
        namespace: str | None,
        name: str,
        raw: bytes,
        ctype: str,
        status: bool,
        *,
        dry_run: bool,
    ) -> Obj:
        if ctype not in PATCH_TYPES:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - accepted media "
                "types include: " + ", ".join(PATCH_TYPES),
            )
        patch = self._decode(raw)
        key = self._key(res, namespace, name)
        cur = self._data[res.store].get(key)
        if cur is None:
            raise not_found(res, name)
        cur_view = _to_view(res, cur)
        if ctype == "application/json-patch+json":
            if not isinstance(patch, list):
                raise bad_request("the JSON patch is not a list of operations")
            try:
                new = json_patch(cur_view, patch)
            except ValueError as e:
                raise ApiError(422, "Invalid", str(e)) from e
        else:
            if not isinstance(patch, dict):
                raise bad_request("the merge patch is not a JSON object")
            if ctype == "application/strategic-merge-patch+json":
                patch = strip_directives(patch)
            new = merge_patch(cur_view, patch)
        if not isinstance(new, dict):
            raise bad_request("the patched document is not an object")
        meta = _meta(new)
        if meta.get("name") != name or (res.namespaced and meta.get("namespace") != namespace):
            raise bad_request(
                "the name or namespace of the patched object does not match the request's"
            )
        if meta.get("resourceVersion") != cur["metadata"]["resourceVersion"]:
            raise conflict(res, name, OPTIMISTIC_LOCK)  # a patch may carry a precondition
        new = self._validated(res, self._prepare_update(res, cur_view, new, status=status))
        if dry_run:
            return _from_view(res, new)
        return self._store_update(res, key, cur, new)

    def _delete(
        self, res: Resource, key: str, name: str, options: Any, query: dict[str, str]
    ) -> Obj:
        cur = self._data[res.store].get(key)
        if cur is None:
            raise not_found(res, name)
        if query.get("dryRun") == "All" or (
            isinstance(options, dict) and options.get("dryRun") == ["All"]
        ):
            return _to_view(res, cur)
        last = self._delete_object(res, key, options if isinstance(options, dict) else None)
        if res.returns_deleted or last["metadata"].get("deletionTimestamp"):
            return _to_view(res, last)
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {
                k: v for k, v in _details(res, name, uid=last["metadata"].get("uid")).items() if v
            },
        }

    def _delete_collection(
        self, res: Resource, namespace: str | None, query: dict[str, str]
    ) -> Obj:
        labels = label_matcher(query.get("labelSelector", ""))
        fields = field_matcher(res, query.get("fieldSelector", ""))
        items: list[Obj] = []
        for key, obj in sorted(self._data[res.store].items()):
            meta = obj["metadata"]
            if namespace is not None and meta.get("namespace") != namespace:
                continue
            if not labels(meta.get("labels") or {}) or not fields(_to_view(res, obj)):
                continue
            view = _to_view(res, self._delete_object(res, key, None))
            del view["kind"], view["apiVersion"]
            items.append(view)
        return {
            "kind": f"{res.kind}List",
            "apiVersion": res.group_version,
            "metadata": {"resourceVersion": str(self._rv)},
            "items": items,
        }
