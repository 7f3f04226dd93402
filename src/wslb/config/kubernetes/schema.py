"""The shape of the parts of Kubernetes objects that wslb reads, as the API server's OpenAPI
schema has them (networking.k8s.io/v1 and extensions/v1beta1 Ingress, v1 Service, Secret,
Endpoints, discovery.k8s.io/v1 EndpointSlice).

The API server refuses an object of the wrong shape, so ``kubectl apply`` never stores one; a
manifest file can hold anything. Each object is checked here when it is read, every mismatch
becomes an error with its file, line and key, and the translator only ever sees objects of the
right shape. Fields wslb does not read are not checked (``extra="allow"``); ``null`` is accepted
wherever Kubernetes accepts it.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

Port = Annotated[StrictInt, Field(ge=1, le=65535)]
PortOrName = Port | StrictStr


class _Obj(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Metadata(_Obj):
    name: StrictStr | None = None
    namespace: StrictStr | None = None
    labels: dict[str, StrictStr | None] | None = None


class _ServiceBackendPort(_Obj):
    name: StrictStr | None = None
    number: Port | None = None


class _ServiceBackend(_Obj):
    name: StrictStr | None = None
    port: _ServiceBackendPort | None = None


class _IngressBackend(_Obj):
    service: _ServiceBackend | None = None
    resource: dict[str, Any] | None = None
    serviceName: StrictStr | None = None  # extensions/v1beta1
    servicePort: PortOrName | None = None


class _Path(_Obj):
    path: StrictStr | None = None
    pathType: StrictStr | None = None
    backend: _IngressBackend | None = None


class _HTTPRule(_Obj):
    paths: list[_Path] | None = None


class _Rule(_Obj):
    host: StrictStr | None = None
    http: _HTTPRule | None = None


class _TLS(_Obj):
    hosts: list[StrictStr] | None = None
    secretName: StrictStr | None = None


class _IngressSpec(_Obj):
    ingressClassName: StrictStr | None = None
    defaultBackend: _IngressBackend | None = None
    backend: _IngressBackend | None = None
    rules: list[_Rule] | None = None
    tls: list[_TLS] | None = None


class _Ingress(_Obj):
    metadata: _Metadata | None = None
    spec: _IngressSpec | None = None


class _ServicePort(_Obj):
    name: StrictStr | None = None
    port: Port | None = None
    targetPort: PortOrName | None = None
    protocol: StrictStr | None = None


class _ServiceSpec(_Obj):
    type: StrictStr | None = None
    ports: list[_ServicePort] | None = None


class _Service(_Obj):
    metadata: _Metadata | None = None
    spec: _ServiceSpec | None = None


class _Secret(_Obj):
    metadata: _Metadata | None = None
    type: StrictStr | None = None
    data: dict[str, StrictStr | None] | None = None
    stringData: dict[str, StrictStr | None] | None = None


class _EndpointPort(_Obj):
    name: StrictStr | None = None
    port: Port | None = None


class _Conditions(_Obj):
    ready: StrictBool | None = None


class _Endpoint(_Obj):
    addresses: list[StrictStr] | None = None
    conditions: _Conditions | None = None


class _EndpointSlice(_Obj):
    metadata: _Metadata | None = None
    ports: list[_EndpointPort] | None = None
    endpoints: list[_Endpoint] | None = None


class _Address(_Obj):
    ip: StrictStr | None = None


class _Subset(_Obj):
    addresses: list[_Address] | None = None
    ports: list[_EndpointPort] | None = None


class _Endpoints(_Obj):
    metadata: _Metadata | None = None
    subsets: list[_Subset] | None = None


SCHEMAS: dict[str, type[BaseModel]] = {
    "Ingress": _Ingress,
    "Service": _Service,
    "Secret": _Secret,
    "EndpointSlice": _EndpointSlice,
    "Endpoints": _Endpoints,
}


def shape_errors(kind: str, data: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    """(path, message) for every field of ``data`` that has not the shape Kubernetes gives it."""
    schema = SCHEMAS.get(kind)
    if schema is None:
        return []
    try:
        schema.model_validate(data)
    except ValidationError as exc:
        found: dict[tuple[str | int, ...], str] = {}
        for e in exc.errors():
            loc = tuple(e["loc"])
            if loc and loc[-1] in ("constrained-int", "int", "str"):  # a port-or-name field
                found[loc[:-1]] = f"must be a port number (1-65535) or a name, not {e['input']!r}"
            else:
                found.setdefault(loc, _message(e))
        return list(found.items())
    return []


_TYPES = {
    "string_type": "a string",
    "int_type": "an integer",
    "bool_type": "true or false",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "list_type": "a list",
}


def _message(err: Any) -> str:
    if err["type"] in ("greater_than_equal", "less_than_equal"):  # only ports are bounded
        return f"must be a port number (1-65535), not {err['input']!r}"
    expected = _TYPES.get(err["type"])
    if expected is None:
        return str(err["msg"])
    return f"must be {expected}, not {_type(err['input'])}"


def _type(value: Any) -> str:
    """The YAML name of a value's type."""
    if value is None:
        return "null"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )
