"""Session-ticket keys and key-exchange groups, set through OpenSSL (server/openssl.py)."""

from __future__ import annotations

import ssl

import pytest

from wslb.server.core import openssl
from wslb.server.core.tls import install_ticket_keys, ticket_keys


def test_ticket_keys_change_with_the_period_and_the_secret() -> None:
    a = ticket_keys(b"secret", 100)
    assert len(a) == openssl.TICKET_KEYS_LENGTH
    assert a == ticket_keys(b"secret", 100)
    assert a != ticket_keys(b"secret", 101)
    assert a != ticket_keys(b"other", 100)


def test_install_says_when_the_next_period_starts() -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    next_at = install_ticket_keys(ctx, b"secret", 3600.0)
    assert next_at % 3600 == 0


def test_openssl_settings_are_checked() -> None:
    assert openssl.available() is None  # CPython with its OpenSSL: the settings can be made
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    options = ctx.options
    openssl.set_groups(ctx, "P-256")
    assert ctx.options == options  # the pointer check flips one option and puts it back
    with pytest.raises(ValueError):
        openssl.set_groups(ctx, "no-such-group")
    with pytest.raises(ValueError):
        openssl.set_ticket_keys(ctx, b"short")
