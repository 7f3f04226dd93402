"""Per-route request and response steps, pure (no I/O): access lists, HTTPS redirects, CORS,
header rules, rate limits and cookie affinity. The server calls them from
``Exchange.activate`` (requests) and when it writes a response head."""
