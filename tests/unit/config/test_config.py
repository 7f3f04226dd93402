"""Config: units, the model's validation, and errors that name file, line and key."""

from __future__ import annotations

import pytest

from wslb.config.file import parse_config
from wslb.config.model import Config, TimeoutsOverride, TimeoutsSpec, split_host_port
from wslb.config.source import load_documents
from wslb.config.units import format_duration, parse_duration, parse_size
from wslb.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (5, 5.0),
        (0.5, 0.5),
        ("5s", 5.0),
        ("250ms", 0.25),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("10", 10.0),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["soon", "-1s", "5 parsecs", True, None, [1]])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        (1024, 1024),
        ("1MiB", 1048576),
        ("1m", 1048576),
        ("8k", 8192),
        ("1MB", 1_000_000),
        ("0", 0),
        ("2g", 2 * 1024**3),
    ],
)
def test_sizes(text: object, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["big", "-1", "1 TB", True, 1.5])
def test_bad_sizes(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_size(bad)


def test_format_duration() -> None:
    assert [format_duration(x) for x in (3600, 120, 5, 0.25)] == ["1h", "2m", "5s", "250ms"]


def test_split_host_port() -> None:
    assert split_host_port("10.0.0.1:80") == ("10.0.0.1", 80)
    assert split_host_port("[::1]:8080") == ("::1", 8080)
    assert split_host_port("pod.svc.cluster.local:443") == ("pod.svc.cluster.local", 443)
    for bad in ("10.0.0.1", "::1:80", "host:0", "host:x", ":80", "[::1]80"):
        with pytest.raises(ValueError):
            split_host_port(bad)


def test_defaults_match_the_documented_ones() -> None:
    cfg = Config.model_validate(
        {"listeners": [{"name": "w", "port": 1, "protocol": "http"}], "backends": [{"name": "b"}]}
    )
    t = cfg.backends[0].timeouts
    assert (t.connect, t.read, t.send, t.tunnel) == (5, 60, 60, 3600)
    c = cfg.listeners[0].client
    assert c.keepalive_timeout == 60 and c.max_body_size == 1024 * 1024
    assert cfg.backends[0].keepalive.enabled is False
    h = cfg.backends[0].health
    assert (h.type, h.interval, h.timeout, h.unhealthy_threshold) == ("tcp", 3, 5, 3)


def test_route_timeouts_override_only_what_they_name() -> None:
    base = TimeoutsSpec()
    merged = TimeoutsOverride(tunnel=10).apply(base)
    assert merged.tunnel == 10 and merged.read == 60 and merged.connect == 5
    assert TimeoutsOverride().apply(base) is base


def _errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "cfg.yaml")
    return [str(i) for i in info.value.issues if i.severity == "error"]


def test_every_error_at_once_with_lines() -> None:
    errs = _errors(
        "listeners:\n"
        "  - name: a\n"
        "    port: 1\n"
        "    protocol: tcp\n"  # tcp without backend
        "  - name: a\n"  # duplicate name
        "    port: 2\n"
        "    protocol: http\n"
        "    typo: 1\n"
        "backends:\n"
        "  - name: b\n"
        "    endpoints: [{address: '1.2.3.4:5', weight: 0}]\n"
    )
    text = "\n".join(errs)
    assert "cfg.yaml:2: listeners[0]: error: a tcp listener needs a backend" in text
    assert "cfg.yaml:5: listeners[1].name: error: listener name 'a' is used twice" in text
    assert "cfg.yaml:8: listeners[1].typo: error: unknown key" in text
    assert "cfg.yaml:11: backends[0].endpoints[0].weight:" in text


def test_missing_required_key_names_it() -> None:
    errs = _errors("listeners:\n  - name: a\n    protocol: http\n")
    assert any("cfg.yaml:2: listeners[0].port: error: required key is missing" in e for e in errs)


def test_duplicate_yaml_keys_are_errors() -> None:
    errs = _errors("listeners: []\nlisteners: []\n")
    assert errs == ["cfg.yaml:2: listeners: error: duplicate key"]


def test_a_duplicate_key_hides_no_other_error() -> None:
    errs = _errors(
        "listeners:\n"
        "  - {name: web, port: 80800, protocol: http}\n"
        "backends: []\n"
        "backends: [{name: app, balance: random}]\n"
    )
    assert errs == [
        "cfg.yaml:2: listeners[0].port: error: must be at most 65535, not 80800",
        "cfg.yaml:4: backends: error: duplicate key",
        "cfg.yaml:4: backends[0].balance: error: 'random' is not one of round_robin, "
        "least_connections, ewma",
    ]
    # a syntax error still stops at once: nothing after it can be read
    assert _errors("listeners: []\nlisteners: []\nbackends: [\n")[-1].startswith(
        "cfg.yaml:4: error: YAML syntax"
    )


def test_did_you_mean_for_keys_names_and_values() -> None:
    text = "\n".join(
        _errors(
            "listeners:\n"
            "  - {name: web, port: 8080, protocol: htp, adress: 127.0.0.1}\n"
            "backends:\n"
            "  - name: app\n"
            "    endpoints: ['127.0.0.1:1']\n"
            "    balance: least_conn\n"
            "    keepalive: {enabeld: true}\n"
            "    health: {enabled: maybe}\n"
            "routes:\n"
            "  - {backend: ap, listeners: [wbe]}\n"
            "  - {backend: app, zzz: 1}\n"
        )
    )
    assert (
        "listeners[0].protocol: error: 'htp' is not one of tcp, http, https; did you mean 'http'?"
        in text
    )
    assert "listeners[0].adress: error: unknown key; did you mean 'address'?" in text
    assert "did you mean 'least_connections'?" in text
    assert "backends[0].keepalive.enabeld: error: unknown key; did you mean 'enabled'?" in text
    assert "backends[0].health.enabled: error: must be true or false, not 'maybe'" in text
    assert "routes[0].backend: error: no backend named 'ap'; did you mean 'app'?" in text
    assert "routes[0].listeners[0]: error: no listener named 'wbe'; did you mean 'web'?" in text
    assert "routes[1].zzz: error: unknown key\n" in text + "\n"  # nothing close: no guess
    assert "Input should" not in text


def test_the_same_host_and_path_to_two_backends_is_an_error() -> None:
    base = (
        "listeners: [{name: web, port: 8080, protocol: http}]\n"
        "backends:\n"
        "  - {name: a, endpoints: ['127.0.0.1:1']}\n"
        "  - {name: b, endpoints: ['127.0.0.1:2']}\n"
        "routes:\n"
        "  - {host: App.example.com, path: /api, backend: a}\n"
    )
    errs = _errors(base + "  - {host: app.example.com, path: /api, backend: b}\n")
    assert errs == [
        "cfg.yaml:7: routes[1]: error: the same host and path as routes[0], which sends them "
        "to backend 'a': this route would never be used"
    ]
    for other in (  # another path, path type, host or listener set: both serve
        "  - {host: app.example.com, path: /api/v2, backend: b}\n",
        "  - {host: app.example.com, path: /api, path_type: exact, backend: b}\n",
        "  - {path: /api, backend: b}\n",
        "  - {host: app.example.com, path: /api, listeners: [web], backend: b}\n",
    ):
        parse_config(base + other, "cfg.yaml")


def test_protocol_mismatches() -> None:
    errs = "\n".join(
        _errors(
            "listeners:\n"
            "  - {name: t, port: 1, protocol: tcp, backend: web}\n"
            "  - {name: h, port: 2, protocol: https}\n"
            "backends:\n"
            "  - {name: web, protocol: http}\n"
            "  - {name: raw, protocol: tcp}\n"
            "routes:\n"
            "  - {backend: raw, listeners: [t, nope]}\n"
        )
    )
    assert (
        "cfg.yaml:2: listeners[0].backend: error: a tcp listener forwards to a tcp backend" in errs
    )
    assert "cfg.yaml:3: listeners[1]: error: an https listener needs tls" in errs
    assert "cfg.yaml:8: routes[0].backend: error: backend 'raw' is tcp" in errs
    assert "routes[0].listeners[0]: error: listener 't' is tcp" in errs
    assert "routes[0].listeners[1]: error: no listener named 'nope'" in errs


def test_warnings_do_not_refuse() -> None:
    cfg, issues = parse_config(
        "listeners: [{name: w, port: 1, protocol: http}]\nbackends: [{name: b}]\nroutes: [{backend: b}]\n",
        "cfg.yaml",
    )
    assert cfg.routes[0].backend == "b"
    assert [i.severity for i in issues] == ["warning"]
    assert "no endpoints" in issues[0].message


def test_host_validation() -> None:
    errs = "\n".join(
        _errors(
            "backends: [{name: b}]\nroutes:\n  - {backend: b, host: 'a.*.com'}\n  - {backend: b, host: ''}\n"
        )
    )
    assert "routes[0].host" in errs and "routes[1].host" in errs


def test_multi_document_and_json_sources() -> None:
    docs, issues = load_documents('{"a": 1}\n---\nb: [1, 2]\n', "x")
    assert not issues
    assert [d.data for d in docs] == [{"a": 1}, {"b": [1, 2]}]
    assert docs[1].locator.line(("b", 1)) == 3
