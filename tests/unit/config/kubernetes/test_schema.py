"""Manifests checked against the official Kubernetes schemas (kubernetes-validate, strict):
every problem of an object at once, each at its key with file and line, unknown fields with
"did you mean", v1beta1 Ingresses at their own keys."""

from __future__ import annotations

import copy
import importlib.resources
import shutil
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes_validate import utils as kv_utils

from tests.support.procs import ROOT
from wslb.config.kubernetes import schema
from wslb.config.kubernetes.objects import KINDS, KObject, load_objects
from wslb.config.kubernetes.schema import KUBERNETES_VERSION, schema_version, shape_errors
from wslb.errors import ConfigIssue

# the seeds as published; tests/fixtures holds the same files for a checkout without ../shared
SEED_DIRS = [ROOT / "tests" / "fixtures", ROOT.parent / "shared" / "fixtures"]
SEEDS = ("seed-ingress.yaml", "seed-service.yaml")


def load(tmp_path: Path, text: str) -> tuple[list[KObject], list[ConfigIssue]]:
    f = tmp_path / "m.yaml"
    f.write_text(textwrap.dedent(text).lstrip("\n"))
    return load_objects([str(f)])


def errors(issues: list[ConfigIssue]) -> list[tuple[int | None, str, str]]:
    return [(i.line, i.key, i.message) for i in issues if i.severity == "error"]


INGRESS = """
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: web
  namespace: app
  anotations:
    nginx.ingress.kubernetes.io/affinity: cookie
spec:
  rules:
  - host: app.example.com
    http:
      paths:
      - path: /
        pathTyp: Prefix
        backend:
          service: {name: api, port: {number: 80}}
"""


def test_typos_are_unknown_fields_at_their_key_with_file_and_line(tmp_path: Path) -> None:
    objects, issues = load(tmp_path, INGRESS)
    assert objects == []  # an object with shape errors is dropped
    assert all(i.source == str(tmp_path / "m.yaml") for i in issues)
    assert errors(issues) == [
        (
            6,
            "metadata.anotations",
            'Ingress web: unknown field "anotations" (did you mean "annotations"?)',
        ),
        # pathTyp is not pathType, which v1 requires: missing, at the line of its path
        (
            13,
            "spec.rules[0].http.paths[0].pathType",
            'Ingress web: missing required field "pathType"',
        ),
        (
            14,
            "spec.rules[0].http.paths[0].pathTyp",
            'Ingress web: unknown field "pathTyp" (did you mean "pathType"?)',
        ),
    ]
    (typo, *_) = [i for i in issues if i.severity == "error"]
    assert str(typo).startswith(f"{tmp_path / 'm.yaml'}:6: metadata.anotations: error: ")


def test_every_problem_of_an_object_at_once_in_document_order(tmp_path: Path) -> None:
    _, issues = load(
        tmp_path,
        """
        apiVersion: v1
        kind: Service
        metadata:
          name: api
          labels: {tier: 3}
        spec:
          type: [LoadBalancer]
          sessionAfinity: ClientIP
          ports:
          - name: web
            port: 70000
            targetPort: [8080]
          - name: admin
          - null
        """,
    )
    assert errors(issues) == [
        (5, "metadata.labels.tier", "Service api: must be a string, not an integer"),
        (7, "spec.type", "Service api: must be a string, not a list"),
        (
            8,
            "spec.sessionAfinity",
            'Service api: unknown field "sessionAfinity" (did you mean "sessionAffinity"?)',
        ),
        (11, "spec.ports[0].port", "Service api: must be a port number (1-65535), not 70000"),
        (
            12,
            "spec.ports[0].targetPort",
            "Service api: must be a port number (1-65535) or a name, not [8080]",
        ),
        (13, "spec.ports[1].port", 'Service api: missing required field "port"'),
        (14, "spec.ports[2]", "Service api: must be a mapping, not null"),
    ]


def service(**port: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "api"},
        "spec": {"ports": [port]},
    }


@pytest.mark.parametrize(
    ("port", "key", "message"),
    [
        ({"port": "80"}, "port", "must be a port number (1-65535), not '80'"),
        ({"port": 0}, "port", "must be a port number (1-65535), not 0"),
        ({"port": 65536}, "port", "must be a port number (1-65535), not 65536"),
        ({"port": -1}, "port", "must be a port number (1-65535), not -1"),
        ({"port": 80.0}, "port", "must be a port number (1-65535), not 80.0"),
        ({"port": True}, "port", "must be a port number (1-65535), not true"),
        ({"port": None}, "port", "must be a port number (1-65535), not null"),
        ({}, "port", 'missing required field "port"'),
        ({"port": 80, "targetPort": 0}, "targetPort", "must be a port number (1-65535) or a name, not 0"),
        ({"port": 80, "targetPort": 1.5}, "targetPort", "must be a port number (1-65535) or a name, not 1.5"),
        ({"port": 80, "name": 5}, "name", "must be a string, not an integer"),
        ({"port": 80, "protocol": {"tcp": 1}}, "protocol", "must be a string, not a mapping"),
        ({"port": 80, "appProtocl": "h2c"}, "appProtocl", 'unknown field "appProtocl" (did you mean "appProtocol"?)'),
    ],
)  # fmt: skip
def test_wrong_types_missing_fields_and_ports_out_of_range(
    port: dict[str, Any], key: str, message: str
) -> None:
    assert shape_errors("Service", service(**port)) == [(("spec", "ports", 0, key), message)]


def test_null_where_kubernetes_takes_it_and_int_or_string(tmp_path: Path) -> None:
    for target in (8080, "http", None):
        assert shape_errors("Service", service(port=80, targetPort=target)) == []
    objects, issues = load(
        tmp_path,
        """
        apiVersion: networking.k8s.io/v1
        kind: Ingress
        metadata:
          name: web
          labels: null
          annotations: {nginx.ingress.kubernetes.io/affinity: null}
        spec:
          ingressClassName: null
          tls: null
          defaultBackend:
            service: {name: api, port: {name: http, number: null}}
          rules:
          - host: null
            http:
              paths:
              - {path: null, pathType: Exact, backend: {service: {name: api, port: null}}}
        ---
        apiVersion: v1
        kind: Secret
        metadata: {name: tls}
        type: kubernetes.io/tls
        data: {tls.crt: null}
        """,
    )
    assert errors(issues) == []
    assert [o.kind for o in objects] == ["Ingress", "Secret"]
    assert objects[0].annotations == {"nginx.ingress.kubernetes.io/affinity": ""}


def test_yaml_timestamps_are_not_strings() -> None:
    svc = service(port=80)
    svc["metadata"]["labels"] = {"built": yaml.safe_load("2024-05-01")}
    ((path, message),) = shape_errors("Service", svc)
    assert path == ("metadata", "labels", "built")
    assert message.startswith("must be a string, not a timestamp")


@pytest.mark.parametrize("where", SEED_DIRS, ids=["tests-fixtures", "shared-fixtures"])
def test_the_seed_fixtures_are_accepted_as_they_are(where: Path, tmp_path: Path) -> None:
    if not where.is_dir():
        pytest.skip(f"{where} is not there")
    for name in SEEDS:
        shutil.copy(where / name, tmp_path / name)
        assert (tmp_path / name).read_bytes() == (where / name).read_bytes()
    objects, issues = load_objects([str(tmp_path / n) for n in SEEDS])
    assert errors(issues) == []
    assert [(o.kind, o.api_version, o.ref) for o in objects] == [
        ("Ingress", "extensions/v1beta1", "vuepilot/vuepilot-node"),
        ("Service", "v1", "ingress-nginx/ingress-nginx"),
    ]
    # the object the translator sees is the file's, not the v1 shape it was checked in
    assert objects[0].get("spec", "rules", 0, "http", "paths", 0, "backend") == {
        "serviceName": "vuepilot-node",
        "servicePort": 8080,
    }


V1BETA1 = """
apiVersion: {api}
kind: Ingress
metadata:
  name: old
spec:
  backend:
    servicePort: http
  defaultBackend: {{serviceName: x, servicePort: 80}}
  rules:
  - http:
      paths:
      - path: /
        backend:
          serviceName: 7
          servicePort: 70000
          service: {{name: x}}
      - path: /b
        pathType: Prefx
        backend: {{serviceName: b, servicePort: [80]}}
      - backend: {{serviceNme: c, servicePort: web}}
"""


@pytest.mark.parametrize("api", ["extensions/v1beta1", "networking.k8s.io/v1beta1"])
def test_v1beta1_ingress_problems_at_their_own_keys(api: str, tmp_path: Path) -> None:
    objects, issues = load(tmp_path, V1BETA1.format(api=api))
    assert objects == []
    paths = "spec.rules[0].http.paths"
    found = [
        (line, key, msg.split(" (did you mean")[0] if key.endswith(".service") else msg)
        for line, key, msg in errors(issues)
    ]
    assert found == [
        (6, "spec.backend.serviceName", 'Ingress old: missing required field "serviceName"'),
        (
            8,
            "spec.defaultBackend",
            'Ingress old: unknown field "defaultBackend" (did you mean "backend"?)',
        ),
        (14, f"{paths}[0].backend.serviceName", "Ingress old: must be a string, not an integer"),
        (
            15,
            f"{paths}[0].backend.servicePort",
            "Ingress old: must be a port number (1-65535) or a name, not 70000",
        ),
        (
            16,
            f"{paths}[0].backend.service",
            'Ingress old: unknown field "service"',  # (did you mean serviceName or servicePort)
        ),
        (
            19,
            f"{paths}[1].backend.servicePort",
            "Ingress old: must be a port number (1-65535) or a name, not [80]",
        ),
        (20, f"{paths}[2].backend.serviceName", 'Ingress old: missing required field "serviceName"'),
        (
            20,
            f"{paths}[2].backend.serviceNme",
            'Ingress old: unknown field "serviceNme" (did you mean "serviceName"?)',
        ),
    ]  # fmt: skip
    # pathType is not an enum in the schemas: "Prefx" is the translator's to refuse


def test_v1beta1_path_type_defaults_and_the_object_is_left_as_it_is() -> None:
    ing: dict[str, Any] = yaml.safe_load((SEED_DIRS[0] / "seed-ingress.yaml").read_text())
    path = ing["spec"]["rules"][0]["http"]["paths"][0]
    assert "pathType" not in path and shape_errors("Ingress", ing) == []
    path["pathType"] = None  # null: the default too
    assert shape_errors("Ingress", ing) == []
    bad = copy.deepcopy(ing)
    bad["spec"]["rules"][0]["http"]["paths"][0]["backend"]["servicePort"] = "http"
    bad["spec"]["rules"][0]["http"]["paths"][0]["pathTyp"] = "Prefix"
    before = copy.deepcopy(bad)
    assert shape_errors("Ingress", bad) == [
        (
            ("spec", "rules", 0, "http", "paths", 0, "pathTyp"),
            'unknown field "pathTyp" (did you mean "pathType"?)',
        )
    ]
    assert bad == before  # checked in the v1 shape, converted on a copy


MINIMAL: dict[str, dict[str, Any]] = {
    "Ingress": {"apiVersion": "networking.k8s.io/v1", "spec": {"ingressClassName": "nginx"}},
    "Service": {"apiVersion": "v1", "spec": {"ports": [{"port": 80}]}},
    "EndpointSlice": {"apiVersion": "discovery.k8s.io/v1", "addressType": "IPv4"},
    "Endpoints": {"apiVersion": "v1", "subsets": [{"addresses": [{"ip": "10.0.0.1"}]}]},
    "Secret": {"apiVersion": "v1", "type": "kubernetes.io/tls", "data": {}},
    "ConfigMap": {"apiVersion": "v1", "data": {"use-forwarded-headers": "true"}},
    "IngressClass": {
        "apiVersion": "networking.k8s.io/v1",
        "spec": {"controller": "k8s.io/ingress-nginx"},
    },
}


def minimal(kind: str) -> dict[str, Any]:
    return {"kind": kind, "metadata": {"name": "x", "namespace": "ns"}, **MINIMAL[kind]}


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_wslb_reads_is_checked(kind: str) -> None:
    assert kind in MINIMAL, "a kind wslb reads needs a case here"
    assert shape_errors(kind, minimal(kind)) == []
    typo = minimal(kind)
    typo["metadata"]["namespce"] = "ns"
    assert shape_errors(kind, typo) == [
        (("metadata", "namespce"), 'unknown field "namespce" (did you mean "namespace"?)')
    ]
    # its validator has the quick check (a valid object never goes through iter_errors)
    version = schema_version(kind, typo["apiVersion"])
    assert version is not None and schema._validator(version, kind, typo["apiVersion"])[1]


def test_configmap_and_ingressclass_are_read() -> None:
    assert {"ConfigMap", "IngressClass"} <= set(KINDS)


def test_required_fields_of_the_other_kinds() -> None:
    es = minimal("EndpointSlice")
    del es["addressType"]
    es["endpoints"] = [{"conditions": {"ready": "yes"}}]
    assert shape_errors("EndpointSlice", es) == [
        (("addressType",), 'missing required field "addressType"'),
        (("endpoints", 0, "addresses"), 'missing required field "addresses"'),
        (("endpoints", 0, "conditions", "ready"), "must be true or false, not a string"),
    ]
    ep = minimal("Endpoints")
    ep["subsets"][0]["ports"] = [{"port": 99999}]
    assert shape_errors("Endpoints", ep) == [
        (("subsets", 0, "ports", 0, "port"), "must be a port number (1-65535), not 99999")
    ]


def test_kinds_without_a_schema_and_unknown_api_versions(tmp_path: Path) -> None:
    assert shape_errors("Widget", {"apiVersion": "example.com/v1", "anything": 1}) == []
    objects, issues = load(
        tmp_path,
        """
        apiVersion: example.com/v1
        kind: Widget
        metadata: {name: w}
        ---
        apiVersion: networking.k8s.io/v2
        kind: Ingress
        metadata: {name: web}
        ---
        kind: Service
        metadata: {name: api}
        """,
    )
    assert objects == []
    assert [(i.line, i.key, i.severity) for i in issues] == [
        (2, "kind", "info"),  # as before: Widget objects are not used by wslb
        (5, "apiVersion", "error"),
        (9, "apiVersion", "error"),
    ]
    assert issues[1].message == (
        "Ingress web: Ingress is not served as 'networking.k8s.io/v2' by Kubernetes "
        f"1.25 to {KUBERNETES_VERSION}; Kubernetes {KUBERNETES_VERSION} serves Ingress as "
        "networking.k8s.io/v1"
    )
    assert issues[2].message == 'Service api: missing required field "apiVersion"'


def _shipped_with(kind: str, api: str) -> list[str]:
    root = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema"
    name = schema._file(kind, api)
    return [
        v
        for v in sorted(set(kv_utils.all_versions()), key=schema._minor_key)
        if (root / f"v{v}-local-strict" / name).is_file()
    ]


def test_the_kubernetes_version_and_the_fallback_for_removed_api_versions() -> None:
    assert KUBERNETES_VERSION in {kv_utils.major_minor(v) for v in kv_utils.all_versions()}
    assert schema_version("Ingress", "networking.k8s.io/v1") == f"{KUBERNETES_VERSION}.0"
    # autoscaling/v2beta2 was removed in 1.26: checked with the newest schemas that have it
    shipped = _shipped_with("HorizontalPodAutoscaler", "autoscaling/v2beta2")
    assert (
        shipped
        and schema_version("HorizontalPodAutoscaler", "autoscaling/v2beta2") == (shipped[-1])
    )
    hpa = {"apiVersion": "autoscaling/v2beta2", "kind": "HorizontalPodAutoscaler", "spek": {}}
    assert shape_errors("HorizontalPodAutoscaler", hpa) == [
        (("spek",), 'unknown field "spek" (did you mean "spec"?)')
    ]
    # no shipped version has the v1beta1 Ingresses (removed in 1.22): they are converted
    assert _shipped_with("Ingress", "extensions/v1beta1") == []
    assert schema_version("Ingress", "networking.k8s.io/v1beta1") is None


# ------------------------------------------------- the quick check agrees with jsonschema

SEED_INGRESS = yaml.safe_load((SEED_DIRS[0] / "seed-ingress.yaml").read_text())
SEED_SERVICE = yaml.safe_load((SEED_DIRS[0] / "seed-service.yaml").read_text())
V1_INGRESS = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "Ingress",
    "metadata": {"name": "web", "annotations": {"a": "b"}},
    "spec": {
        "defaultBackend": {"service": {"name": "x", "port": {"name": "http"}}},
        "tls": [{"hosts": ["a.example"], "secretName": "s"}],
        "rules": [
            {
                "host": "a.example",
                "http": {
                    "paths": [
                        {
                            "path": "/",
                            "pathType": "Prefix",
                            "backend": {"service": {"name": "x", "port": {"number": 80}}},
                        }
                    ]
                },
            }
        ],
    },
}
SLICE = {
    "apiVersion": "discovery.k8s.io/v1",
    "kind": "EndpointSlice",
    "metadata": {"name": "s", "labels": {"kubernetes.io/service-name": "x"}},
    "addressType": "IPv4",
    "ports": [{"name": "http", "port": 8080}],
    "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": True}}],
}
ANY = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**40), 2**40),
        st.floats(allow_nan=False),
        st.text(max_size=5),
        st.sampled_from(["80", "http", "Prefix", "v1", "name", "port", "service"]),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=2),
        st.dictionaries(
            st.sampled_from(["name", "port", "number", "service", "x", "ip", "paths"]),
            inner,
            max_size=2,
        ),
    ),
    max_leaves=4,
)


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*path, i))
    return out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["Ingress", "Service", "EndpointSlice"]),
    st.lists(st.tuples(st.integers(0, 10**6), ANY, st.booleans()), max_size=3),
)
def test_the_quick_check_agrees_with_jsonschema(
    kind: str, edits: list[tuple[int, Any, bool]]
) -> None:
    """A valid object is answered by the compiled check alone: it must say "valid" exactly
    when jsonschema finds no error."""
    obj = copy.deepcopy(
        {"Ingress": V1_INGRESS, "Service": SEED_SERVICE, "EndpointSlice": SLICE}[kind]
    )
    for pick, value, delete in edits:
        paths = [p for p in _paths(obj) if p and p[0] not in ("apiVersion", "kind")]
        if not paths:
            break
        path = paths[pick % len(paths)]
        node = obj
        for part in path[:-1]:
            node = node[part]
        if delete and isinstance(node, dict):
            del node[path[-1]]
        else:
            node[path[-1]] = value
    version = schema_version(kind, obj["apiVersion"])
    assert version is not None
    validator, quick = schema._validator(version, kind, obj["apiVersion"])
    assert quick is not None
    assert quick(obj) == (next(validator.iter_errors(obj), None) is None)
    assert (shape_errors(kind, obj) == []) == quick(obj)
