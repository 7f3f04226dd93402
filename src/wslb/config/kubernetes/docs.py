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
| `EndpointSlice`, `Endpoints` | the pods of each Service, the first source of endpoints: ready addresses serve, serving but terminating ones drain, the others are left out; a Service port is found in each slice by its name (its number can differ from slice to slice); IPv4, IPv6 and FQDN slices, merged, each address once |
| `Secret` `kubernetes.io/tls` | certificates, chosen by SNI |
| `ConfigMap` (the one `--configmap NAMESPACE/NAME` names) | ingress-nginx's global settings: defaults under the annotations ([below](#the-controllers-configmap)) |

Endpoints of a backend are always pods, never a ClusterIP: a Service's virtual IP is balanced
again by kube-proxy behind wslb, so cookie affinity and Engine.IO sessions would break (the
requests of one Socket.IO session reaching different pods: the seed's `400 Session ID
unknown`), and with `port: 3000, targetPort: 8080` nothing answers on the target port of that
IP. They come from, in order:

1. EndpointSlices (or legacy Endpoints) in the files: ready addresses (`ready` null counts as
   ready) serve; `ready: false` but `serving` and `terminating` ones drain (no new sessions,
   their WebSockets closed with 1012 over `wslb.io/drain-window`); the others are left out,
   as are the Endpoints' `notReadyAddresses`. The target port is resolved in each slice: its
   port named as the Service port gives the number, so two slices can give two numbers;
2. `--endpoints NS/SVC=HOST:PORT[,...]`;
3. for a headless Service (`clusterIP: None`, whose DNS name gives one address per pod) only,
   DNS of `SVC.NS.svc.cluster.local` (`--dns-suffix`) on its target port, re-resolved every
   10 s (a named target port has no number there: an error); an `ExternalName` Service is its
   `externalName` on its target port, re-resolved (never a loopback address).

Any other Service, one with a cluster IP or one that is not in the files (wslb cannot know
that it is headless), is an error on the Ingress backend in `check`, `render` and `serve` (and
on the tcp ports of a LoadBalancer Service, which forward to its own pods), naming the
fixes: `clusterIP: None`, its EndpointSlices in the files, `--endpoints`, or
`wslb controller`, which reads the EndpointSlices from the API: there they are the whole
truth, and a Service without a ready pod is a backend with no endpoints (503, `Retry-After`).

`--port-map 80=18080,443=18443` binds the Service's ports elsewhere; `--certificates DIR`
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
