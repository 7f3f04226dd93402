"""The controller in a process of its own, beside the master and its workers.

``wslb controller`` forks it before anything is bound: it connects, lists every kind, and
writes the first configuration, which the master then binds its listeners for. Every later
configuration is written to the same private file (mode 0600, replaced atomically), and the
master is sent SIGHUP: it reloads from that file exactly as from a config file, and the workers
apply it (a change of endpoints only is applied without a reload, server/process/worker.py). The
master starts the controller again if it dies; while it is gone, or while the API is, the
running configuration stays.
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import signal
import tempfile
import time
from collections.abc import Coroutine
from typing import Any

import uvloop

from wslb.config.model import Config
from wslb.controller.controller import Controller, ControllerOptions
from wslb.errors import ConfigIssue

log = logging.getLogger("wslb.controller")


class ControllerProcess:
    def __init__(self, options: ControllerOptions) -> None:
        self.options = options
        self.dir = tempfile.mkdtemp(prefix="wslb-controller-")  # 0700
        self.path = os.path.join(self.dir, "config.json")
        self.pid = 0
        self.parent = os.getpid()  # whom SIGHUP tells of a new configuration
        self._ready_r = -1
        self._first: tuple[int, int, int] | None = None

    def spawn(self) -> None:
        respawn = self.pid != 0  # the master runs already: tell it by SIGHUP, as later on
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(ready_r)
                signal.set_wakeup_fd(-1)
                for sig in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(sig, lambda *_: os._exit(0))
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
                self._run(ready_w, respawn)
                code = 0
            except BaseException:
                log.exception("controller failed")
            finally:
                os._exit(code)
        os.close(ready_w)
        if self._ready_r >= 0:
            os.close(self._ready_r)
        self._ready_r = ready_r
        self.pid = pid

    def _run(self, ready_w: int, respawn: bool) -> None:
        first = [not respawn]

        def publish(config: Config) -> None:
            tmp = f"{self.path}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(config.model_dump_json())
            os.replace(tmp, self.path)
            if first[0]:
                first[0] = False
                os.write(ready_w, b"R")
                os.close(ready_w)
            else:
                try:
                    os.kill(self.parent, signal.SIGHUP)
                except ProcessLookupError:
                    os._exit(0)

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(self._while_parent_lives(Controller(self.options, publish).run()))

    async def _while_parent_lives(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` until the process that forked this one is gone (killed before it could
        stop us): an orphaned controller would hold the Lease and write statuses."""
        task = asyncio.get_running_loop().create_task(work)
        while not task.done():
            await asyncio.wait({task}, timeout=1.0)
            if os.getppid() != self.parent:
                log.warning("controller: the wslb process that started it is gone; exiting")
                task.cancel()
                break
        try:
            await task
        except asyncio.CancelledError:
            pass

    def wait_first(self, timeout: float) -> Config | None:
        """The first configuration, once the controller has synced; None if it died or took
        longer than ``timeout`` (an API that never answered)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r, _, _ = select.select([self._ready_r], [], [], min(1.0, deadline - time.monotonic()))
            if r:
                if not os.read(self._ready_r, 1):
                    return None  # the controller exited before its first configuration
                self._first = self._stamp()  # before reading: a write after it shows as stale
                config, _ = self.load()
                return config
        return None

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size  # each write is a new file (os.replace)

    def stale(self) -> bool:
        """Whether a newer configuration was written after the first was read (its SIGHUP
        may have come before the master listened for it)."""
        return self._stamp() != self._first

    def load(self) -> tuple[Config | None, list[ConfigIssue]]:
        with open(self.path, encoding="utf-8") as fh:
            return Config.model_validate_json(fh.read()), []

    def stop(self) -> None:
        if self.pid:
            try:  # only a child not yet reaped (by the master) is surely still ours
                if os.waitpid(self.pid, os.WNOHANG) == (0, 0):
                    os.kill(self.pid, signal.SIGTERM)
                    os.waitpid(self.pid, 0)
            except (ChildProcessError, ProcessLookupError):
                pass
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)
