"""Certificates read with ``cryptography``: chain + key checked to match, names for SNI."""

from __future__ import annotations

import datetime
import functools
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from wslb.config.model import CertificateSpec


class CertificateProblem(ValueError):
    pass


@dataclass(frozen=True)
class CertificatePair:
    label: str
    chain_pem: bytes
    key_pem: bytes
    names: tuple[str, ...]  # DNS names (SANs, else the CN), lowercase
    not_after: float


def read_pems(spec: CertificateSpec) -> tuple[bytes, bytes]:
    """The chain and key PEM bytes of a certificate spec, from files or inline."""
    if spec.certificate_pem is not None and spec.key_pem is not None:
        return spec.certificate_pem.encode(), spec.key_pem.encode()
    assert spec.certificate is not None and spec.key is not None
    try:
        with open(spec.certificate, "rb") as fh:
            chain_pem = fh.read()
    except OSError as exc:
        raise CertificateProblem(
            f"cannot read certificate {spec.certificate}: {exc.strerror}"
        ) from None
    try:
        with open(spec.key, "rb") as fh:
            key_pem = fh.read()
    except OSError as exc:
        raise CertificateProblem(f"cannot read key {spec.key}: {exc.strerror}") from None
    return chain_pem, key_pem


def load_pair(spec: CertificateSpec) -> CertificatePair:
    """Read and check a certificate spec: PEM parses, the key matches the leaf."""
    chain_pem, key_pem = read_pems(spec)
    label = spec.label
    try:
        chain = x509.load_pem_x509_certificates(chain_pem)
    except ValueError:
        raise CertificateProblem(f"{label}: no PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise CertificateProblem(f"{spec.key or label}: no unencrypted PEM private key") from None
    leaf = chain[0]
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if leaf.public_key().public_bytes(der, pub) != key.public_key().public_bytes(der, pub):
        raise CertificateProblem(f"{label}: the key does not match the certificate")
    return CertificatePair(
        label, chain_pem, key_pem, certificate_names(leaf), leaf.not_valid_after_utc.timestamp()
    )


def self_signed(
    hosts: list[str],
    days: int = 365,
    extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
) -> tuple[str, str]:
    """A self-signed certificate (ECDSA P-256) for ``hosts``, with ``extensions`` (each with
    whether it is critical) besides its names: (chain PEM, key PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    names = [h for h in hosts if h and h.isascii()] or ["localhost"]  # manifests may hold ""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0][:64])])
    now = datetime.datetime.now(datetime.UTC)
    san: list[x509.GeneralName] = []
    for h in names:
        try:
            san.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            san.append(x509.DNSName(h))
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    cert = builder.sign(key, hashes.SHA256())
    return (
        cert.public_bytes(serialization.Encoding.PEM).decode(),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode(),
    )


def certificate_names(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = [n.lower() for n in san.value.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        names = []
    if not names:
        names = [
            str(a.value).lower() for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        ]
    return tuple(names)


@functools.lru_cache(maxsize=256)
def self_signed_for(hosts: tuple[str, ...]) -> tuple[str, str]:
    """:func:`self_signed`, the same one each time for the same hosts in this process: a
    configuration translated again (a reload, a controller sync) is then equal to the one
    running, and no TLS context is rebuilt for nothing."""
    return self_signed(list(hosts))
