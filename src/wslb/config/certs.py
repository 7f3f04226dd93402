"""Certificates read with ``cryptography``: chain + key checked to match, names for SNI."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID


class CertificateProblem(ValueError):
    pass


@dataclass(frozen=True)
class CertificatePair:
    certificate_path: str
    key_path: str
    names: tuple[str, ...]  # DNS names (SANs, else the CN), lowercase
    not_after: float


def load_pair(certificate_path: str, key_path: str) -> CertificatePair:
    try:
        with open(certificate_path, "rb") as fh:
            chain_pem = fh.read()
    except OSError as exc:
        raise CertificateProblem(
            f"cannot read certificate {certificate_path}: {exc.strerror}"
        ) from None
    try:
        with open(key_path, "rb") as fh:
            key_pem = fh.read()
    except OSError as exc:
        raise CertificateProblem(f"cannot read key {key_path}: {exc.strerror}") from None
    try:
        chain = x509.load_pem_x509_certificates(chain_pem)
    except ValueError:
        raise CertificateProblem(f"{certificate_path} holds no PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise CertificateProblem(f"{key_path} holds no unencrypted PEM private key") from None
    leaf = chain[0]
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if leaf.public_key().public_bytes(der, pub) != key.public_key().public_bytes(der, pub):
        raise CertificateProblem(
            f"the key {key_path} does not match the certificate {certificate_path}"
        )
    return CertificatePair(
        certificate_path, key_path, certificate_names(leaf), leaf.not_valid_after_utc.timestamp()
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
