"""SSL contexts: TLS termination on listeners and TLS towards ``https`` backends.

Listeners: TLS 1.2+ (1.3 only with ``min_version: "1.3"``), ECDHE with AEAD ciphers (the
Mozilla "intermediate" TLS 1.2 list, which has no CBC suite), key exchange over X25519, P-256
and P-384 only, no compression, no renegotiation. With several certificates SNI picks the one
whose names match (exact, then one-label wildcard); the first certificate is the default.

Session tickets are encrypted with keys derived from ``server.secret`` and the current period
of ``tls.ticket_rotation`` (HKDF-SHA256): every worker, and every replica given the same secret,
uses the same keys in the same period, so a client resumes on any of them; a new period brings
new keys (tickets of the previous one then get a full handshake).
"""

from __future__ import annotations

import logging
import os
import ssl
import tempfile
import time
from collections.abc import Sequence

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from wslb.acme.manager import AcmeManager
from wslb.config.certs import CertificatePair, load_pair, self_signed
from wslb.config.model import CertificateSpec, UpstreamTLSSpec
from wslb.server.core import openssl
from wslb.server.core.ocsp import Stapler, stapler_for

log = logging.getLogger("wslb.tls")

# Mozilla intermediate configuration, TLS 1.2 suites (TLS 1.3 suites are fixed by OpenSSL).
INTERMEDIATE_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "DHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
        "DHE-RSA-CHACHA20-POLY1305",
    ]
)


def _base_server_context(min_version: str, alpn: Sequence[str]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3 if min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    ctx.set_ciphers(INTERMEDIATE_CIPHERS)
    ctx.set_alpn_protocols(list(alpn))
    try:
        openssl.set_groups(ctx)
    except (OSError, ValueError) as exc:  # no access to OpenSSL, or a build without X25519
        _say_once(f"key-exchange groups left to OpenSSL's defaults: {exc}")
    return ctx


_said: set[str] = set()


def _say_once(message: str) -> None:
    if message not in _said:
        _said.add(message)
        log.warning("%s", message)


def ticket_keys(secret: bytes, period: int) -> bytes:
    """The session-ticket keys of one rotation period."""
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=openssl.TICKET_KEYS_LENGTH,
        salt=None,
        info=b"wslb session tickets %d" % period,
    )
    return hkdf.derive(secret or b"wslb")


def install_ticket_keys(ctx: ssl.SSLContext, secret: bytes, rotation: float) -> float:
    """Give ``ctx`` the keys of the current period; the time (``time.time()``) the next one
    starts."""
    now = time.time()
    period = int(now // rotation)
    try:
        openssl.set_ticket_keys(ctx, ticket_keys(secret, period))
    except OSError as exc:
        _say_once(f"session-ticket keys are not rotated (OpenSSL's own, per worker): {exc}")
    return (period + 1) * rotation


def _load_chain(ctx: ssl.SSLContext, pair: CertificatePair) -> None:
    _load_pems(ctx, pair.chain_pem, pair.key_pem)


def _load_pems(ctx: ssl.SSLContext, chain_pem: bytes, key_pem: bytes) -> None:
    """The ssl module loads chains from files only: write them to a private temporary
    directory, load, and remove them."""
    with tempfile.TemporaryDirectory(prefix="wslb-tls-") as tmp:
        chain, key = os.path.join(tmp, "chain.pem"), os.path.join(tmp, "key.pem")
        for path, data in ((chain, chain_pem), (key, key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
        ctx.load_cert_chain(chain, key)


def server_context(
    certificates: Sequence[CertificateSpec],
    min_version: str = "1.2",
    alpn: Sequence[str] = ("http/1.1",),
    staplers: list[Stapler] | None = None,
    acme: AcmeManager | None = None,
    served: list[CertificatePair] | None = None,
) -> ssl.SSLContext:
    """The context of a TLS listener; ``staplers`` gets the OCSP stapler of each certificate
    whose chain allows one (they staple once started), ``served`` each certificate loaded (the
    self-signed stand-in of hosts waiting for ACME aside). With ``acme``, the certificates it
    keeps serve their hosts first, and a self-signed one the hosts still waiting."""
    placeholder = not certificates
    if not certificates:
        if acme is None:
            raise ValueError("a TLS listener needs at least one certificate")
        chain, key = self_signed(sorted(acme.by_host) or ["localhost"])
        certificates = [
            CertificateSpec(certificate_pem=chain, key_pem=key, name="self-signed until ACME")
        ]
    contexts: list[tuple[tuple[str, ...], ssl.SSLContext]] = []
    for cert in certificates:
        pair = load_pair(cert)
        if served is not None and not placeholder:
            served.append(pair)
        ctx = _base_server_context(min_version, alpn)
        _load_chain(ctx, pair)
        contexts.append((pair.names, ctx))
        stapler = stapler_for(ctx, pair.chain_pem)
        if stapler is not None and staplers is not None:
            staplers.append(stapler)
    default = contexts[0][1]
    if len(contexts) == 1 and acme is None:
        return default
    exact: dict[str, ssl.SSLContext] = {}
    wildcard: dict[str, ssl.SSLContext] = {}
    # Specific certificates claim their names before the default (first) one does.
    for names, ctx in [*contexts[1:], contexts[0]]:
        for name in names:
            if name.startswith("*."):
                wildcard.setdefault(name[2:], ctx)
            else:
                exact.setdefault(name, ctx)

    settings = (min_version, *alpn)

    def make(chain_pem: bytes, key_pem: bytes, key: tuple[str, ...]) -> ssl.SSLContext:
        ctx = _base_server_context(key[0], key[1:])
        _load_pems(ctx, chain_pem, key_pem)
        return ctx

    def challenge(chain_pem: bytes, key_pem: bytes, _alpn: tuple[str, ...]) -> ssl.SSLContext:
        return make(chain_pem, key_pem, (min_version, "acme-tls/1"))

    if acme is not None:
        acme.watch_hellos(default)  # hooked only while a TLS-ALPN-01 challenge is pending

    def pick(sslobj: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> None:
        if not server_name:
            return
        name = server_name.lower().rstrip(".")
        if acme is not None:
            chosen = None
            if acme.asks_for_challenge(sslobj):  # a TLS-ALPN-01 validation, if one is pending
                chosen = acme.challenge_context(name, challenge)
            if chosen is None:
                chosen = acme.context_for(name, settings, make)
            if chosen is not None:
                sslobj.context = chosen
                return
        chosen = exact.get(name)
        if chosen is None:
            _, _, parent = name.partition(".")
            chosen = wildcard.get(parent)
        if chosen is not None and chosen is not _ctx:
            sslobj.context = chosen

    default.sni_callback = pick
    return default


def client_context(spec: UpstreamTLSSpec, alpn: Sequence[str] = ("http/1.1",)) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(list(alpn))
    if spec.verify:
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
        if spec.ca_file:
            ctx.load_verify_locations(cafile=spec.ca_file)
        else:
            ctx.load_default_certs()
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
