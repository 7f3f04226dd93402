"""OCSP stapling: a listener certificate whose chain allows it (the leaf names an OCSP responder
in its Authority Information Access, and its issuer is in the chain) gets a fresh OCSP
response from that responder, checked, and sent to every client that asks for one
(``status_request``), over TLS 1.2 and 1.3.

As nginx's ``ssl_stapling`` does: the response is fetched in the background (never during a
handshake), checked (it answers for this certificate, it is signed by the issuer or by a
responder the issuer delegated to, it has not expired), kept until halfway to its
``nextUpdate`` (hourly without one) and fetched again then; a failed fetch is retried with
backoff while the previous response keeps being stapled until it expires. Handshakes go on
without a staple when there is none. The response is encoded with ``cryptography``; the
callback that hands it to OpenSSL is in :mod:`wslb.server.openssl`.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import ssl
import urllib.request

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from wslb.server.core import openssl

log = logging.getLogger("wslb.tls")
FETCH_TIMEOUT = 10.0


RETRY_FIRST, RETRY_MAX = 30.0, 3600.0
REFRESH_WITHOUT_NEXT_UPDATE = 3600.0


class OCSPProblem(ValueError):
    pass


def responder_url(leaf: x509.Certificate) -> str | None:
    try:
        aia = leaf.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return None
    for desc in aia:
        if desc.access_method == AuthorityInformationAccessOID.OCSP and isinstance(
            desc.access_location, x509.UniformResourceIdentifier
        ):
            url = desc.access_location.value
            if url.startswith(("http://", "https://")):
                return url
    return None


def _verify(signer: x509.Certificate, signature: bytes, data: bytes, algo: object) -> None:
    key = signer.public_key()
    hash_algo = algo if isinstance(algo, hashes.HashAlgorithm) else hashes.SHA256()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), hash_algo)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(hash_algo))
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(signature, data)
        else:
            raise OCSPProblem(f"cannot check a {type(key).__name__} signature")
    except InvalidSignature:
        raise OCSPProblem("the response's signature does not verify") from None


def check_response(
    der: bytes, leaf: x509.Certificate, issuer: x509.Certificate, now: datetime.datetime
) -> datetime.datetime | None:
    """Check an OCSP response for ``leaf``; its nextUpdate (None: none given)."""
    try:
        resp = ocsp.load_der_ocsp_response(der)
    except ValueError as exc:
        raise OCSPProblem(f"not an OCSP response: {exc}") from None
    if resp.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise OCSPProblem(f"responder says {resp.response_status.name}")
    if resp.serial_number != leaf.serial_number:
        raise OCSPProblem("the response is for another certificate")
    signer = issuer
    if resp.certificates:
        # A delegated responder: its certificate, issued by the issuer, for OCSP signing.
        delegate = resp.certificates[0]
        _verify(
            issuer,
            delegate.signature,
            delegate.tbs_certificate_bytes,
            delegate.signature_hash_algorithm,
        )
        try:
            eku = delegate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            eku = None
        if eku is None or ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
            raise OCSPProblem("the responder's certificate is not for OCSP signing")
        signer = delegate
    _verify(signer, resp.signature, resp.tbs_response_bytes, resp.signature_hash_algorithm)
    if resp.certificate_status == ocsp.OCSPCertStatus.REVOKED:
        log.warning("OCSP: certificate %x is REVOKED", leaf.serial_number)
    this_update = resp.this_update_utc
    next_update = resp.next_update_utc
    if this_update > now + datetime.timedelta(minutes=5):
        raise OCSPProblem("the response is from the future")
    if next_update is not None and next_update <= now:
        raise OCSPProblem("the response has expired")
    return next_update


def _post(url: str, body: bytes) -> bytes:
    req = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/ocsp-request"}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=FETCH_TIMEOUT) as resp:
        data: bytes = resp.read(1024 * 1024)
        return data


class Stapler:
    """The OCSP response of one certificate, kept fresh in the background."""

    def __init__(self, leaf: x509.Certificate, issuer: x509.Certificate, url: str) -> None:
        self.leaf = leaf
        self.issuer = issuer
        self.url = url
        self.der: bytes | None = None
        self.expires: datetime.datetime | None = None
        self.task: asyncio.Task[None] | None = None
        self.fetches = 0

    def response(self) -> bytes | None:
        """What to staple now (called in the handshake)."""
        if self.der is None:
            return None
        if self.expires is not None and self.expires <= _now():
            self.der = None
            return None
        return self.der

    async def fetch(self) -> float:
        """Fetch and check a response; seconds until the next fetch."""
        builder = ocsp.OCSPRequestBuilder().add_certificate(self.leaf, self.issuer, hashes.SHA1())
        body = builder.build().public_bytes(serialization.Encoding.DER)
        der = await asyncio.to_thread(_post, self.url, body)
        now = _now()
        next_update = check_response(der, self.leaf, self.issuer, now)
        self.der, self.expires = der, next_update
        self.fetches += 1
        if next_update is None:
            return REFRESH_WITHOUT_NEXT_UPDATE
        return max(60.0, (next_update - now).total_seconds() / 2)

    async def run(self) -> None:
        retry = RETRY_FIRST
        while True:
            try:
                wait = await self.fetch()
                retry = RETRY_FIRST
                log.info("OCSP: response for %x from %s stapled", self.leaf.serial_number, self.url)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # OSError, HTTPException, a bad response: try again later
                log.warning(
                    "OCSP: no fresh response for %x from %s (%s); retry in %ds",
                    self.leaf.serial_number,
                    self.url,
                    exc,
                    retry,
                )
                wait, retry = retry, min(retry * 2, RETRY_MAX)
            await asyncio.sleep(wait)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.task is None or self.task.done():
            self.task = loop.create_task(self.run())

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def stapler_for(ctx: ssl.SSLContext, chain_pem: bytes) -> Stapler | None:
    """A stapler for the certificate ``ctx`` serves, when its chain allows one (and OpenSSL can
    be given a status callback); it staples once started."""
    chain = x509.load_pem_x509_certificates(chain_pem)
    leaf = chain[0]
    url = responder_url(leaf)
    if url is None:
        return None
    issuer = next((c for c in chain[1:] if c.subject == leaf.issuer), None)
    if issuer is None:
        log.info("OCSP: %s names a responder but its chain has no issuer; no stapling", url)
        return None
    stapler = Stapler(leaf, issuer, url)
    try:
        openssl.set_status_callback(ctx, stapler.response)
    except OSError as exc:
        log.warning("OCSP stapling is not available: %s", exc)
        return None
    return stapler
