"""TLS-ALPN-01 (RFC 8737): the challenge as the ``acme`` package's types (certbot's package has
dropped them), the validation certificate, and whether a ClientHello offers ``acme-tls/1``.

The validation server connects with SNI set to the host and ALPN ``acme-tls/1`` only; wslb
answers that handshake, and only that one, with a self-signed certificate for the host that
carries the SHA-256 of the key authorization in a critical ``id-pe-acmeIdentifier`` extension,
and negotiates ``acme-tls/1``. Other clients asking for the same host meanwhile get the host's
usual certificate: the ClientHello is read (``SSLContext._msg_callback``) before the SNI
callback picks a certificate.
"""

from __future__ import annotations

import hashlib
from typing import Any

from acme import challenges
from cryptography import x509
from josepy.jwk import JWK

from wslb.config.certs import self_signed

ACME_TLS_1 = b"acme-tls/1"
ID_PE_ACME_IDENTIFIER = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.31")


@challenges.ChallengeResponse.register
class TLSALPN01Response(challenges.KeyAuthorizationChallengeResponse):
    """The (empty) answer to a tls-alpn-01 challenge."""

    typ = "tls-alpn-01"


@challenges.Challenge.register
class TLSALPN01(challenges.KeyAuthorizationChallenge):
    response_cls = TLSALPN01Response
    typ = response_cls.typ

    def validation(self, account_key: JWK, **kwargs: Any) -> str:
        return str(self.key_authorization(account_key))


def validation_certificate(host: str, key_authorization: str) -> bytes:
    """The validation certificate and its key (PEM, one after the other) for ``host``: its
    critical extension's value is an OCTET STRING holding the digest (RFC 8737 3)."""
    digest = hashlib.sha256(key_authorization.encode()).digest()
    identifier = x509.UnrecognizedExtension(ID_PE_ACME_IDENTIFIER, b"\x04\x20" + digest)
    chain, key = self_signed([host], days=7, extensions=[(identifier, True)])
    return (chain + key).encode()


def offers_acme_tls(hello: bytes) -> bool:
    """Whether a ClientHello handshake message (with its 4-byte header) offers acme-tls/1."""
    try:
        pos = 4 + 2 + 32  # header, legacy_version, random
        pos += 1 + hello[pos]  # session id
        pos += 2 + int.from_bytes(hello[pos : pos + 2], "big")  # cipher suites
        pos += 1 + hello[pos]  # compression methods
        end = pos + 2 + int.from_bytes(hello[pos : pos + 2], "big")
        pos += 2
        while pos + 4 <= end:
            kind = int.from_bytes(hello[pos : pos + 2], "big")
            size = int.from_bytes(hello[pos + 2 : pos + 4], "big")
            body = hello[pos + 4 : pos + 4 + size]
            pos += 4 + size
            if kind != 16:  # application_layer_protocol_negotiation
                continue
            i = 2
            while i < len(body):
                n = body[i]
                if body[i + 1 : i + 1 + n] == ACME_TLS_1:
                    return True
                i += 1 + n
            return False
    except IndexError:
        return False
    return False
