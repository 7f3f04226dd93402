"""OCSP stapling: a certificate that names a responder gets that responder's answer stapled to
handshakes that ask for it, over TLS 1.2 and 1.3, as ``openssl s_client -status`` sees it."""

from __future__ import annotations

import asyncio
import datetime
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID

from tests.integration.conftest import endpoints, http_config
from tests.support.procs import Proc, Wslb, scaled

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


class Responder:
    """A real OCSP responder over HTTP, answering for the test CA (signed with its key)."""

    def __init__(self, ca: trustme.CA, status: str = "good") -> None:
        self.ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
        self.ca_key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), None)
        self.status = status
        self.requests = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> Responder:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    def answer(self, body: bytes) -> bytes:
        if self.status == "garbage":
            return b"not an OCSP response"
        req = ocsp.load_der_ocsp_request(body)
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            ocsp.OCSPResponseBuilder()
            .add_response_by_hash(
                issuer_name_hash=req.issuer_name_hash,
                issuer_key_hash=req.issuer_key_hash,
                serial_number=req.serial_number,
                algorithm=req.hash_algorithm,
                cert_status=ocsp.OCSPCertStatus.GOOD,
                this_update=now - datetime.timedelta(minutes=1),
                next_update=now + datetime.timedelta(hours=1),
                revocation_time=None,
                revocation_reason=None,
            )
            .responder_id(ocsp.OCSPResponderEncoding.HASH, self.ca_cert)
        )
        resp = builder.sign(self.ca_key, hashes.SHA256())  # type: ignore[arg-type]
        return resp.public_bytes(serialization.Encoding.DER)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        body = await reader.readexactly(length)
        self.requests += 1
        out = self.answer(body)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/ocsp-response\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(out), out)
        )
        await writer.drain()
        writer.close()


def _leaf(ca: trustme.CA, ocsp_url: str, workdir: Path) -> tuple[str, str]:
    """A certificate for localhost whose AIA names ``ocsp_url``; chain (leaf, CA) and key."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    ca_key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url)
                    )
                ]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    chain, key_path = workdir / "ocsp-chain.pem", workdir / "ocsp-key.pem"
    chain.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + ca.cert_pem.bytes())
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(chain), str(key_path)


async def _s_client(port: int, version: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        "openssl",
        "s_client",
        "-connect",
        f"127.0.0.1:{port}",
        "-servername",
        "localhost",
        "-status",
        f"-tls{version}",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    async with asyncio.timeout(scaled(20)):
        out, _ = await proc.communicate()
    return out.decode(errors="replace")


async def _logged(lb: Wslb, text: str, timeout: float = 20) -> str:
    """Wait (without blocking the loop the responder runs in) until ``text`` is logged."""
    deadline = time.monotonic() + scaled(timeout)
    while text not in (out := lb.output()):
        assert time.monotonic() < deadline, f"{text!r} not logged:\n{out}"
        await asyncio.sleep(0.05)
    return out


def _stapling_wslb(
    wslb: Callable[..., Wslb],
    backends: list[Proc],
    ca: trustme.CA,
    responder: Responder,
    tmp_path: Path,
) -> Wslb:
    """A TLS listener whose certificate names ``responder`` as its OCSP responder."""
    chain, key = _leaf(ca, f"http://127.0.0.1:{responder.port}/", tmp_path)
    tls = {"certificate": chain, "key": key}
    return wslb(http_config(endpoints(backends[:1]), listener={"tls": tls}, protocol="https"))


@pytest.fixture
async def responder(ca: trustme.CA) -> AsyncIterator[Responder]:
    async with Responder(ca) as r:
        yield r


async def test_the_responders_answer_is_stapled(
    wslb: Callable[..., Wslb],
    backends: list[Proc],
    ca: trustme.CA,
    responder: Responder,
    tmp_path: Path,
) -> None:
    lb = _stapling_wslb(wslb, backends, ca, responder, tmp_path)
    port = lb.port("web")
    # the first fetch happens in the background at start: wait for it (bounded)
    await _logged(lb, "stapled")
    assert responder.requests == 1
    for version in ("1_2", "1_3"):
        out = await _s_client(port, version)
        assert "OCSP Response Status: successful" in out, out
        assert "Cert Status: good" in out, out
    assert responder.requests == 1  # handshakes are served from what was fetched


async def test_no_staple_without_a_good_answer_and_handshakes_go_on(
    wslb: Callable[..., Wslb],
    backends: list[Proc],
    ca: trustme.CA,
    responder: Responder,
    tmp_path: Path,
) -> None:
    responder.status = "garbage"
    lb = _stapling_wslb(wslb, backends, ca, responder, tmp_path)
    out = await _logged(lb, "no fresh response")
    assert out.count("no fresh response") == 1 and "Traceback" not in out
    got = await _s_client(lb.port("web"), "1_3")
    assert "OCSP response: no response sent" in got, got
    assert "Verify return code" in got  # the handshake completed


async def test_certificates_without_a_responder_are_not_stapled(
    wslb: Callable[..., Wslb], backends: list[Proc], server_cert: tuple[str, str]
) -> None:
    tls = {"certificate": server_cert[0], "key": server_cert[1]}
    lb = wslb(http_config(endpoints(backends[:1]), listener={"tls": tls}, protocol="https"))
    got = await _s_client(lb.port("web"), "1_3")
    assert "OCSP response: no response sent" in got, got
    # staplers are made with the TLS context, before wslb is ready: none was
    assert "OCSP" not in lb.output()
