"""``docs/kubernetes.md``, generated from the annotation and ConfigMap tables:

    python -m wslb.config.kubernetes.docs > docs/kubernetes.md

A test fails when the file and the table disagree."""

from __future__ import annotations

from wslb.config.kubernetes import configmap
from wslb.config.kubernetes.annotations import TABLE

HEADER = """# Kubernetes manifests

`wslb serve -f PATH`, `wslb check -f PATH` and `wslb render -f PATH` read the manifests a
DigitalOcean load balancer + ingress-nginx deployment already has (files or directories,
multi-document YAML or JSON):

| object | what wslb takes from it |
|---|---|
| `Ingress` (`networking.k8s.io/v1`, `v1beta1`, `extensions/v1beta1`) | routes: exact and `*.` hosts, paths with `Exact`, `Prefix`, `ImplementationSpecific` (as prefix), Ingress precedence (exact host, then wildcard, then any; Exact path, then longest prefix), `defaultBackend`, `tls` hosts and Secrets; `ingressClassName` / `kubernetes.io/ingress.class` filtered by `--ingress-class` |
| `Service` `type: LoadBalancer` | wslb's listeners, one per port, from its `do-loadbalancer-*` annotations (with none: HTTP on 80, HTTPS on 443, as ingress-nginx) |
| other `Service` | port names and target ports of the backends the Ingresses name |
| `EndpointSlice`, `Endpoints` | ready endpoint addresses (first source) |
| `Secret` `kubernetes.io/tls` | certificates, chosen by SNI |
| `ConfigMap` (the one `--configmap NAMESPACE/NAME` names) | ingress-nginx's global settings: defaults under the annotations ([below](#the-controllers-configmap)) |

Endpoints of a backend are always pods, never a ClusterIP (whose virtual IP kube-proxy would
balance again behind wslb, sending the requests of one Socket.IO session or affinity cookie to
different pods: the seed's `400 Session ID unknown`). They come from, in order:
EndpointSlices/Endpoints in the files (ready addresses serve; serving but terminating ones
drain: no new sessions, their WebSockets closed with 1012 over `wslb.io/drain-window`; a named
target port is resolved in each slice), `--endpoints NS/SVC=HOST:PORT[,...]`, then, for a
headless Service (`clusterIP: None`) only, DNS of `SVC.NS.svc.cluster.local` (`--dns-suffix`)
on its target port, re-resolved every 10 s. Any other Service without them is an error in
`check`, `render` and `serve`, naming these fixes and controller mode. `--port-map 80=18080,443=18443` binds the Service's ports elsewhere; `--certificates DIR`
holds `<certificate-id>.crt` and `.key`; `--bind-address` chooses the address (0.0.0.0).
Affinity cookies are keyed with `--secret` (or `WSLB_SECRET`): give every replica the same one.

`wslb render -f PATH` prints the wslb configuration the manifests mean; `wslb check -f PATH`
prints every problem with file and line, and warns about deprecated API versions and
annotations, CORS that lets any origin in with credentials, proxy timeouts shorter than
Socket.IO's ping interval plus timeout (45 s), and sticky sessions on TCP ports.

## Annotations

Status: **supported** (ingress-nginx / DigitalOcean semantics), **partly** (with the
difference said), **accepted** (parsed and warned about, no effect), **unsupported** (an
error). Any other `nginx.ingress.kubernetes.io/*` or `do-loadbalancer-*` annotation is an error:
wslb says what it cannot honour instead of ignoring it.
"""


CONFIGMAP = """
## The controller's ConfigMap

`--configmap NAMESPACE/NAME` names ingress-nginx's controller ConfigMap (what its own
`--configmap` names) among the manifests; other ConfigMaps are not read, and a missing one is a
warning (ingress-nginx starts with its defaults then, and so does wslb). Its keys are the
defaults under the Ingress annotations ("under the annotation": the default of the annotation of
the same name): an Ingress's own annotation wins over the ConfigMap, which wins over wslb's
default. Keys that are also annotations are parsed as the annotations are; a bad value is an
error on `data.KEY`, with file and line.

Status as for annotations, except that **unsupported** keys are warnings, not errors:
ingress-nginx starts whatever its ConfigMap holds. Any other key of ingress-nginx's ConfigMap
is a warning that names it as not honoured, and a key ingress-nginx does not have either is a
warning too (a typo, most likely).

| key | status | ingress-nginx default | wslb |
|---|---|---|---|
"""


def render_markdown() -> str:
    out = [HEADER]
    for on, title in (
        ("Ingress", "ingress-nginx (on Ingress objects)"),
        ("Service", "DigitalOcean (on the LoadBalancer Service)"),
    ):
        out.append(
            f"\n### {title}\n\n| annotation | status | default | wslb |\n|---|---|---|---|\n"
        )
        for row in TABLE:
            if row.on == on:
                out.append(f"| `{row.short}` | {row.status} | {row.default} | {row.meaning} |\n")
    out.append(CONFIGMAP)
    for key in configmap.TABLE:
        out.append(f"| `{key.name}` | {key.status} | {key.default} | {key.meaning} |\n")
    return "".join(out)


if __name__ == "__main__":
    print(render_markdown(), end="")
