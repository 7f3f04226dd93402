"""YAML/JSON documents that remember where each key was written.

``load_documents(text, source)`` returns plain Python data for each document plus a ``Locator``
that maps a key path such as ``("listeners", 0, "port")`` to its line, so every error can name
``file:line`` and the dotted key. Duplicate keys, which PyYAML silently collapses, are reported.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from wslb.errors import ConfigIssue

Path = tuple[str | int, ...]


def dotted(path: Iterable[str | int]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


@dataclass
class Locator:
    source: str
    lines: dict[Path, int] = field(default_factory=dict)

    def line(self, path: Sequence[str | int]) -> int | None:
        p = tuple(path)
        while True:
            if p in self.lines:
                return self.lines[p]
            if not p:
                return None
            p = p[:-1]

    def issue(
        self, path: Sequence[str | int], message: str, severity: str = "error"
    ) -> ConfigIssue:
        return ConfigIssue(self.source, self.line(path), dotted(path), message, severity)


STDIN, STDIN_NAME = "-", "<stdin>"  # the path meaning standard input, and its name in issues
DUPLICATE_KEY = "duplicate key"  # a key given twice in one mapping: the last one stands


@dataclass
class Document:
    data: Any
    locator: Locator


def _walk(node: yaml.Node, path: Path, loc: Locator, issues: list[ConfigIssue]) -> None:
    loc.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
            child = (*path, key)
            if key in seen:
                issues.append(
                    ConfigIssue(
                        loc.source, key_node.start_mark.line + 1, dotted(child), DUPLICATE_KEY
                    )
                )
            seen.add(key)
            loc.lines[child] = key_node.start_mark.line + 1
            _walk(value_node, child, loc, issues)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, (*path, i), loc, issues)


def load_documents(text: str, source: str) -> tuple[list[Document], list[ConfigIssue]]:
    """Every document of a (multi-document) YAML or JSON text, with line maps."""
    issues: list[ConfigIssue] = []
    docs: list[Document] = []
    try:
        # The reader refuses non-printable characters (a NUL, say) as soon as it is made.
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:
        at = text.count("\n", 0, exc.position) + 1
        message = f"YAML: character {exc.character!r} is not allowed"
        return docs, [ConfigIssue(source, at, "", message)]
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            loc = Locator(source)
            _walk(node, (), loc, issues)
            docs.append(Document(loader.construct_document(node), loc))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        issues.append(ConfigIssue(source, line, "", f"YAML syntax: {exc.problem or exc}"))
    except yaml.YAMLError as exc:
        issues.append(ConfigIssue(source, None, "", f"YAML: {exc}"))
    finally:
        loader.dispose()
    return docs, issues
