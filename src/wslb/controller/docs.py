"""``docs/kubernetes.md``, generated from the annotation and ConfigMap tables:

    python -m wslb.controller.docs > docs/kubernetes.md

A test fails when the file and the table disagree."""

from __future__ import annotations

from wslb.config.kubernetes import configmap
from wslb.config.kubernetes.annotations import TABLE
from wslb.controller import rbac

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


CLUSTER = """
## Running in the cluster: `wslb controller`

`wslb controller` is an ingress controller, as ingress-nginx, Traefik and Envoy Gateway are: its
configuration is the Kubernetes API, watched. It lists and watches Ingresses
(`networking.k8s.io/v1`), IngressClasses, Services, EndpointSlices (`discovery.k8s.io/v1`), the
TLS Secrets (`type=kubernetes.io/tls`) and the controller's ConfigMap, and translates them with
the same translator as `-f` files: every annotation above means the same.

```sh
wslb controller --publish-service ingress/wslb --configmap ingress/wslb \\
                --port-map 80=8080,443=8443 --workers 2 --admin 0.0.0.0:9100
```

| flag | default | what |
|---|---|---|
| `--kubeconfig` | `$KUBECONFIG`, else the pod's service account, else `~/.kube/config` | how to reach the API; the namespace of the pod (`POD_NAMESPACE`) or of the kubeconfig context is the controller's own (its Lease, its Secret, Events) |
| `--ingress-class` | `nginx` | Ingresses whose `ingressClassName` or `kubernetes.io/ingress.class` is this name (or `wslb`) are served, so manifests written for ingress-nginx move over unchanged |
| `--controller-class` | `wslb.io/ingress-controller` | so are those whose IngressClass has this `spec.controller` |
| `--watch-ingress-without-class` | off | also serve Ingresses with no class; also on when one of wslb's IngressClasses has `ingressclass.kubernetes.io/is-default-class: "true"` (the API server gives new Ingresses that class; this covers older ones) |
| `--watch-namespace` | all | only this namespace's Ingresses, Services, EndpointSlices and Secrets |
| `--publish-service NS/NAME` | none | the LoadBalancer Service in front: its ports and `do-loadbalancer-*` annotations are wslb's listeners (as with files), its `status.loadBalancer` addresses go to Ingress status. Without it: HTTP on 80 and HTTPS on 443, as ingress-nginx |
| `--balancer-in-front` | off | the publish Service's cloud balancer (DigitalOcean's, made for that Service: the Helm chart's case) is in front of wslb, as it is in front of ingress-nginx: its `do-loadbalancer-*` annotations configure that balancer, and wslb listens, per Service port, for what it forwards: plain HTTP with `X-Forwarded-*` kept where it terminates TLS (`protocol` https/http2, `tls-ports`), TLS on 443 (or a port named `https`) otherwise, a PROXY header first with `enable-proxy-protocol` (or the ConfigMap's `use-proxy-protocol`). Off, wslb is that balancer itself, as with files |
| `--publish-status-address A[,B]` | none | these addresses for Ingress status instead |
| `--configmap NS/NAME` | none | the ingress-nginx ConfigMap (below) |
| `--affinity-secret [NS/]NAME` | `wslb-affinity` | the key replicas share |
| `--election-id` | `wslb-leader` | the Lease |
| `--sync-timeout` | 120 | seconds to wait for the first sync before exiting |
| `--update-status` | true | write Ingress status (`false` while ingress-nginx still serves the same Ingresses, so that the two do not overwrite each other's addresses) |
| `--probes [HOST:]PORT` | none | the kubelet's and Prometheus' listener, no token: `/healthz` (200 from the start), `/readyz` (503 until the first configuration serves, and from SIGTERM on), `/metrics` |
| `--shutdown-delay SECONDS` | 0 (`server.shutdown_delay`) | on SIGTERM, keep accepting this long before draining (alias `--shutdown-grace-period`, as ingress-nginx) |
| `--port-map`, `--bind-address`, `--certificates`, `--acme-*`, `--workers`, `--admin`, `--ready-file`, `--log-*` | | as for `serve` |

**How it follows the API** (src/wslb/controller/): each kind is listed (pages of 500), then
watched from the list's resourceVersion with bookmarks; a watch the server ends or a connection
cut is resumed from the last resourceVersion seen (an event's or a bookmark's); a 410 Gone
(expired resourceVersion) lists again. Errors back off from 0.5 s to 30 s with jitter; a 403 is
logged once, naming the verb, resource and API group the service account lacks, and retried
every 30 s. While the API cannot be reached nothing changes: wslb keeps serving the last good
configuration (tested with the API gone for 30 s). The client library is `kubernetes_asyncio`,
chosen over `lightkube` because its watch follows bookmarks and reports 410 so that the caller
relists (lightkube's watch asks for no bookmarks and, after a 410, watches again from "now",
which loses deletions), and it is the Kubernetes project's own client, generated from the API's
OpenAPI description, with kubeconfig exec plugins (DOKS's `doctl`) and in-cluster
configuration.

**Changes**: after a change the controller waits for 0.5 s of quiet (at most 2 s), so a
`kubectl apply` of 20 objects is one reload. Objects are checked against the Kubernetes schema,
then translated; an object that has errors is left out and the rest translated again without
it, so one bad Ingress, Service or Secret never stops the others: its problems are logged
(`Ingress NS/NAME: key: message`) and recorded by the Lease holder as a `Warning` Event
(reason `Rejected`) on the object (`kubectl describe` shows it). A translation equal to the
running configuration is no reload. A change of endpoints alone (EndpointSlices) is applied
without a reload (`wslb_endpoint_updates_total`); any other change (Ingress, Service
annotations, Secret, ConfigMap) is the same guarded hot reload as SIGHUP: no WebSocket or
request in flight is dropped, and a renewed TLS Secret (cert-manager) serves new handshakes at
once while open connections go on.

**Endpoints** are the pods: the EndpointSlice addresses of the Service's target port (named
ports resolved per slice). Ready ones serve; serving but terminating ones drain (no new
sessions; their WebSockets are closed with 1012 spread over `wslb.io/drain-window`, 30 s by
default, so that their clients reconnect elsewhere without a storm); gone ones leave the same
way. A Service with no ready pod answers 503 with `Retry-After`. No ClusterIP is ever dialled.

**Replicas agree with nothing configured.** Affinity cookies and Engine.IO session tags are
signed with one key, kept in the Secret `--affinity-secret` (data key `secret`): if it is
missing, the replica that holds the Lease creates it (random, 256 bits) and every replica reads
it, so any replica routes any session's requests to the pod that holds it, and restarts and
rolling updates keep every session. Outside Kubernetes (`wslb serve`), the key is generated once
and kept in `--secret-file` (default `$WSLB_STATE_DIR/secret`, else
`$XDG_STATE_HOME/wslb/secret` or `~/.local/state/wslb/secret`, mode 0600); `--secret` still
works, but shows in `ps`, and `check` says so (prefer `WSLB_SECRET`).

**Leader election and status**: a `coordination.k8s.io/v1` Lease (`--election-id`, 15 s, renewed
every 2 s), as client-go's leader election. Only its holder writes `.status.loadBalancer` of
each Ingress it serves (the publish Service's addresses, or `--publish-status-address`), only
when it differs, and clears it on Ingresses it stops serving; only it records Events and
creates the affinity Secret.

**RBAC**: exactly what the controller asks for (src/wslb/controller/rbac.py; the Helm chart's
ClusterRole and Role are these, and a test compares both with the requests a controller makes):

{rbac}

**How it differs from ingress-nginx**: one process serves both the DigitalOcean load balancer's
part (listeners from the publish Service's `do-loadbalancer-*` annotations) and the
controller's; endpoint changes never reload (ingress-nginx applies them through Lua, and its
reloads restart nginx workers, which cut WebSockets after `worker-shutdown-timeout`; wslb's
reloads keep every connection); replicas share the affinity key through a Secret; Engine.IO
sessions are routed with no cookie;
Ingresses without a class are served only as described above (ingress-nginx 1.x: only with
`--watch-ingress-without-class`); the `nginx.ingress.kubernetes.io/*` annotations and ConfigMap
keys wslb cannot honour are errors or warnings, never ignored; `extensions/v1beta1` is read
from files only (the API has not served it since 1.22).
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
    out.append(CLUSTER.replace("{rbac}", rbac.table()))
    out.append(CONFIGMAP)
    for key in configmap.TABLE:
        out.append(f"| `{key.name}` | {key.status} | {key.default} | {key.meaning} |\n")
    return "".join(out)


if __name__ == "__main__":
    print(render_markdown(), end="")
