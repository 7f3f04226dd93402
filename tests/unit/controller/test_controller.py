"""The controller's pure parts: which Ingresses are ours, and a sync that leaves out the
objects with errors and translates the rest."""

from __future__ import annotations

from typing import Any

from wslb.config.kubernetes.translate import ManifestOptions
from wslb.controller.classes import IngressClasses
from wslb.controller.controller import build


def _ing(
    name: str, cls: str | None = None, annotation: str | None = None, **ann: str
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "shop", "annotations": dict(ann)}
    if annotation:
        meta["annotations"]["kubernetes.io/ingress.class"] = annotation
    spec: dict[str, Any] = {
        "rules": [
            {
                "host": f"{name}.example.com",
                "http": {
                    "paths": [
                        {
                            "path": "/",
                            "pathType": "Prefix",
                            "backend": {"service": {"name": "web", "port": {"number": 80}}},
                        }
                    ]
                },
            }
        ]
    }
    if cls:
        spec["ingressClassName"] = cls
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta, "spec": spec}


def _class(name: str, controller: str, default: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if default:
        meta["annotations"] = {"ingressclass.kubernetes.io/is-default-class": "true"}
    return {"metadata": meta, "spec": {"controller": controller}}


OURS = "wslb.io/ingress-controller"


def test_ingress_classes_as_ingress_nginx() -> None:
    classes = {("", "public"): _class("public", OURS), ("", "gce"): _class("gce", "k8s.io/gce")}
    c = IngressClasses(classes, "nginx", OURS)
    assert c.serves(_ing("a", cls="public"))  # an IngressClass of ours
    assert c.serves(_ing("b", cls="nginx"))  # the --ingress-class name
    assert c.serves(_ing("c", cls="wslb"))
    assert not c.serves(_ing("d", cls="gce"))
    assert c.serves(_ing("e", annotation="nginx"))
    assert not c.serves(_ing("f", annotation="traefik"))
    assert not c.serves(_ing("g"))  # no class: not without the flag or a default class
    assert IngressClasses(classes, "nginx", OURS, without_class=True).serves(_ing("g"))
    default = {("", "public"): _class("public", OURS, default=True)}
    assert IngressClasses(default, "nginx", OURS).serves(_ing("g"))
    foreign_default = {("", "gce"): _class("gce", "k8s.io/gce", default=True)}
    assert not IngressClasses(foreign_default, "nginx", OURS).serves(_ing("g"))


def _stores(*ingresses: dict[str, Any]) -> dict[str, dict[tuple[str, str], dict[str, Any]]]:
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }
    return {
        "Ingress": {("shop", i["metadata"]["name"]): i for i in ingresses},
        "IngressClass": {},
        "Service": {("shop", "web"): svc},
        "EndpointSlice": {},
        "Secret": {},
    }


def test_a_bad_ingress_is_left_out_and_the_rest_served() -> None:
    good = _ing("good", cls="wslb")
    bad = _ing("bad", cls="wslb", **{"nginx.ingress.kubernetes.io/proxy-read-timeout": "soon"})
    other = _ing("other", cls="traefik")
    classes = IngressClasses({}, "nginx", OURS)
    built = build(_stores(good, bad, other), classes, ManifestOptions(from_api=True), None, None)
    assert built.config is not None
    assert {r.host for r in built.config.routes} == {"good.example.com"}
    assert built.served == {("shop", "good")}
    assert set(built.refused) == {"Ingress shop/bad"}
    (err,) = [i for i in built.issues if i.severity == "error"]
    assert err.source == "Ingress shop/bad"
    assert err.key == "metadata.annotations.nginx.ingress.kubernetes.io/proxy-read-timeout"
    # a controller always listens, even with nothing to serve yet (as ingress-nginx)
    empty = build(_stores(), classes, ManifestOptions(from_api=True), None, None)
    assert empty.config is not None and [lst.port for lst in empty.config.listeners] == [80, 443]
    # no ready pod: a backend with no endpoints (503), not an error
    assert built.config.backends[0].endpoints == ()


def test_an_object_of_the_wrong_shape_is_reported_on_its_key() -> None:
    typo = _ing("typo", cls="wslb")
    typo["metadata"]["anotations"] = typo["metadata"].pop("annotations")
    built = build(
        _stores(typo, _ing("good", cls="wslb")),
        IngressClasses({}, "nginx", OURS),
        ManifestOptions(from_api=True),
        None,
        None,
    )
    assert built.served == {("shop", "good")}
    (err,) = [i for i in built.issues if i.severity == "error"]
    assert (err.source, err.key, err.line) == ("Ingress shop/typo", "metadata.anotations", None)
    assert "did you mean" in err.message
