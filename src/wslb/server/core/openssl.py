"""Three OpenSSL settings Python's ``ssl`` module does not expose yet, set through the OpenSSL
that module is linked to: the key-exchange groups (``SSL_CTX_set1_groups_list``; Python 3.15
adds ``SSLContext.set_groups``; ``set_ecdh_curve`` takes a single curve), the session-ticket
keys (``SSL_CTX_set_tlsext_ticket_keys``, what nginx's ``ssl_session_ticket_key`` and HAProxy's
``tls-ticket-keys`` set) and the certificate-status callback that staples an OCSP response
(``SSL_CTX_set_tlsext_status_cb``, what nginx's ``ssl_stapling`` uses).

All are ``SSL_CTX_ctrl`` calls on the ``SSL_CTX`` that a :class:`ssl.SSLContext` wraps. CPython
keeps that pointer right after the object header; before anything is set, the pointer is
checked by reading the context's options through OpenSSL and through Python, twice, with one
option flipped in between. When any of it is not as expected (another interpreter, another
layout, no such symbol), nothing is set and :func:`available` says why.
"""

from __future__ import annotations

import ctypes
import ssl
import sys
from collections.abc import Callable
from functools import cache

_SSL_CTRL_SET_TLSEXT_TICKET_KEYS = 59
_SSL_CTRL_SET_TLSEXT_STATUS_REQ_CB = 63
_SSL_CTRL_SET_TLSEXT_STATUS_REQ_OCSP_RESP = 71
_SSL_CTRL_SET_GROUPS_LIST = 92
_SSL_TLSEXT_ERR_OK = 0
_SSL_TLSEXT_ERR_NOACK = 3
#: int (*cb)(SSL *s, void *arg)
_STATUS_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
TICKET_KEYS_LENGTH = 80  # key name 16, HMAC secret 32, AES key 32 (OpenSSL 1.1 and 3)

#: Mozilla "intermediate" and "modern": X25519, prime256v1, secp384r1
DEFAULT_GROUPS = "X25519:P-256:P-384"


class _OpenSSL:
    def __init__(self) -> None:
        import _ssl

        lib = ctypes.CDLL(_ssl.__file__)  # its symbols, and those of the libssl it links
        self.ctrl = lib.SSL_CTX_ctrl
        self.ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
        self.ctrl.restype = ctypes.c_long
        self.get_options = lib.SSL_CTX_get_options
        self.get_options.argtypes = [ctypes.c_void_p]
        self.get_options.restype = ctypes.c_uint64
        self.callback_ctrl = lib.SSL_CTX_callback_ctrl
        self.callback_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
        self.callback_ctrl.restype = ctypes.c_long
        self.ssl_ctrl = lib.SSL_ctrl
        self.ssl_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
        self.ssl_ctrl.restype = ctypes.c_long
        self.malloc = lib.CRYPTO_malloc
        self.malloc.argtypes = [ctypes.c_size_t, ctypes.c_char_p, ctypes.c_int]
        self.malloc.restype = ctypes.c_void_p


@cache
def _openssl() -> _OpenSSL | str:
    if sys.implementation.name != "cpython":
        return f"not CPython ({sys.implementation.name})"
    try:
        return _OpenSSL()
    except (OSError, AttributeError) as exc:
        return f"OpenSSL symbols not found: {exc}"


def available() -> str | None:
    """None when the settings below can be made, else why not."""
    lib = _openssl()
    return lib if isinstance(lib, str) else None


def _ssl_ctx(ctx: ssl.SSLContext) -> tuple[_OpenSSL, int]:
    lib = _openssl()
    if isinstance(lib, str):
        raise OSError(lib)
    pointer = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    if not pointer:
        raise OSError("no SSL_CTX where CPython keeps it")
    flip = ssl.OP_NO_TICKET
    before = ctx.options
    try:
        if lib.get_options(pointer) != int(before):
            raise OSError("the SSL_CTX's options do not match the context's")
        ctx.options = before ^ flip
        if lib.get_options(pointer) != int(ctx.options):
            raise OSError("the SSL_CTX does not follow the context's options")
    finally:
        ctx.options = before
    return lib, pointer


def set_groups(ctx: ssl.SSLContext, groups: str = DEFAULT_GROUPS) -> None:
    """Offer and accept only these key-exchange groups (``X25519:P-256:P-384``)."""
    lib, pointer = _ssl_ctx(ctx)
    if lib.ctrl(pointer, _SSL_CTRL_SET_GROUPS_LIST, 0, ctypes.c_char_p(groups.encode())) != 1:
        raise ValueError(f"OpenSSL refused the groups {groups!r}")


def set_ticket_keys(ctx: ssl.SSLContext, keys: bytes) -> None:
    """Encrypt new session tickets, and decrypt offered ones, with ``keys`` (80 bytes)."""
    if len(keys) != TICKET_KEYS_LENGTH:
        raise ValueError(f"ticket keys are {TICKET_KEYS_LENGTH} bytes")
    lib, pointer = _ssl_ctx(ctx)
    buf = ctypes.create_string_buffer(keys, len(keys))
    if lib.ctrl(pointer, _SSL_CTRL_SET_TLSEXT_TICKET_KEYS, len(keys), buf) != 1:
        raise ValueError("OpenSSL refused the session-ticket keys")


def set_status_callback(ctx: ssl.SSLContext, response: Callable[[], bytes | None]) -> None:
    """Staple ``response()`` (a DER OCSP response, or None for none) to the handshakes of
    clients that ask for the certificate's status."""
    lib, pointer = _ssl_ctx(ctx)

    def status(ssl_ptr: int | None, _arg: int | None) -> int:
        try:
            der = response()
            if not der:
                return _SSL_TLSEXT_ERR_NOACK
            buf = lib.malloc(len(der), b"wslb", 0)  # OpenSSL takes it over and frees it
            if not buf:
                return _SSL_TLSEXT_ERR_NOACK
            ctypes.memmove(buf, der, len(der))
            lib.ssl_ctrl(ssl_ptr, _SSL_CTRL_SET_TLSEXT_STATUS_REQ_OCSP_RESP, len(der), buf)
            return _SSL_TLSEXT_ERR_OK
        except Exception:  # a handshake goes on without a staple rather than fail
            return _SSL_TLSEXT_ERR_NOACK

    callback = _STATUS_CB(status)
    fn = ctypes.cast(callback, ctypes.c_void_p)
    if lib.callback_ctrl(pointer, _SSL_CTRL_SET_TLSEXT_STATUS_REQ_CB, fn) != 1:
        raise OSError("OpenSSL refused the status callback")
    ctx._wslb_status_callback = callback  # type: ignore[attr-defined]  # kept alive with ctx
