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
