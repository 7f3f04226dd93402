"""Which Ingresses this controller serves, as ingress-nginx decides it.

* ``spec.ingressClassName`` names an IngressClass whose ``spec.controller`` is wslb's
  (``wslb.io/ingress-controller``), or is the ``--ingress-class`` name itself (default
  ``nginx``, so that manifests written for ingress-nginx move over unchanged) or ``wslb``;
* else the ``kubernetes.io/ingress.class`` annotation is one of those names;
* else (no class at all) with ``--watch-ingress-without-class``, or when one of wslb's
  IngressClasses carries ``ingressclass.kubernetes.io/is-default-class: "true"`` (the API
  server's admission gives new Ingresses that class; this covers those made before it).
"""

from __future__ import annotations

from typing import Any

DEFAULT_CLASS = "ingressclass.kubernetes.io/is-default-class"
CLASS_ANNOTATION = "kubernetes.io/ingress.class"


class IngressClasses:
    def __init__(
        self,
        classes: dict[tuple[str, str], dict[str, Any]],
        ingress_class: str,
        controller: str,
        without_class: bool = False,
    ) -> None:
        ours = {
            str((c.get("metadata") or {}).get("name"))
            for c in classes.values()
            if (c.get("spec") or {}).get("controller") == controller
        }
        self.names = ours | {ingress_class, "wslb"}
        self.without_class = without_class or any(
            str(((c.get("metadata") or {}).get("annotations") or {}).get(DEFAULT_CLASS)).lower()
            == "true"
            for c in classes.values()
            if (c.get("spec") or {}).get("controller") == controller
        )

    def serves(self, ingress: dict[str, Any]) -> bool:
        name = (ingress.get("spec") or {}).get("ingressClassName")
        if name:
            return str(name) in self.names
        annotation = ((ingress.get("metadata") or {}).get("annotations") or {}).get(
            CLASS_ANNOTATION
        )
        if annotation:
            return str(annotation) in self.names
        return self.without_class
