"""What a reload needs before any worker sees it: the configuration read and checked again (the
running one stays if it has errors), what a listener change asks of its socket, what carries
over from the running configuration, and the watched paths (``--watch``)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from wslb.config.model import Config, ListenerSpec
from wslb.errors import ConfigIssue

log = logging.getLogger("wslb.server")

Ready = Callable[[dict[str, tuple[str, int]]], None]

Loader = Callable[[], tuple[Config | None, list[ConfigIssue]]]


def _carry_over(config: Config, running: Config) -> Config:
    """A reloaded configuration without ``server.secret`` keeps the running one, so affinity
    cookies and Engine.IO tags stay valid; the number of workers cannot change without a
    restart."""
    server = config.server.model_copy(
        update={
            "secret": config.server.secret or running.server.secret,
            "workers": running.server.workers,
        }
    )
    return config.model_copy(update={"server": server})


def _needs_socket(old: ListenerSpec, new: ListenerSpec) -> bool:
    """Whether a listener changed in a way its socket and TLS context cannot follow."""

    def key(s: ListenerSpec) -> tuple[object, ...]:
        return (s.address, s.port, s.protocol, s.proxy_protocol, s.tls, s.serves_http2)

    return key(old) != key(new)


def _reload_source(load: Loader) -> tuple[Config | None, list[ConfigIssue]]:
    """``load()``, with whatever it raises turned into an issue: a reload (SIGHUP, --watch,
    the admin API) must never take the running configuration down."""
    try:
        return load()
    except Exception as exc:
        return None, [ConfigIssue(source="reload", line=None, key="", message=str(exc))]


def checked(load: Loader) -> Config | None:
    """Load a configuration for a reload; log its problems. None if it has errors."""
    config, issues = _reload_source(load)
    for issue in issues:
        (log.error if issue.severity == "error" else log.warning)("reload: %s", issue)
    if config is None:
        errors = sum(1 for i in issues if i.severity == "error")
        log.error("reload refused: %d error(s); the running configuration stays", errors)
    return config


class Watcher:
    """Polls files (and the files under directories) for changes of size or mtime."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths
        self.seen = self.snapshot()

    def snapshot(self) -> dict[str, tuple[int, int]]:
        out: dict[str, tuple[int, int]] = {}
        for root in self.paths:
            files = [root]
            if os.path.isdir(root):
                files = sorted(os.path.join(d, f) for d, _, names in os.walk(root) for f in names)
            for path in files:
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                out[path] = (st.st_mtime_ns, st.st_size)
        return out

    def changed(self) -> bool:
        now = self.snapshot()
        if now == self.seen:
            return False
        self.seen = now
        return True
