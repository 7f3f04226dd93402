"""Command line: ``wslb serve | check | render | controller``. The only place that configures
logging.

A configuration comes from wslb's own YAML (``-c FILE``), from Kubernetes manifests (``-f
PATH``, repeatable: files or directories of YAML/JSON, multi-document), or, with ``wslb
controller``, from the Kubernetes API it watches (controller/).

``wslb check`` and ``wslb render`` read standard input for ``-c -`` or ``-f -``; ``wslb check
--format json`` prints the issues as one JSON object, for CI.

Exit codes: 0 success, 1 configuration refused, 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import yaml

from wslb.config.file import read_config
from wslb.config.model import Config
from wslb.config.source import DUPLICATE_KEY, STDIN, STDIN_NAME
from wslb.config.units import parse_duration
from wslb.errors import ConfigError, ConfigIssue

Loader = Callable[[], tuple[Config | None, list[ConfigIssue]]]


def _endpoints(value: str) -> tuple[str, list[str]]:
    ref, sep, addrs = value.partition("=")
    if not sep or "/" not in ref or not addrs:
        raise argparse.ArgumentTypeError("expected NS/SVC=HOST:PORT[,HOST:PORT...]")
    from wslb.config.model import split_host_port

    out = []
    for a in addrs.split(","):
        try:
            split_host_port(a)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        out.append(a.strip())
    return ref, out


def _port_map(value: str) -> dict[int, int]:
    out = {}
    for item in value.split(","):
        a, sep, b = item.partition("=")
        if not sep or not a.strip().isdigit() or not b.strip().isdigit():
            raise argparse.ArgumentTypeError("expected PORT=PORT[,PORT=PORT...], e.g. 80=18080")
        out[int(a)] = int(b)
    return out


def _admin_address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    host = host.strip("[]") if sep else "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) < 65536:
        raise argparse.ArgumentTypeError("expected [HOST:]PORT, e.g. 127.0.0.1:9100")
    return host or "127.0.0.1", int(port)


def _boolean(value: str) -> bool:
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError("expected true or false")


def _seconds(value: str) -> float:
    """A duration as the YAML takes one (``10``, ``10s``, ``500ms``), at most an hour."""
    try:
        seconds = parse_duration(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= 3600:
        raise argparse.ArgumentTypeError("expected a duration from 0 to 1h, e.g. 10 or 10s")
    return seconds


def _add_source(p: argparse.ArgumentParser, kubernetes_only: bool = False) -> None:
    if not kubernetes_only:
        p.add_argument("-c", "--config", help="wslb YAML config file (check: - for stdin)")
    p.add_argument(
        "-f",
        "--filename",
        action="append",
        default=[],
        metavar="PATH",
        help="Kubernetes manifests: a file or directory (repeatable; check, render: - for stdin)",
    )
    p.add_argument(
        "--endpoints",
        action="append",
        type=_endpoints,
        default=[],
        metavar="NS/SVC=HOST:PORT[,HOST:PORT...]",
        help="endpoints of a Service the files do not list (repeatable)",
    )
    p.add_argument("--ingress-class", help="serve only Ingresses of this class")
    p.add_argument("--dns-suffix", default="svc.cluster.local")
    p.add_argument(
        "--secret",
        help="affinity key shared by replicas; shows in ps: prefer WSLB_SECRET or --secret-file",
    )
    p.add_argument(
        "--secret-file",
        metavar="FILE",
        help="affinity key kept across restarts, made on first use (default: STATE_DIR/secret, "
        "STATE_DIR from WSLB_STATE_DIR, else $XDG_STATE_HOME/wslb or ~/.local/state/wslb)",
    )
    _add_manifest_options(p)


def _add_manifest_options(p: argparse.ArgumentParser) -> None:
    """What manifests and the API leave to the command line: ports, certificates, ACME."""
    p.add_argument("--port-map", type=_port_map, default={}, metavar="80=18080,443=18443")
    p.add_argument("--certificates", metavar="DIR", help="<certificate-id>.crt/.key files")
    p.add_argument("--bind-address", default="0.0.0.0", help="address of the manifests' ports")
    p.add_argument(
        "--configmap",
        metavar="NS/NAME",
        help="the ingress-nginx controller ConfigMap whose global keys apply (docs/kubernetes.md)",
    )
    acme = p.add_argument_group("ACME, for manifests (-f): docs/acme.md")
    acme.add_argument("--acme-directory", help="ACME directory URL (default: Let's Encrypt)")
    acme.add_argument("--acme-email", help="contact e-mail of the ACME account")
    acme.add_argument("--acme-storage", default="acme", metavar="DIR", help="default: ./acme")
    acme.add_argument("--acme-challenge", choices=["http-01", "tls-alpn-01"], default="http-01")
    acme.add_argument("--acme-ca-file", metavar="PEM", help="CA to trust the directory with")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wslb", description="WebSocket-aware load balancer")
    p.add_argument("--version", action="version", version=f"wslb {_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the load balancer")
    _add_source(serve)
    _add_serving(serve)
    serve.add_argument(
        "--watch",
        action="store_true",
        help="reload when the config file, a manifest or a certificate file changes "
        "(SIGHUP always reloads)",
    )

    check = sub.add_parser("check", help="validate a configuration and print every problem")
    _add_source(check)
    check.add_argument(
        "--format",
        choices=["text", "json"],
        default="text",
        help="json: one object on stdout (source, ok, errors, warnings, issues with source, "
        "line, key, severity, message)",
    )

    render = sub.add_parser("render", help="print the wslb YAML config that manifests mean")
    _add_source(render, kubernetes_only=True)

    ctl = sub.add_parser(
        "controller",
        help="run as a Kubernetes ingress controller: configuration from the API it watches",
    )
    _add_manifest_options(ctl)
    _add_serving(ctl)
    k = ctl.add_argument_group("Kubernetes (docs/kubernetes.md, Running in the cluster)")
    k.add_argument("--kubeconfig", help="default: $KUBECONFIG, the pod's service account, ~/.kube")
    k.add_argument("--ingress-class", default="nginx", help="class name served (and wslb)")
    k.add_argument(
        "--controller-class",
        default="wslb.io/ingress-controller",
        help="IngressClass spec.controller served",
    )
    k.add_argument(
        "--watch-ingress-without-class",
        action="store_true",
        help="also serve Ingresses with no class (as when wslb's IngressClass is the default)",
    )
    k.add_argument("--watch-namespace", help="only this namespace (default: all)")
    k.add_argument(
        "--publish-service",
        metavar="NS/NAME",
        help="the LoadBalancer Service in front: its ports and annotations are wslb's "
        "listeners, its addresses go to Ingress status",
    )
    k.add_argument(
        "--publish-status-address",
        default="",
        metavar="ADDR[,ADDR...]",
        help="addresses for Ingress status instead of the publish Service's",
    )
    k.add_argument(
        "--balancer-in-front",
        action="store_true",
        help="the publish Service's cloud load balancer (DigitalOcean's) is in front of wslb: "
        "its annotations configure that balancer; wslb takes what it forwards (PROXY headers "
        "with enable-proxy-protocol, plain HTTP where it terminates TLS)",
    )
    k.add_argument(
        "--update-status",
        type=_boolean,
        default=True,
        metavar="true|false",
        help="write the addresses to the status of the Ingresses served (false while "
        "another controller, ingress-nginx, serves the same ones)",
    )
    k.add_argument(
        "--affinity-secret",
        default="wslb-affinity",
        metavar="[NS/]NAME",
        help="the Secret holding the key replicas share (made by the Lease holder if missing)",
    )
    k.add_argument("--election-id", default="wslb-leader", help="name of the Lease")
    k.add_argument(
        "--sync-timeout",
        type=float,
        default=120.0,
        help="seconds to wait for the first sync with the API before giving up",
    )
    return p


def _add_serving(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("--workers", type=int, default=None, help="worker processes (SO_REUSEPORT)")
    serve.add_argument(
        "--ready-file", default=None, help="write the bound addresses here (JSON) once serving"
    )
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument(
        "--admin",
        type=_admin_address,
        default=None,
        metavar="[HOST:]PORT",
        help="admin listener: /metrics, /healthz, /readyz, JSON API, dashboard (HOST defaults "
        "to 127.0.0.1; elsewhere a token is required)",
    )
    serve.add_argument(
        "--admin-token",
        default=None,
        help="bearer token for the admin listener (or WSLB_ADMIN_TOKEN)",
    )
    serve.add_argument(
        "--probes",
        type=_admin_address,
        default=None,
        metavar="[HOST:]PORT",
        help="probe listener for the kubelet and Prometheus, no token: /healthz, /readyz "
        "(503 until serving and from SIGTERM on), /metrics (HOST defaults to 127.0.0.1)",
    )
    serve.add_argument(
        "--shutdown-delay",
        "--shutdown-grace-period",
        dest="shutdown_delay",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="on SIGTERM, keep accepting this long before draining (server.shutdown_delay; "
        "ingress-nginx's --shutdown-grace-period)",
    )
    serve.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="json: one object per line, access-log lines with their fields",
    )


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time (UTC), level, logger, pid, message, and the fields of an
    access-log line (``record.access``) at the top level."""

    converter = staticmethod(time.gmtime)

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": f"{self.formatTime(record, '%Y-%m-%dT%H:%M:%S')}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        fields = getattr(record, "access", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def _setup_logging(level: str, fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s")
        )
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler])


def _load(args: argparse.Namespace) -> tuple[Config | None, list[ConfigIssue]]:

    if getattr(args, "config", None) and args.filename:
        raise SystemExit("give -c FILE or -f PATH, not both")
    try:
        if getattr(args, "config", None):
            return read_config(args.config)
        if not args.filename:
            raise SystemExit("give -c FILE (wslb YAML) or -f PATH (Kubernetes manifests)")
        from wslb.config.kubernetes.objects import load_objects
        from wslb.config.kubernetes.translate import ManifestOptions, translate

        objects, issues = load_objects(args.filename)
        if any(i.severity == "error" and i.message != DUPLICATE_KEY for i in issues):
            raise ConfigError(issues)  # a duplicate key (the last one stands) hides nothing
        options = ManifestOptions(
            endpoints=dict(args.endpoints),
            ingress_class=args.ingress_class,
            dns_suffix=args.dns_suffix,
            secret=args.secret or os.environ.get("WSLB_SECRET"),
            **_manifest_options(args),
        )
        try:
            config, more = translate(objects, options)
        except ConfigError as exc:
            return None, issues + exc.issues
        if any(i.severity == "error" for i in issues):
            return None, issues + more
        return config, issues + more
    except ConfigError as exc:
        return None, exc.issues


def _manifest_options(args: argparse.Namespace) -> dict[str, Any]:
    """ManifestOptions fields the manifests' and the controller's command lines share."""
    return {
        "port_map": args.port_map,
        "certificates_dir": args.certificates,
        "bind_address": args.bind_address,
        "configmap": args.configmap,
        "acme": _acme_options(args),
    }


def state_dir() -> str:
    """Where wslb keeps what must outlive a process (the affinity key)."""
    explicit = os.environ.get("WSLB_STATE_DIR")
    if explicit:
        return explicit
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return os.path.join(base, "wslb")


def secret_from_file(path: str) -> str:
    """The key in ``path``; made (random, mode 0600) by whichever process comes first."""
    try:
        with open(path, encoding="utf-8") as fh:
            value = fh.read().strip()
        if value:
            return value
    except FileNotFoundError:
        pass
    os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
    tmp = f"{path}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(secrets.token_hex(32) + "\n")
    try:
        os.link(tmp, path)  # fails if another process made it meanwhile: theirs wins
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    with open(path, encoding="utf-8") as fh:
        return fh.read().strip()


def _with_flags(config: Config, args: argparse.Namespace) -> Config:
    """What the command line says about ``server``, over every configuration it loads."""
    if args.shutdown_delay is None:
        return config
    server = config.server.model_copy(update={"shutdown_delay": args.shutdown_delay})
    return config.model_copy(update={"server": server})


def _flagged(load: Loader, args: argparse.Namespace) -> Loader:
    def again() -> tuple[Config | None, list[ConfigIssue]]:
        config, issues = load()
        return (None if config is None else _with_flags(config, args)), issues

    return again


def _with_secret(config: Config, args: argparse.Namespace) -> Config:
    """``server.secret`` from the config, --secret / WSLB_SECRET, else the secret file, so that
    restarts keep every affinity cookie and Engine.IO session valid."""
    if config.server.secret:
        return config
    secret = getattr(args, "secret", None) or os.environ.get("WSLB_SECRET")
    if not secret:
        path = getattr(args, "secret_file", None) or os.path.join(state_dir(), "secret")
        try:
            secret = secret_from_file(path)
        except OSError as exc:
            logging.getLogger("wslb").warning(
                "cannot keep the affinity key in %s (%s): a new one for this start, so "
                "affinity cookies and Engine.IO sessions do not survive a restart",
                path,
                exc.strerror,
            )
            return config
    server = config.server.model_copy(update={"secret": secret})
    return config.model_copy(update={"server": server})


def _secret_warning(args: argparse.Namespace) -> list[ConfigIssue]:
    if not getattr(args, "secret", None):
        return []
    return [
        ConfigIssue(
            "--secret",
            None,
            "",
            "the key shows in ps and /proc to every user of this machine: give it in "
            "WSLB_SECRET or keep it in --secret-file",
            "warning",
        )
    ]


def _acme_options(args: argparse.Namespace) -> dict[str, Any] | None:
    """AcmeSpec fields from --acme-*; None unless a directory or an e-mail is given (then a
    missing TLS Secret means: ask ACME)."""
    if not args.acme_directory and not args.acme_email:
        return None
    fields: dict[str, Any] = {
        "storage": os.path.abspath(args.acme_storage),
        "challenge": args.acme_challenge,
    }
    for key in ("directory", "email", "ca_file"):
        value = getattr(args, f"acme_{key}")
        if value:
            fields[key] = value
    return fields


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("wslb")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _json_report(where: str, issues: list[ConfigIssue], ok: bool) -> str:
    return json.dumps(
        {
            "source": where,
            "ok": ok,
            **_counts(issues),
            "issues": [
                {
                    "source": i.source,
                    "line": i.line,
                    "key": i.key,
                    "severity": i.severity,
                    "message": i.message,
                }
                for i in issues
            ],
        },
        indent=1,
    )


def _print_issues(issues: list[ConfigIssue]) -> None:
    for issue in issues:
        print(issue, file=sys.stderr)


def _counts(issues: list[ConfigIssue]) -> dict[str, int]:
    return {
        "errors": sum(1 for i in issues if i.severity == "error"),
        "warnings": sum(1 for i in issues if i.severity == "warning"),
    }


def _summary(where: str, issues: list[ConfigIssue]) -> str:
    n = _counts(issues)
    return f"{where}: {n['errors']} error(s), {n['warnings']} warning(s)"


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (PEM certificates) as literal blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render_yaml(config: Config) -> str:
    data = config.model_dump(mode="json", exclude_defaults=True)
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=100)


def _acme_status(config: Config) -> list[str]:
    """What the ACME storage holds for each certificate: the hosts still waiting for one."""
    if config.acme is None:
        return []
    from wslb.acme.storage import Storage

    storage = Storage(config.acme.storage)
    out = []
    for cert in config.acme.all_certificates():
        stored = storage.load_certificate(cert.key)
        hosts = ", ".join(cert.hosts)
        if stored is None or not set(cert.hosts) <= set(stored.hosts):
            out.append(f"acme: {cert.key}: waiting for a certificate ({hosts}; self-signed until)")
        else:
            renew = stored.renew_at(config.acme.renew_fraction).isoformat(timespec="seconds")
            until = stored.not_after.isoformat(timespec="seconds")
            out.append(f"acme: {cert.key}: issued ({hosts}), valid until {until}, renews {renew}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "controller":
        return _controller(args)
    where = getattr(args, "config", None) or ", ".join(args.filename)
    where = STDIN_NAME if where == STDIN else where
    if args.command in ("check", "render"):
        config, issues = _load(args)
        issues += _secret_warning(args)
        if getattr(args, "format", "text") == "json":
            print(_json_report(where, issues, config is not None))
            return 0 if config is not None else 1
        _print_issues(issues)
        if config is None:
            print(_summary(where, issues), file=sys.stderr)
            return 1
        if args.command == "render":
            sys.stdout.write(render_yaml(config))
        else:
            print(f"{where}: OK ({_summary(where, issues).split(': ', 1)[1]})")
            for line in _acme_status(config):
                print(line)
        return 0

    if args.config == STDIN or STDIN in args.filename:
        print("standard input (-) is for check and render: serve reloads", file=sys.stderr)
        return 2
    _setup_logging(args.log_level, args.log_format)
    config, issues = _load(args)
    _print_issues(issues + _secret_warning(args))
    if config is None:
        return 1
    if args.workers is not None and args.workers < 1:
        print("--workers must be at least 1", file=sys.stderr)
        return 2
    config = _with_flags(_with_secret(config, args), args)
    from wslb.server.process.master import serve

    watch = None
    if args.watch:
        watch = [args.config] if args.config else list(args.filename)
        if getattr(args, "certificates", None):
            watch.append(args.certificates)

    try:
        return serve(
            config,
            workers=args.workers,
            ready_file=args.ready_file,
            load=_flagged(lambda: _load(args), args),
            watch=watch,
            admin=args.admin,
            admin_token=args.admin_token or os.environ.get("WSLB_ADMIN_TOKEN"),
            probes=args.probes,
        )
    except OSError as exc:
        logging.getLogger("wslb").error("cannot start: %s", exc)
        return 1


def _controller(args: argparse.Namespace) -> int:
    """``wslb controller``: the configuration from the Kubernetes API (controller/)."""
    _setup_logging(args.log_level, args.log_format)
    if args.workers is not None and args.workers < 1:
        print("--workers must be at least 1", file=sys.stderr)
        return 2
    import socket

    from wslb.config.kubernetes.translate import ManifestOptions
    from wslb.controller.controller import ControllerOptions
    from wslb.controller.process import ControllerProcess
    from wslb.server.observe.admin import waiting_probes
    from wslb.server.process.master import serve

    log = logging.getLogger("wslb")
    identity = os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
    options = ControllerOptions(
        manifest=ManifestOptions(
            **_manifest_options(args), balancer_in_front=args.balancer_in_front
        ),
        kubeconfig=args.kubeconfig,
        ingress_class=args.ingress_class,
        controller_class=args.controller_class,
        watch_without_class=args.watch_ingress_without_class,
        watch_namespace=args.watch_namespace,
        configmap=args.configmap,
        publish_service=args.publish_service,
        publish_status_address=tuple(
            a.strip() for a in args.publish_status_address.split(",") if a.strip()
        ),
        update_status=args.update_status,
        affinity_secret=args.affinity_secret,
        election_id=args.election_id,
        identity=identity,
    )
    child = ControllerProcess(options)
    try:
        child.spawn()
        waiting = waiting_probes(args.probes) if args.probes else None
        try:
            config = child.wait_first(args.sync_timeout)
        finally:
            if waiting is not None:
                waiting.shutdown()
                waiting.server_close()
        if config is None:
            log.error(
                "controller: no configuration from the Kubernetes API (it failed, or took "
                "more than --sync-timeout %.0fs)",
                args.sync_timeout,
            )
            return 1
        return serve(
            _with_flags(config, args),
            workers=args.workers,
            ready_file=args.ready_file,
            load=_flagged(child.load, args),
            admin=args.admin,
            admin_token=args.admin_token or os.environ.get("WSLB_ADMIN_TOKEN"),
            controller=child,
            probes=args.probes,
        )
    except OSError as exc:
        log.error("cannot start: %s", exc)
        return 1
    finally:
        child.stop()


if __name__ == "__main__":
    sys.exit(main())
