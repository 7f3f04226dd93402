"""The container image (Containerfile), built as `make image` builds it: deploy/image/build.sh
(a Debian base made with mmdebstrap, wheels built here, buildah with vfs storage under
build/image, no registry). Its configuration is checked (numeric non-root user, the wslb entry
point, no HEALTHCHECK), it holds no compiler, and `wslb serve` run from it with `buildah run`
(chroot isolation: the host's network) proxies a request from here to a backend here.

The base, the wheels and an image of the same inputs are reused from earlier builds. On 2
cores: 2.5 minutes the first time (the build 2), 2 after a change of src/, 35 s with the image up
to date (`buildah from` with vfs storage copies the whole image: 15-30 s).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.integration.conftest import endpoints, http_config
from tests.support.procs import ROOT, Proc, scaled, start_backend

BUILD = ROOT / "deploy" / "image" / "build.sh"
IMAGE = "localhost/wslb:dev"
BUILD_TIMEOUT = 900  # a cold build (mmdebstrap, wheels from PyPI, buildah) takes ~2 minutes

pytestmark = [
    pytest.mark.timeout(BUILD_TIMEOUT + 180),
    pytest.mark.skipif(
        os.geteuid() != 0,
        reason="the image build needs root (mmdebstrap's root mode, buildah's chroot isolation "
        "and vfs storage); CI runs as root",
    ),
]


def buildah(*args: str, timeout: float = 60) -> str:
    """buildah on the build script's storage; its output (stdout)."""
    done = subprocess.run(
        [str(BUILD), "buildah", *args],
        capture_output=True,
        text=True,
        timeout=scaled(timeout),
        cwd=str(ROOT),
    )
    if done.returncode != 0:
        raise RuntimeError(f"buildah {' '.join(args)}: exit {done.returncode}\n{done.stderr}")
    return done.stdout


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Builds the image (or finds it up to date) and returns `buildah inspect` of it."""
    log = tmp_path_factory.mktemp("image") / "build.log"
    with open(log, "wb") as out:
        try:
            done = subprocess.run(
                [str(BUILD)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "WHEEL_PYTHON": sys.executable, "WSLB_IMAGE": IMAGE},
                cwd=str(ROOT),
                timeout=scaled(BUILD_TIMEOUT),
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"{BUILD} took more than {BUILD_TIMEOUT}s:\n{log.read_text()[-4000:]}")
    if done.returncode != 0:
        pytest.fail(f"{BUILD} exited with {done.returncode}:\n{log.read_text()[-4000:]}")
    info: dict[str, Any] = json.loads(buildah("inspect", "--type", "image", IMAGE))
    return info


@pytest.fixture(scope="module")
def container(image: dict[str, Any]) -> Iterator[str]:
    """A working container of the image, removed afterwards."""
    name = f"wslb-test-{os.getpid()}"
    buildah("from", "--pull=never", "--name", name, IMAGE)
    yield name
    buildah("rm", name)


def test_image_config(image: dict[str, Any]) -> None:
    config = image["OCIv1"]["config"]
    user, _, group = config["User"].partition(":")
    assert user.isdigit() and int(user) != 0, config["User"]  # runAsNonRoot can check it
    assert group.isdigit() and int(group) != 0, config["User"]
    assert config["Entrypoint"] == ["/opt/wslb/bin/wslb"]
    assert config["Cmd"] == ["controller"]
    assert config["WorkingDir"] == "/var/lib/wslb"
    assert image["Docker"]["config"].get("Healthcheck") is None  # the kubelet probes
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == "wslb"
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"


COMPILERS = {"cc", "gcc", "c++", "g++", "cpp", "clang", "tcc", "ld", "as"}


def test_image_holds_no_compiler(container: str) -> None:
    mount = Path(buildah("mount", container).strip())
    try:
        found = [
            str(path.relative_to(mount))
            for bin_dir in ("usr/bin", "usr/sbin", "usr/local/bin", "opt/wslb/bin")
            for path in (mount / bin_dir).glob("*")
            if path.name in COMPILERS or path.name.startswith(("x86_64-linux-gnu-", "gcc-"))
        ]
        found += [  # gcc's compilers proper
            str(path.relative_to(mount))
            for lib_dir in ("usr/lib", "usr/libexec")
            for path in (mount / lib_dir).rglob("cc1*")
        ]
    finally:
        buildah("umount", container)
    assert found == []


def test_image_user_and_dependencies(image: dict[str, Any], container: str) -> None:
    """The image's user runs it; what wslb imports lazily is there (the venv lost pip and
    setuptools: nothing may need pkg_resources)."""
    out = buildah(
        "run",
        "--isolation",
        "chroot",
        container,
        "--",
        "python",
        "-c",
        "import os, acme.client, kubernetes_asyncio.client, kubernetes_validate, wslb.cli; "
        "print(os.getuid(), os.environ['WSLB_STATE_DIR'], os.access('/var/lib/wslb', os.W_OK))",
    )
    user = image["OCIv1"]["config"]["User"].partition(":")[0]
    assert out.split() == [user, "/var/lib/wslb", "True"]


def test_serve_from_image(container: str, tmp_path: Path) -> None:
    backend = start_backend("image", tmp_path)
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    cfg.chmod(0o777)  # the image's user writes the ready file here
    (cfg / "wslb.yaml").write_text(yaml.safe_dump(http_config(endpoints([backend]))))
    ready = cfg / "ready.json"
    run = Proc(
        [
            str(BUILD),
            "buildah",
            "run",
            "--isolation",
            "chroot",
            "--network",
            "host",
            "-v",
            f"{cfg}:/cfg",
            container,
            "--",
            "wslb",
            "serve",
            "-c",
            "/cfg/wslb.yaml",
            "--ready-file",
            "/cfg/ready.json",
            "--log-level",
            "info",
        ],
        ready,
    )
    try:
        info = run.wait_ready(timeout=60)
        port = int(info["listeners"]["web"]["port"])
        with httpx.Client(trust_env=False, timeout=scaled(10)) as client:
            r = client.get(f"http://127.0.0.1:{port}/through/the/image", params={"q": "1"})
        assert r.status_code == 200, r.text
        echo = r.json()
        assert echo["server"] == "image"
        assert echo["path"] == "/through/the/image"
        stop_wslb(run, int(info["pid"]))
        assert run.proc.returncode == 0, run.output()
        assert "stopped" in run.output()
    finally:
        run.stop()
        backend.stop()


def stop_wslb(run: Proc, pid: int) -> None:
    """SIGTERM to wslb itself (its PID from the ready file: chroot isolation keeps the host's
    PID namespace), for a graceful stop: buildah answers a SIGTERM by killing its child. Then
    `buildah run` exits, bounded."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        cmdline = []
    if b"serve" in cmdline and any(part.endswith(b"/wslb") for part in cmdline):
        os.kill(pid, signal.SIGTERM)
    else:  # not the host's PID after all: stop buildah run
        run.signal(signal.SIGTERM)
    run.proc.wait(scaled(30))
