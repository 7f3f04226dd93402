"""Automatic certificates (RFC 8555): wslb orders, stores, serves and renews its own, like
Traefik and Caddy. ``storage`` keeps the account, certificates and pending challenges on disk
(shared by workers and replicas), ``alpn`` is the TLS-ALPN-01 challenge (RFC 8737), ``client``
runs one order with certbot's ``acme`` package, ``manager`` decides when to order and swaps
certificates into the listeners."""
