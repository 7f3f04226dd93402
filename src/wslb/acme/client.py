"""One ACME order, from account to certificate, with certbot's ``acme`` package (RFC 8555).

Synchronous (the package uses ``requests``): the manager runs it in a thread. The account is
created once and kept in the storage; an order publishes its challenges in the storage, where
every worker answers them (HTTP-01 on the HTTP listeners, TLS-ALPN-01 on the TLS ones), and
removes them when it ends, whatever the outcome.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time

from acme import challenges, client, crypto_util, errors, messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.jwa import ES256
from josepy.jwk import JWK, JWKEC

from wslb.acme.alpn import TLSALPN01, validation_certificate
from wslb.acme.storage import Storage
from wslb.config.model import AcmeSpec

log = logging.getLogger("wslb.acme")
USER_AGENT = "wslb"
HOOK_DELAY = 3.0  # seconds: 12 times every worker's poll for pending TLS-ALPN-01 challenges


class OrderFailed(Exception):
    pass


def _network(
    spec: AcmeSpec, key: JWK, account: messages.RegistrationResource | None
) -> client.ClientNetwork:
    net = client.ClientNetwork(key, account=account, alg=ES256, user_agent=USER_AGENT, timeout=30)
    if spec.ca_file:
        net.verify_ssl = spec.ca_file  # type: ignore[assignment]  # requests takes a CA path
    return net


_account_lock = threading.Lock()  # orders of one process run in threads: one account for all


def account_client(spec: AcmeSpec, storage: Storage) -> tuple[client.ClientV2, JWK]:
    """A client logged in to the account in the storage (made on first use, by one thread of
    one process: the others wait on the account lock and then read it)."""
    with _account_lock, storage.account_lock():
        return _account_client(spec, storage)


def _account_client(spec: AcmeSpec, storage: Storage) -> tuple[client.ClientV2, JWK]:
    saved = storage.load_account()
    if saved is not None and saved.get("directory") == spec.directory:
        key = JWK.json_loads(saved["key"])
        regr = messages.RegistrationResource(uri=saved["uri"], body=messages.Registration())
        net = _network(spec, key, regr)
        acme = client.ClientV2(client.ClientV2.get_directory(spec.directory, net), net)
        try:
            net.account = acme.query_registration(regr)
            return acme, key
        except errors.Error as exc:  # the CA no longer knows it (a test CA restarted)
            log.warning("ACME account %s is not usable (%s); making a new one", saved["uri"], exc)
    key = JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    net = _network(spec, key, None)
    acme = client.ClientV2(client.ClientV2.get_directory(spec.directory, net), net)
    reg = messages.NewRegistration.from_data(email=spec.email, terms_of_service_agreed=True)
    try:
        regr = acme.new_account(reg)
    except errors.ConflictError as exc:  # the key is already registered
        regr = acme.query_registration(
            messages.RegistrationResource(uri=exc.location, body=messages.Registration())
        )
    net.account = regr
    storage.save_account(spec.directory, regr.uri, key.json_dumps())
    log.info("ACME account %s at %s", regr.uri, spec.directory)
    return acme, key


def order(spec: AcmeSpec, storage: Storage, hosts: tuple[str, ...]) -> tuple[bytes, bytes]:
    """Order a certificate for ``hosts``: (full chain PEM, key PEM)."""
    acme, account_key = account_client(spec, storage)
    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    orderr = acme.new_order(crypto_util.make_csr(key_pem, list(hosts)))
    wanted = challenges.HTTP01 if spec.challenge == "http-01" else TLSALPN01
    tokens: list[str] = []
    alpn_hosts: list[str] = []
    try:
        for authz in orderr.authorizations:
            if authz.body.status == messages.STATUS_VALID:
                continue  # the CA remembers an earlier validation
            host = authz.body.identifier.value
            challb = next((c for c in authz.body.challenges if isinstance(c.chall, wanted)), None)
            if challb is None:
                raise OrderFailed(f"{host}: the CA offers no {spec.challenge} challenge")
            chall = challb.chall
            if isinstance(chall, challenges.HTTP01):
                token = chall.encode("token")
                storage.put_http01(token, chall.validation(account_key))
                tokens.append(token)
            else:
                ka = chall.key_authorization(account_key)
                storage.put_tls_alpn01(host, validation_certificate(host, ka))
                if not alpn_hosts:
                    # every worker polls for pending challenges to hook its TLS listeners
                    time.sleep(HOOK_DELAY)
                alpn_hosts.append(host)
            acme.answer_challenge(challb, chall.response(account_key))
        deadline = datetime.datetime.now() + datetime.timedelta(seconds=spec.order_timeout)
        try:
            orderr = acme.poll_and_finalize(orderr, deadline)
        except errors.ValidationError as exc:
            reasons = "; ".join(
                f"{a.body.identifier.value}: {c.error}"
                for a in exc.failed_authzrs
                for c in a.body.challenges
                if c.error is not None
            )
            raise OrderFailed(f"validation failed: {reasons}") from None
        except errors.TimeoutError:
            raise OrderFailed(f"not issued within {spec.order_timeout:g}s") from None
    finally:
        for token in tokens:
            storage.drop_http01(token)
        for host in alpn_hosts:
            storage.drop_tls_alpn01(host)
    if not orderr.fullchain_pem:
        raise OrderFailed("the CA sent no certificate")
    log.info("ACME order %s for %s: issued", orderr.uri, ", ".join(hosts))
    return orderr.fullchain_pem.encode(), key_pem
