"""Cookies on the wire (RFC 6265): read one from a request, write a ``Set-Cookie`` line."""

from __future__ import annotations

from email.utils import formatdate

from wslb.proto.http1 import RequestHead

# Cookie values wslb writes are base64url: anything else read back is ignored.
_VALUE_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def request_cookie(head: RequestHead, name: bytes) -> bytes | None:
    """The value of cookie ``name`` (the first one sent), or None."""
    for n, v in head.headers:
        if n.lower() == b"cookie":
            for part in v.split(b";"):
                k, sep, value = part.strip().partition(b"=")
                if sep and k == name:
                    return value.strip(b'"')
    return None


def token_value(value: bytes | None, max_len: int = 64) -> str | None:
    """``value`` if it is a plausible wslb token (base64url, bounded), else None."""
    if not value or len(value) > max_len or not _VALUE_CHARS.issuperset(value):
        return None
    return value.decode("ascii")


def set_cookie_line(
    name: str,
    value: str,
    *,
    now: float,
    expires: int | None = None,
    max_age: int | None = None,
    path: str | None = "/",
    domain: str | None = None,
    samesite: str | None = None,
    secure: bool = False,
    http_only: bool = True,
) -> bytes:
    parts = [f"{name}={value}"]
    if expires is not None:
        parts.append(f"Expires={formatdate(now + expires, usegmt=True)}")
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    if path:
        parts.append(f"Path={path}")
    if domain:
        parts.append(f"Domain={domain}")
    if samesite:
        parts.append(f"SameSite={samesite}")
    if secure:
        parts.append("Secure")
    if http_only:
        parts.append("HttpOnly")
    return ("Set-Cookie: " + "; ".join(parts) + "\r\n").encode("latin-1")
