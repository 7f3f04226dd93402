"""The layers of wslb, bottom up: a module imports only from its own layer and the layers
below, not even under ``TYPE_CHECKING`` or inside a function (every import statement counts).
docs/architecture.md explains the cut."""

from __future__ import annotations

import ast
from pathlib import Path

import wslb

SRC = Path(wslb.__file__).parent

#: bottom up; a module belongs to the first (longest) prefix that names it
LAYERS: list[tuple[str, ...]] = [
    # pure: no asyncio, bytes in and events out (they import each other freely)
    (
        "wslb.errors",
        "wslb.caches",
        "wslb.proto",
        "wslb.config",
        "wslb.routing",
        "wslb.balancer",
        "wslb.middleware",
    ),
    ("wslb.acme",),
    ("wslb.server.core",),  # what every protocol uses of the worker
    ("wslb.server.observe",),  # access log, counters, metrics, admin listener
    ("wslb.server.upstream",),  # connections to endpoints
    ("wslb.server.state",),  # backends, routes, listeners, the runtime
    ("wslb.server.tunnel",),  # byte relays
    ("wslb.server.exchange",),  # one proxied request
    ("wslb.server.downstream",),  # client connections (HTTP/1.1, HTTP/2)
    ("wslb.server.process",),  # listeners, workers, the master
    ("wslb.controller",),
    ("wslb.cli", "wslb.__main__"),
]


#: the packages themselves (their ``__init__``): the root one is pure, server's is empty
PACKAGES = {"wslb": 0, "wslb.server": 2}


def layer_of(module: str) -> int:
    if module in PACKAGES:
        return PACKAGES[module]
    best = (-1, -1)
    for rank, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                best = max(best, (len(prefix), rank))
    assert best[1] >= 0, f"{module} is in no layer: add it to LAYERS"
    return best[1]


def modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imports(path: Path, module: str) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                base = module.split(".")[: -node.level or None]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.append((node.lineno, target))
    return [(line, name) for line, name in found if name.split(".")[0] == "wslb"]


def test_no_module_imports_a_higher_layer() -> None:
    violations = []
    for module, path in sorted(modules().items()):
        here = layer_of(module)
        for line, target in imports(path, module):
            if layer_of(target) > here:
                violations.append(f"{path.relative_to(SRC.parent)}:{line}: {module} -> {target}")
    assert not violations, "\n".join(violations)


def test_every_module_has_a_layer_and_server_has_no_loose_modules() -> None:
    for module in modules():
        layer_of(module)
    loose = sorted(p.name for p in (SRC / "server").glob("*.py") if p.name != "__init__.py")
    assert loose == [], f"modules of server/ outside a layer package: {loose}"


def test_the_check_sees_a_violation() -> None:
    # the walk itself: an import under TYPE_CHECKING and one inside a function both count
    src = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from wslb.server.state.runtime import Runtime\n"
        "def f():\n    import wslb.cli\n"
    )
    tmp = SRC / "server" / "core" / "_layer_probe.py"
    tmp.write_text(src, encoding="utf-8")
    try:
        found = imports(tmp, "wslb.server.core._layer_probe")
    finally:
        tmp.unlink()
    assert [layer_of(t) > layer_of("wslb.server.core") for _, t in found] == [True, True]
