"""Command line: ``wslb serve | check``. The only place that configures logging.

Exit codes: 0 success, 1 configuration refused, 2 usage error.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from wslb.config.file import read_config
from wslb.config.model import Config
from wslb.errors import ConfigError, ConfigIssue


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wslb", description="WebSocket-aware load balancer")
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the load balancer")
    serve.add_argument("-c", "--config", required=True, help="wslb YAML config file")
    serve.add_argument("--workers", type=int, default=None, help="worker processes (SO_REUSEPORT)")
    serve.add_argument(
        "--ready-file", default=None, help="write the bound addresses here (JSON) once serving"
    )
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])

    check = sub.add_parser("check", help="validate a configuration and print every problem")
    check.add_argument("-c", "--config", required=True, help="wslb YAML config file")
    return p


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s",
        stream=sys.stderr,
    )


def _load(path: str) -> tuple[Config | None, list[ConfigIssue]]:
    try:
        config, warnings = read_config(path)
    except ConfigError as exc:
        return None, exc.issues
    return config, warnings


def _print_issues(issues: list[ConfigIssue]) -> None:
    for issue in issues:
        print(issue, file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check":
        config, issues = _load(args.config)
        _print_issues(issues)
        errors = sum(1 for i in issues if i.severity == "error")
        warnings = len(issues) - errors
        if config is None:
            print(f"{args.config}: {errors} error(s), {warnings} warning(s)", file=sys.stderr)
            return 1
        print(f"{args.config}: OK ({warnings} warning(s))")
        return 0

    _setup_logging(args.log_level)
    config, issues = _load(args.config)
    _print_issues(issues)
    if config is None:
        return 1
    if args.workers is not None and args.workers < 1:
        print("--workers must be at least 1", file=sys.stderr)
        return 2
    from wslb.server.lifecycle import serve

    try:
        return serve(config, workers=args.workers, ready_file=args.ready_file)
    except OSError as exc:
        logging.getLogger("wslb").error("cannot start: %s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
