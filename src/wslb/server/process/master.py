"""Start, serve, drain and stop: one worker, or a master with N forked workers.

Workers share each port with SO_REUSEPORT: the master binds first (which also resolves port 0
to a real port) and keeps those sockets bound but not listening; each worker binds its own
listening socket to the same address, and the kernel spreads new connections across them.

SIGTERM or SIGINT drains a worker: it stops accepting, closes idle keep-alive connections,
lets in-flight requests finish, and after ``server.shutdown_grace`` closes what is left (tunnels
included). On SIGTERM, readiness (``/readyz``) answers 503 at once, and the worker keeps
accepting and serving for ``server.shutdown_delay`` first: a cloud load balancer and kube-proxy
take seconds to stop sending new connections to a pod that is going (SIGINT, a person's Ctrl-C,
skips the delay). The master forwards the signal to every worker and waits for them; the admin
and probe listeners and the controller stop after the last worker. A worker that dies
unexpectedly is started again.

SIGHUP (or a change of a watched path, ``--watch``) reloads: the configuration is read and
validated again; if it has errors they are logged and the running one stays. Otherwise every
worker swaps it in without a restart (:meth:`Runtime.apply`): established connections, requests
in flight and tunnels keep going on what they started with; new requests see the new routes at
once, on connections that are already open too. With several workers, the master validates,
writes the new configuration to a private file and signals the workers, which read that file:
all of them serve the same one, and a worker started later starts with it.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import select
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Protocol

from wslb.config.model import Config
from wslb.errors import ConfigIssue
from wslb.server.observe.admin import AdminServer, is_loopback
from wslb.server.observe.metrics import mark_stopping
from wslb.server.process.listener import bind_socket
from wslb.server.process.reload import Loader, Ready, Watcher, _carry_over, _reload_source, checked
from wslb.server.process.worker import run_worker

log = logging.getLogger("wslb.server")
CONTROLLER = -2  # the controller process's index among the master's children


class ControllerChild(Protocol):
    """A process of the master's that sends it SIGHUP with each new configuration."""

    pid: int

    def spawn(self) -> None: ...

    def stale(self) -> bool: ...


def write_ready_file(
    path: str,
    bound: dict[str, tuple[str, int]],
    workers: int,
    admin: tuple[str, int] | None = None,
    probes: tuple[str, int] | None = None,
) -> None:
    data: dict[str, object] = {
        "pid": os.getpid(),
        "workers": workers,
        "listeners": {name: {"address": a, "port": p} for name, (a, p) in bound.items()},
    }
    if admin is not None:
        data["admin"] = {"address": admin[0], "port": admin[1]}
    if probes is not None:
        data["probes"] = {"address": probes[0], "port": probes[1]}
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)


def _notify(fd: int) -> None:
    os.write(fd, b"R")


def serve(
    config: Config,
    *,
    workers: int | None = None,
    ready_file: str | None = None,
    load: Loader | None = None,
    watch: list[str] | None = None,
    admin: tuple[str, int] | None = None,
    admin_token: str | None = None,
    controller: ControllerChild | None = None,
    probes: tuple[str, int] | None = None,
) -> int:
    """Run wslb. ``load`` reads the configuration again for a reload (SIGHUP; and every
    change of the ``watch`` paths); without it SIGHUP is ignored. ``admin``: the address of
    the admin listener (server/observe/admin.py). ``controller``: the process that watches the
    Kubernetes API (controller/process.py), already running; the master restarts it if it
    dies, so with it there is always a master, even for one worker. ``probes``: the address of
    the probe listener (/healthz, /readyz, /metrics with no token)."""
    n = workers or config.server.workers
    # One random key for this start, shared by the workers forked below (replicas that must
    # agree on affinity cookies are given the same `server.secret`); and the real number of
    # workers, which per-worker shares of limits are computed from.
    server = config.server.model_copy(
        update={"secret": config.server.secret or secrets.token_hex(32), "workers": n}
    )
    config = config.model_copy(update={"server": server})
    if admin is not None and not is_loopback(admin[0]) and not admin_token:
        raise OSError(
            f"the admin listener on {admin[0]} (not loopback) needs a token: --admin-token "
            "or WSLB_ADMIN_TOKEN"
        )
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until someone handles it
    sockets = {lst.name: bind_socket(lst.address, lst.port) for lst in config.listeners}
    bound = {name: sock.getsockname()[:2] for name, sock in sockets.items()}
    state_dir = tempfile.mkdtemp(prefix="wslb-")  # 0700: snapshots, drains, reloads
    admin_server = None
    if admin is not None or probes is not None:
        admin_server = AdminServer(
            admin, state_dir, n, _validator(load), os.getpid(), admin_token, probes
        )
        admin, probes = admin_server.address, admin_server.probes_address

    def announce(b: dict[str, tuple[str, int]]) -> None:
        if ready_file:
            write_ready_file(ready_file, b, n, admin, probes)

    try:
        if n == 1 and controller is None:
            if admin_server is not None:
                admin_server.start_thread()
            run_worker(
                config,
                sockets,
                0,
                announce,
                load,
                watch if load else None,
                state_dir if admin_server is not None else None,
            )
            return 0
        master = _Master(config, n, sockets, bound, announce, load, watch, state_dir)
        master.controller = controller
        return master.run(admin_server)
    finally:
        if admin_server is not None:
            admin_server.close()
        shutil.rmtree(state_dir, ignore_errors=True)


def _validator(load: Loader | None) -> Callable[[], list[str]] | None:
    """For the admin API's reload: the configuration source's errors, read afresh."""
    if load is None:
        return None
    loader = load

    def validate() -> list[str]:
        config, issues = _reload_source(loader)
        return [] if config is not None else [str(i) for i in issues if i.severity == "error"]

    return validate


class _Master:
    """Forks the workers, restarts those that die, relays SIGTERM/SIGINT, and validates and
    hands out reloads."""

    def __init__(
        self,
        config: Config,
        n: int,
        sockets: dict[str, socket.socket],
        bound: dict[str, tuple[str, int]],
        announce: Ready,
        load: Loader | None,
        watch: list[str] | None,
        state_dir: str,
    ) -> None:
        self.config = config
        self.n = n
        self.sockets = sockets
        self.bound = bound
        self.announce = announce
        self.load = load
        self.watcher = Watcher(watch) if watch and load else None
        self.children: dict[int, int] = {}
        self.stopping = False
        self.hup = False
        self.ready_r, self.ready_w = os.pipe()
        self.private = state_dir  # 0700: the configuration for workers, snapshots
        self.config_file = os.path.join(self.private, "config.json")
        self.admin: AdminServer | None = None
        self.admin_pid = 0
        self.controller: ControllerChild | None = None
        self.reloads_refused = 0
        self._write_config()

    def _write_config(self) -> None:
        tmp = self.config_file + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(self.config.model_dump_json())
        os.replace(tmp, self.config_file)

    def _worker_load(self) -> tuple[Config | None, list[ConfigIssue]]:
        with open(self.config_file, encoding="utf-8") as fh:
            return Config.model_validate_json(fh.read()), []

    def spawn(self, index: int) -> None:
        pid = os.fork()
        if pid == 0:  # worker
            code = 1
            try:
                os.close(self.ready_r)
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the worker's loop takes it
                own = {name: bind_socket(a, p) for name, (a, p) in self.bound.items()}
                for s in self.sockets.values():
                    s.close()
                ready_w = self.ready_w
                run_worker(
                    self.config,
                    own,
                    index,
                    lambda _b: _notify(ready_w),
                    self._worker_load if self.load else None,
                    None,
                    self.private if self.admin is not None else None,
                )
                code = 0
            except BaseException:
                log.exception("worker %d failed", index)
            finally:
                os._exit(code)
        self.children[pid] = index

    def on_signal(self, signum: int, _frame: object) -> None:
        """SIGTERM/SIGINT: readiness 503 at once, and the signal to every worker (which keep
        accepting for ``server.shutdown_delay`` after a SIGTERM, then drain)."""
        if not self.stopping:
            mark_stopping(self.private)
        self.stopping = True
        for pid, index in list(self.children.items()):
            if index >= 0:
                try:
                    os.kill(pid, signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM)
                except ProcessLookupError:
                    pass
        self._stop_helpers()

    def _stop_helpers(self) -> None:
        """The admin/probe listener and the controller go once the last worker is gone: the
        kubelet's liveness probe keeps its answer while the workers drain."""
        if any(index >= 0 for index in self.children.values()):
            return
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def on_hup(self, signum: int, _frame: object) -> None:
        self.hup = True

    def spawn_admin(self) -> None:
        """The admin listener's own process: the master keeps no threads of its own."""
        assert self.admin is not None
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                signal.set_wakeup_fd(-1)
                for sig in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(sig, lambda *_: os._exit(0))  # nothing to drain here
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
                os.close(self.ready_r)
                for s in self.sockets.values():
                    s.close()
                self.admin.serve_forever()
                code = 0
            except BaseException:
                log.exception("admin listener failed")
            finally:
                os._exit(code)
        self.admin_pid = pid
        self.children[pid] = -1

    def _write_master(self) -> None:
        path = os.path.join(self.private, "master.json")
        with open(path + ".tmp", "w", encoding="utf-8") as fh:
            json.dump({"pid": os.getpid(), "reloads_refused": self.reloads_refused}, fh)
        os.replace(path + ".tmp", path)

    def reload(self) -> None:
        assert self.load is not None
        config = checked(self.load)
        if config is None:
            self.reloads_refused += 1
            self._write_master()
            return
        self.config = _carry_over(config, self.config)
        self._write_config()
        log.info("master %d: configuration reloaded; telling the workers", os.getpid())
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGHUP)
            except ProcessLookupError:
                pass

    def run(self, admin: AdminServer | None = None) -> int:
        self.admin = admin  # closed by serve() when this returns
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGTERM, self.on_signal)
        signal.signal(signal.SIGINT, self.on_signal)
        signal.signal(signal.SIGHUP, self.on_hup if self.load else signal.SIG_IGN)
        for i in range(self.n):
            self.spawn(i)
        if self.admin is not None:
            self._write_master()
            self.spawn_admin()
        if self.controller is not None:
            self.children[self.controller.pid] = CONTROLLER
            self.hup = self.controller.stale()  # a change while we were starting

        ready = 0
        deadline = time.monotonic() + 60
        while ready < self.n and not self.stopping and time.monotonic() < deadline:
            r, _, _ = select.select([self.ready_r], [], [], 0.2)
            if r:
                ready += len(os.read(self.ready_r, 64))
            pid, _status = os.waitpid(-1, os.WNOHANG)
            index = self.children.pop(pid, -1) if pid else None
            if index == CONTROLLER and self.controller is not None:
                log.error("the controller exited during start-up; starting it again")
                self.controller.spawn()
                self.children[self.controller.pid] = CONTROLLER
            elif pid:
                log.error("worker %d exited during start-up", index)
                self.on_signal(signal.SIGTERM, None)
        if ready >= self.n:
            log.info("master %d: %d workers ready", os.getpid(), self.n)
            self.announce(self.bound)

        code = 0
        while self.children:
            r, _, _ = select.select([wake_r, self.ready_r], [], [], 1.0)
            if wake_r in r:
                os.read(wake_r, 512)
            if self.ready_r in r:
                os.read(self.ready_r, 64)  # a restarted worker is up
            if not self.stopping and (
                self.hup or (self.watcher is not None and self.watcher.changed())
            ):
                self.hup = False
                self.reload()
            while self.children:
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    self.children.clear()
                    break
                if not pid:
                    break
                index = self.children.pop(pid, None)
                if index is None:
                    continue
                if not self.stopping:
                    what = {-1: "the admin listener", CONTROLLER: "the controller"}.get(
                        index, f"worker {index}"
                    )
                    log.error(
                        "%s (pid %d) died with status %d; starting it again", what, pid, status
                    )
                    time.sleep(0.5)
                    if index == CONTROLLER and self.controller is not None:
                        self.controller.spawn()
                        self.children[self.controller.pid] = CONTROLLER
                    elif index < 0:
                        self.spawn_admin()
                    else:
                        self.spawn(index)
                else:
                    if os.waitstatus_to_exitcode(status) != 0:
                        code = 1
                    self._stop_helpers()
        signal.set_wakeup_fd(-1)
        for s in self.sockets.values():
            s.close()
        sys.stdout.flush()
        return code
