"""Command line: ``wslb serve | check | render``. The only place that configures logging.

A configuration comes from wslb's own YAML (``-c FILE``) or from Kubernetes manifests
(``-f PATH``, repeatable: files or directories of YAML/JSON, multi-document).

Exit codes: 0 success, 1 configuration refused, 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import yaml

from wslb.config.file import read_config
from wslb.config.model import Config
from wslb.errors import ConfigError, ConfigIssue


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


def _add_source(p: argparse.ArgumentParser, kubernetes_only: bool = False) -> None:
    if not kubernetes_only:
        p.add_argument("-c", "--config", help="wslb YAML config file")
    p.add_argument(
        "-f",
        "--filename",
        action="append",
        default=[],
        metavar="PATH",
        help="Kubernetes manifests: a file or directory (repeatable)",
    )
    p.add_argument(
        "--endpoints",
        action="append",
        type=_endpoints,
        default=[],
        metavar="NS/SVC=HOST:PORT[,HOST:PORT...]",
        help="endpoints of a Service the files do not list (repeatable)",
    )
    p.add_argument("--port-map", type=_port_map, default={}, metavar="80=18080,443=18443")
    p.add_argument("--certificates", metavar="DIR", help="<certificate-id>.crt/.key files")
    p.add_argument("--ingress-class", help="serve only Ingresses of this class")
    p.add_argument("--dns-suffix", default="svc.cluster.local")
    p.add_argument("--bind-address", default="0.0.0.0", help="address of the manifests' ports")
    p.add_argument("--secret", help="affinity cookie key shared by replicas (or WSLB_SECRET)")
    acme = p.add_argument_group("ACME, for manifests (-f): docs/acme.md")
    acme.add_argument("--acme-directory", help="ACME directory URL (default: Let's Encrypt)")
    acme.add_argument("--acme-email", help="contact e-mail of the ACME account")
    acme.add_argument("--acme-storage", default="acme", metavar="DIR", help="default: ./acme")
    acme.add_argument("--acme-challenge", choices=["http-01", "tls-alpn-01"], default="http-01")
    acme.add_argument("--acme-ca-file", metavar="PEM", help="CA to trust the directory with")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wslb", description="WebSocket-aware load balancer")
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the load balancer")
    _add_source(serve)
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
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="json: one object per line, access-log lines with their fields",
    )
    serve.add_argument(
        "--watch",
        action="store_true",
        help="reload when the config file, a manifest or a certificate file changes "
        "(SIGHUP always reloads)",
    )

    check = sub.add_parser("check", help="validate a configuration and print every problem")
    _add_source(check)

    render = sub.add_parser("render", help="print the wslb YAML config that manifests mean")
    _add_source(render, kubernetes_only=True)
    return p


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
        if any(i.severity == "error" for i in issues):
            raise ConfigError(issues)
        options = ManifestOptions(
            endpoints=dict(args.endpoints),
            port_map=args.port_map,
            certificates_dir=args.certificates,
            ingress_class=args.ingress_class,
            dns_suffix=args.dns_suffix,
            bind_address=args.bind_address,
            secret=args.secret or os.environ.get("WSLB_SECRET"),
            acme=_acme_options(args),
        )
        config, more = translate(objects, options)
        return config, issues + more
    except ConfigError as exc:
        return None, exc.issues


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


def _print_issues(issues: list[ConfigIssue]) -> None:
    for issue in issues:
        print(issue, file=sys.stderr)


def _summary(where: str, issues: list[ConfigIssue]) -> str:
    errors = sum(1 for i in issues if i.severity == "error")
    warnings = sum(1 for i in issues if i.severity == "warning")
    return f"{where}: {errors} error(s), {warnings} warning(s)"


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
    where = getattr(args, "config", None) or ", ".join(args.filename)
    if args.command in ("check", "render"):
        config, issues = _load(args)
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

    _setup_logging(args.log_level, args.log_format)
    config, issues = _load(args)
    _print_issues(issues)
    if config is None:
        return 1
    if args.workers is not None and args.workers < 1:
        print("--workers must be at least 1", file=sys.stderr)
        return 2
    from wslb.server.lifecycle import serve

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
            load=lambda: _load(args),
            watch=watch,
            admin=args.admin,
            admin_token=args.admin_token or os.environ.get("WSLB_ADMIN_TOKEN"),
        )
    except OSError as exc:
        logging.getLogger("wslb").error("cannot start: %s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
