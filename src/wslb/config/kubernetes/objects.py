"""Kubernetes objects read from files or directories (multi-document YAML, JSON, ``kind: List``),
each remembering where it was written so that every problem can name ``file:line``."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from wslb.config.kubernetes.schema import shape_errors
from wslb.config.source import STDIN, STDIN_NAME, Locator, Path, load_documents
from wslb.errors import ConfigIssue

KINDS = ("Ingress", "Service", "EndpointSlice", "Endpoints", "Secret", "ConfigMap", "IngressClass")


@dataclass
class KObject:
    kind: str
    api_version: str
    name: str
    namespace: str
    body: dict[str, Any]
    loc: Locator
    root: Path = ()  # where the object starts inside its document (``items[3]`` of a List)
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    def issue(
        self, path: Sequence[str | int], message: str, severity: str = "error"
    ) -> ConfigIssue:
        return self.loc.issue((*self.root, *path), message, severity)

    def get(self, *path: str | int) -> Any:
        node: Any = self.body
        for part in path:
            if isinstance(node, dict) and isinstance(part, str):
                node = node.get(part)
            elif isinstance(node, list) and isinstance(part, int) and part < len(node):
                node = node[part]
            else:
                return None
        return node


def _files(paths: Iterable[str]) -> tuple[list[str], list[ConfigIssue]]:
    files: list[str] = []
    issues: list[ConfigIssue] = []
    for p in paths:
        if p == STDIN:
            files.append(p)
        elif os.path.isdir(p):
            for dirpath, _dirs, names in sorted(os.walk(p)):
                for n in sorted(names):
                    if n.endswith((".yaml", ".yml", ".json")):
                        files.append(os.path.join(dirpath, n))
        elif os.path.isfile(p):
            files.append(p)
        else:
            issues.append(ConfigIssue(p, None, "", "no such file or directory"))
    return files, issues


def load_objects(paths: Iterable[str]) -> tuple[list[KObject], list[ConfigIssue]]:
    files, issues = _files(paths)
    objects: list[KObject] = []
    for path in files:
        if path == STDIN:
            text, path = sys.stdin.read(), STDIN_NAME
        else:
            try:
                with open(path, encoding="utf-8") as fh:
                    text = fh.read()
            except OSError as exc:
                issues.append(ConfigIssue(path, None, "", f"cannot read: {exc.strerror}"))
                continue
        docs, doc_issues = load_documents(text, path)
        issues += doc_issues
        for doc in docs:
            data = doc.data
            if data is None:
                continue
            if not isinstance(data, dict):
                issues.append(doc.locator.issue((), "a Kubernetes object must be a mapping"))
                continue
            if data.get("kind") == "List" and isinstance(data.get("items"), list):
                for i, item in enumerate(data["items"]):
                    _add(objects, issues, item, doc.locator, ("items", i))
            else:
                _add(objects, issues, data, doc.locator, ())
    return objects, issues


def _add(
    out: list[KObject], issues: list[ConfigIssue], data: Any, loc: Locator, root: Path
) -> None:
    if not isinstance(data, dict):
        issues.append(loc.issue(root, "a Kubernetes object must be a mapping"))
        return
    kind = data.get("kind")
    if not isinstance(kind, str):
        issues.append(loc.issue(root, "object without kind"))
        return
    if kind not in KINDS:
        issues.append(loc.issue((*root, "kind"), f"{kind} objects are not used by wslb", "info"))
        return
    raw_meta = data.get("metadata")
    meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        issues.append(loc.issue((*root, "metadata"), f"{kind} without metadata.name"))
        return
    shape = shape_errors(kind, data)
    if shape:
        issues += [loc.issue((*root, *path), f"{kind} {name}: {msg}") for path, msg in shape]
        return
    namespace = meta.get("namespace") or "default"
    annotations = meta.get("annotations") or {}
    if not isinstance(annotations, dict):
        issues.append(
            loc.issue((*root, "metadata", "annotations"), "annotations must be a mapping")
        )
        annotations = {}
    out.append(
        KObject(
            kind=kind,
            api_version=str(data.get("apiVersion", "")),
            name=name,
            namespace=str(namespace),
            body=data,
            loc=loc,
            root=root,
            annotations={str(k): "" if v is None else str(v) for k, v in annotations.items()},
        )
    )
