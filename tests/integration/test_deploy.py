"""The Helm chart (deploy/helm/wslb) and the manifests rendered from it (deploy/manifests):
rendered as `helm template` renders (tools/helm-template: Go's text/template with sprig, the
engine and functions helm uses), every object valid for the last three Kubernetes minors, the
RBAC exactly what the controller asks for, the Deployment's flags what `wslb controller`
takes, and the DigitalOcean annotations wired to what wslb listens for."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.integration.test_controller import (
    WAIT,
    Controller,
    configmap,
    ingress,
    ingress_class,
    namespace,
    service,
)
from tests.support.kubeapi import KubeAPI
from tests.support.procs import ROOT, scaled
from wslb.cli import _parser
from wslb.config.kubernetes.objects import load_objects
from wslb.config.kubernetes.translate import ManifestOptions, translate
from wslb.controller import rbac

CHART = ROOT / "deploy" / "helm" / "wslb"
MANIFESTS = ROOT / "deploy" / "manifests"
FULL = CHART / "ci" / "full-values.yaml"
KUBE_VERSIONS = ("1.35.0", "1.36.0", "1.37.0")  # the last three minors kubernetes-validate has
CUSTOM = {"ServiceMonitor"}  # a CRD's kind: kubernetes-validate has no schema for it


@cache
def renderer() -> str:
    out = subprocess.run(
        ["sh", str(ROOT / "tools" / "helm-template" / "build.sh")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def render(*args: str, kube: str = "1.37.0", namespace: str = "ingress") -> list[dict[str, Any]]:
    """``helm template wslb deploy/helm/wslb -n NAMESPACE ARGS``, as objects."""
    out = subprocess.run(
        [renderer(), "--namespace", namespace, "--kube-version", kube, *args, "wslb", str(CHART)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def by_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    (obj,) = [o for o in by_kind(objs, kind) if name in (None, o["metadata"]["name"])]
    return obj


VALUES = {"default": (), "full": ("-f", str(FULL))}


@pytest.mark.parametrize("values", sorted(VALUES))
@pytest.mark.parametrize("kube", KUBE_VERSIONS)
def test_every_rendered_object_validates(values: str, kube: str) -> None:
    objs = render(*VALUES[values], kube=kube)
    kinds = {o["kind"] for o in objs}
    want = {
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "Secret",
        "Service",
        "Deployment",
        "IngressClass",
        "PodDisruptionBudget",
    }
    if values == "full":
        want |= {"HorizontalPodAutoscaler", "ServiceMonitor"}
    assert kinds == want
    for obj in objs:
        if obj["kind"] in CUSTOM:
            assert obj["apiVersion"] == "monitoring.coreos.com/v1" and obj["spec"]["endpoints"]
            continue
        kubernetes_validate.validate(obj, kube, strict=True)


def _container(objs: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def _args(container: dict[str, Any]) -> list[str]:
    return [a.replace("$(POD_NAMESPACE)", "ingress") for a in container["args"]]


@pytest.mark.parametrize("values", sorted(VALUES))
def test_the_deployment_runs_wslb_as_the_chart_says(values: str) -> None:
    """Its flags are wslb's; probes on the probe port; the grace above delay + drain."""
    objs = render(*VALUES[values])
    values_doc = yaml.safe_load((CHART / "values.yaml").read_text())
    if values == "full":
        for key, value in yaml.safe_load(FULL.read_text())["controller"].items():
            values_doc["controller"][key] = value
    c = values_doc["controller"]
    container = _container(objs)
    args = _parser().parse_args(_args(container))  # exits (fails) on a flag wslb lacks
    assert args.command == "controller"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert args.probes == ("0.0.0.0", ports["probes"])
    assert args.port_map == {80: ports["http"], 443: ports["https"]}
    assert args.shutdown_delay == c["shutdownDelay"]
    assert args.publish_service == "ingress/wslb" and args.balancer_in_front
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        assert container[probe]["httpGet"] == {"path": path, "port": "probes"}
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > c["shutdownDelay"] + c["drainSeconds"]
    cm = one(objs, "ConfigMap")
    assert cm["data"]["worker-shutdown-timeout"] == f"{c['drainSeconds']}s"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    strategy = one(objs, "Deployment")["spec"]["strategy"]["rollingUpdate"]
    assert strategy == {"maxSurge": 1, "maxUnavailable": 0}
    if values == "full":
        assert args.workers == 4 and args.watch_namespace == "chat" and not args.update_status
        assert args.admin == ("0.0.0.0", 9100)
        env = {e["name"]: e for e in container["env"]}
        assert env["WSLB_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "wslb-admin"
        affinity = pod["affinity"]["podAntiAffinity"]
        assert "requiredDuringSchedulingIgnoredDuringExecution" in affinity
        hpa = one(objs, "HorizontalPodAutoscaler")
        assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 10)
        assert "replicas" not in one(objs, "Deployment")["spec"]  # the HPA's
    else:
        assert one(objs, "Deployment")["spec"]["replicas"] == 2


def _listeners_of(objs: list[dict[str, Any]], tmp_path: Path) -> dict[int, Any]:
    """What the controller makes of the rendered Service and ConfigMap (with one Ingress)."""
    args = _parser().parse_args(_args(_container(objs)))
    docs = [o for o in objs if o["kind"] in ("Service", "ConfigMap")]
    docs.append(ingress("chat", "chat", "chat", "chat.example.com"))
    path = tmp_path / "rendered.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    objects, issues = load_objects([str(path)])
    assert not [i for i in issues if i.severity == "error"], issues
    config, issues = translate(
        objects,
        ManifestOptions(
            endpoints={"chat/chat": ["10.0.0.5:8080"]},
            port_map=args.port_map,
            balancer_in_front=args.balancer_in_front,
            lb_service=args.publish_service,
            configmap=args.configmap,
        ),
    )
    assert not [i for i in issues if i.severity == "error"], issues
    return {lst.port: lst for lst in config.listeners}


def test_digitalocean_annotations_are_wired_to_what_wslb_listens_for(tmp_path: Path) -> None:
    # default: DO's tcp entry, wslb terminates TLS, no PROXY header
    listeners = _listeners_of(render(), tmp_path)
    assert {p: lst.protocol for p, lst in listeners.items()} == {8080: "http", 8443: "https"}
    assert not any(lst.proxy_protocol for lst in listeners.values())
    svc = one(render(), "Service")
    assert svc["metadata"]["annotations"] == {
        "service.beta.kubernetes.io/do-loadbalancer-protocol": "tcp"
    }
    assert svc["spec"]["externalTrafficPolicy"] == "Local"
    # full: DO terminates TLS on 443 with its certificate and sends PROXY headers
    objs = render("-f", str(FULL))
    annotations = one(objs, "Service", "wslb")["metadata"]["annotations"]
    do = "service.beta.kubernetes.io/do-loadbalancer-"
    assert annotations[do + "enable-proxy-protocol"] == "true"
    assert annotations[do + "tls-ports"] == "443"
    assert annotations[do + "redirect-http-to-https"] == "true"
    assert annotations[do + "certificate-id"].startswith("0d6e")
    listeners = _listeners_of(objs, tmp_path)
    assert {p: lst.protocol for p, lst in listeners.items()} == {8080: "http", 8443: "http"}
    assert all(lst.proxy_protocol for lst in listeners.values())


def _rules(obj: dict[str, Any]) -> set[tuple[str, str, str]]:
    out = set()
    for rule in obj["rules"]:
        for group in rule["apiGroups"]:
            for res in rule["resources"]:
                for verb in rule["verbs"]:
                    out.add((group, res, verb))
    return out


def test_rbac_is_exactly_the_controllers_rules_with_no_wildcard() -> None:
    objs = render()
    cluster, own = _rules(one(objs, "ClusterRole")), _rules(one(objs, "Role"))
    assert cluster == rbac.grants("cluster")
    assert own == rbac.grants("own")
    assert not any("*" in part for rule in cluster | own for part in rule)
    assert one(objs, "Role")["metadata"]["namespace"] == "ingress"
    (subject,) = one(objs, "ClusterRoleBinding")["subjects"]
    assert subject["name"] == one(objs, "ServiceAccount")["metadata"]["name"]
    assert (
        one(objs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
        == (subject["name"])
    )


def test_manifests_are_the_chart_rendered() -> None:
    """deploy/manifests/wslb.yaml is `make manifests`: the chart with its default values
    (and deploy/manifests/values.yaml: no Secret with a key everyone would share)."""
    objs = render("-f", str(MANIFESTS / "values.yaml"), namespace="wslb")
    committed = [d for d in yaml.safe_load_all((MANIFESTS / "wslb.yaml").read_text()) if d]
    assert committed == objs, "deploy/manifests/wslb.yaml is stale: make manifests"
    assert not by_kind(objs, "Secret")
    namespaced = [o for o in committed if o["kind"] not in ("ClusterRole", "ClusterRoleBinding")]
    assert all(
        o["metadata"].get("namespace") == "wslb"
        for o in namespaced
        if o["kind"] not in ("IngressClass",)
    )


def test_the_chart_secret_is_random_per_install() -> None:
    first, second = one(render(), "Secret"), one(render(), "Secret")
    assert first["data"]["secret"] != second["data"]["secret"]
    assert first["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


@pytest.fixture
def api() -> Iterator[KubeAPI]:
    with KubeAPI(namespaces=("default", "ingress")) as server:
        yield server


async def test_the_controller_asks_for_exactly_what_the_rbac_grants(
    api: KubeAPI, tmp_path: Path
) -> None:
    """A controller that does everything it can (lists and watches each kind, its ConfigMap,
    the affinity Secret made, the Lease taken and renewed, an Ingress status written, an
    Event on an Ingress it refuses) makes requests that are exactly the rules' grants."""
    bad = ingress("chat", "bad", "chat", "bad.example.com")
    bad["metadata"]["annotations"] = {"nginx.ingress.kubernetes.io/proxy-read-timeout": "soon"}
    api.apply_many(
        [
            namespace("chat"),
            ingress_class("wslb", default=False),
            service("chat", "chat", 80, "http"),
            ingress("chat", "chat", "chat", "chat.example.com"),
            bad,
            configmap({"hsts-max-age": "600"})
            | {"metadata": {"name": "wslb", "namespace": "ingress"}},
        ]
    )
    lb = Controller(
        api,
        tmp_path,
        [
            "--port-map",
            "80=0,443=0",
            "--configmap",
            "ingress/wslb",
            "--publish-status-address",
            "203.0.113.9",
        ],
        "wslb-0",
    )
    try:
        lb.wait_ready(timeout=WAIT)

        def done(a: KubeAPI) -> bool:
            status = ((a.get("Ingress", "chat", "chat") or {}).get("status") or {}).get(
                "loadBalancer", {}
            )
            return (
                bool(status.get("ingress"))
                and a.count("update", "leases") > 0
                and a.count("create", "events") > 0
            )

        await api.await_until(done, timeout=scaled(30))
    finally:
        lb.stop()
    asked = {(r.resource, r.verb) for r in api.requests if r.resource}
    granted = {(res, verb) for _group, res, verb in rbac.grants()}
    assert asked == granted
    own = {(res, verb) for _group, res, verb in rbac.grants("own")}
    cluster = {(res, verb) for _group, res, verb in rbac.grants("cluster")}
    for r in api.requests:
        if (r.resource, r.verb) in own - cluster:
            assert r.namespace == "ingress", r  # a Role in the controller's namespace holds
