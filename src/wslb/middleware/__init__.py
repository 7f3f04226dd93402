"""Per-listener and per-route steps, pure (no I/O): access lists, HTTPS redirects, CORS, header
rules, rate limits, handshake admission, cookie and Engine.IO affinity. ``chain`` says what a
step is; ``steps`` and ``responses`` hold them; ``wslb.server.state.route`` compiles which ones
a listener and a route run, in order, and the exchange walks them."""
