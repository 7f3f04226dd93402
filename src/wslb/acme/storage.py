"""ACME storage: one directory, shared by every worker (and by replicas on a shared volume).

    account.json            the account's URL and key (JWK), 0600
    certificates/NAME/      fullchain.pem, key.pem (0600), hosts.json
    challenges/http-01/TOKEN           key authorization of a pending HTTP-01 challenge
    challenges/tls-alpn-01/HOST.pem    validation certificate and key of a pending TLS-ALPN-01
    locks/certificate-NAME.lock   held (flock) by the one process ordering NAME
    locks/account.lock      held while the account is read or made

Files are written to a temporary name and renamed, so a reader sees a whole file or the old
one. Orders are serialised by ``flock`` on the certificate's lock file: the process holding it
orders, the others wait for the result to appear (no duplicate orders; a lock dies with its
process, so a crashed worker never blocks the others).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

_SAFE = re.compile(r"^[A-Za-z0-9._*-]{1,255}$")


def _safe(name: str) -> str:
    """A host or a token as one path component (refused when it cannot be one)."""
    if not _SAFE.match(name) or name in (".", ".."):
        raise ValueError(f"{name!r} cannot name a file")
    return name.replace("*", "_wildcard_")


def _file_name(name: str) -> str:
    """Any certificate name as one path component: itself when it can be, else a readable
    form plus a hash of the name (so two names never share a directory)."""
    if _SAFE.match(name) and name not in (".", "..") and len(name) <= 100:
        return name.replace("*", "_wildcard_")
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-")[:60] or "certificate"
    return f"{readable}-{hashlib.sha256(name.encode()).hexdigest()[:12]}"


@dataclass(frozen=True)
class StoredCertificate:
    fullchain_pem: bytes
    key_pem: bytes
    hosts: tuple[str, ...]
    not_before: datetime.datetime
    not_after: datetime.datetime
    serial: int
    stamp: float  # mtime of the chain file: changes with every new certificate

    def renew_at(self, fraction: float) -> datetime.datetime:
        """When to renew: ``fraction`` of the lifetime before it ends."""
        return self.not_after - (self.not_after - self.not_before) * fraction


class Storage:
    def __init__(self, root: str) -> None:
        self.root = Path(root)

    def prepare(self) -> None:
        for sub in ("certificates", "challenges/http-01", "challenges/tls-alpn-01", "locks"):
            (self.root / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.root, 0o700)

    # ---- files
    def _write(self, path: Path, data: bytes, mode: int = 0o600) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    # ---- account
    def load_account(self) -> dict[str, str] | None:
        try:
            data: dict[str, str] = json.loads((self.root / "account.json").read_text())
        except (OSError, ValueError):
            return None
        return data

    def save_account(self, directory: str, uri: str, key_json: str) -> None:
        doc = {"directory": directory, "uri": uri, "key": key_json}
        self._write(self.root / "account.json", json.dumps(doc).encode())

    # ---- certificates
    def _cert_dir(self, name: str) -> Path:
        return self.root / "certificates" / _file_name(name)

    def load_certificate(self, name: str) -> StoredCertificate | None:
        try:
            d = self._cert_dir(name)
            chain = (d / "fullchain.pem").read_bytes()
            stamp = (d / "fullchain.pem").stat().st_mtime
            key = (d / "key.pem").read_bytes()
            hosts = tuple(str(h) for h in json.loads((d / "hosts.json").read_text()))
            leaf = x509.load_pem_x509_certificates(chain)[0]
        except (OSError, ValueError, TypeError, IndexError):
            return None
        return StoredCertificate(
            chain,
            key,
            hosts,
            leaf.not_valid_before_utc,
            leaf.not_valid_after_utc,
            leaf.serial_number,
            stamp,
        )

    def save_certificate(
        self, name: str, hosts: tuple[str, ...], fullchain_pem: bytes, key_pem: bytes
    ) -> None:
        d = self._cert_dir(name)
        self._write(d / "key.pem", key_pem)
        self._write(d / "hosts.json", json.dumps(list(hosts)).encode())
        self._write(d / "fullchain.pem", fullchain_pem)  # last: its mtime marks a new one

    # ---- backoff after a failure, shared by every process
    def retry_state(self, name: str, hosts: tuple[str, ...]) -> tuple[float, float] | None:
        """(time of the next attempt, the delay that led to it) after a failed order for
        these hosts (a certificate whose hosts changed starts afresh)."""
        try:
            data = json.loads((self._cert_dir(name) / "retry.json").read_text())
            if data.get("hosts") != list(hosts):
                return None
            return float(data["at"]), float(data["delay"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def set_retry(self, name: str, hosts: tuple[str, ...], at: float, delay: float) -> None:
        data = json.dumps({"hosts": list(hosts), "at": at, "delay": delay}).encode()
        self._write(self._cert_dir(name) / "retry.json", data)

    def clear_retry(self, name: str) -> None:
        with contextlib.suppress(OSError):
            (self._cert_dir(name) / "retry.json").unlink()

    def tls_alpn01_pending(self, max_age: float) -> bool:
        """Whether a TLS-ALPN-01 challenge is pending (one older than ``max_age`` seconds was
        left by a process that died mid-order: not pending)."""
        now = time.time()
        try:
            for p in (self.root / "challenges" / "tls-alpn-01").iterdir():
                if p.suffix == ".pem" and now - p.stat().st_mtime < max_age:
                    return True
        except OSError:
            pass
        return False

    # ---- challenges
    def put_http01(self, token: str, key_authorization: str) -> None:
        self._write(self.root / "challenges" / "http-01" / _safe(token), key_authorization.encode())

    def http01(self, token: str) -> bytes | None:
        try:
            return (self.root / "challenges" / "http-01" / _safe(token)).read_bytes()
        except (OSError, ValueError):
            return None

    def drop_http01(self, token: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            (self.root / "challenges" / "http-01" / _safe(token)).unlink()

    def tls_alpn01_path(self, host: str) -> Path:
        return self.root / "challenges" / "tls-alpn-01" / (_safe(host) + ".pem")

    def put_tls_alpn01(self, host: str, pem: bytes) -> None:
        self._write(self.tls_alpn01_path(host), pem)

    def drop_tls_alpn01(self, host: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.tls_alpn01_path(host).unlink()

    # ---- locks
    @contextlib.contextmanager
    def account_lock(self) -> Iterator[None]:
        """Held while the account is read or made (waits for another process making it)."""
        fd = os.open(self.root / "locks" / "account.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    @contextlib.contextmanager
    def order_lock(self, name: str) -> Iterator[bool]:
        """Yields True while this process holds ``name``'s order lock, False when another
        process holds it (never waits)."""
        path = self.root / "locks" / ("certificate-" + _file_name(name) + ".lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
