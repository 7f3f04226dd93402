"""What the controller asks of the Kubernetes API, verb by verb: the RBAC rules its service
account needs, no more. The Helm chart's ClusterRole and Role (deploy/helm/wslb) and the table in
docs/kubernetes.md say the same; tests check both against these rules and these rules against
the requests a controller makes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Rule:
    group: str  # "" is the core group
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    #: cluster: every namespace watched (a ClusterRole); own: the controller's namespace only
    #: (a Role): its Lease, the affinity Secret, its ConfigMap
    scope: Literal["cluster", "own"]
    why: str


RULES: tuple[Rule, ...] = (
    Rule(
        "networking.k8s.io",
        ("ingresses", "ingressclasses"),
        ("list", "watch"),
        "cluster",
        "the Ingresses and the classes that say which are wslb's",
    ),
    Rule(
        "networking.k8s.io",
        ("ingresses/status",),
        ("patch",),
        "cluster",
        "the addresses in `.status.loadBalancer` (Lease holder; `--update-status`)",
    ),
    Rule(
        "",
        ("services", "secrets"),
        ("list", "watch"),
        "cluster",
        "backends' ports, the publish Service; TLS Secrets (`type=kubernetes.io/tls` only)",
    ),
    Rule(
        "discovery.k8s.io",
        ("endpointslices",),
        ("list", "watch"),
        "cluster",
        "the pods behind each Service, with their conditions",
    ),
    Rule(
        "",
        ("events",),
        ("create",),
        "cluster",
        "a `Rejected` Event on an object wslb cannot serve (Lease holder)",
    ),
    Rule(
        "",
        ("configmaps",),
        ("list", "watch"),
        "own",
        "`--configmap` (one name, by field selector)",
    ),
    Rule(
        "",
        ("secrets",),
        ("get", "create"),
        "own",
        "the affinity Secret replicas share (`--affinity-secret`), made if missing",
    ),
    Rule(
        "coordination.k8s.io",
        ("leases",),
        ("get", "create", "update"),
        "own",
        "the Lease that picks the replica writing status and Events (`--election-id`)",
    ),
)


def grants(scope: str | None = None) -> set[tuple[str, str, str]]:
    """(group, resource, verb) for every rule, or for those of one ``scope``."""
    return {
        (r.group, res, verb)
        for r in RULES
        if scope is None or r.scope == scope
        for res in r.resources
        for verb in r.verbs
    }


def table() -> str:
    """The rules as the Markdown table of docs/kubernetes.md."""
    rows = ["| API group | resources | verbs | where | why |", "|---|---|---|---|---|"]
    for r in RULES:
        where = "every namespace watched" if r.scope == "cluster" else "own namespace"
        resources = ", ".join(f"`{x}`" for x in r.resources)
        rows.append(f'| `"{r.group}"` | {resources} | {", ".join(r.verbs)} | {where} | {r.why} |')
    return "\n".join(rows)
