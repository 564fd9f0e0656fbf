"""Reading configuration sources: YAML files and `--set key=value` overrides (before any
validation). A key that itself holds dots is written in quotes and brackets:
`search_space["student.rank"]={type: int, low: 1, high: 4}`.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration problem; the message names the field(s), the value and the source."""


_KEY_TOKEN = re.compile(r"""\[(["'])(.+?)\1\]|([^.\[\]]+)|\.""")


def _key_path(key: str, item: str) -> list[str]:
    """`a.b["c.d"].e` → ["a", "b", "c.d", "e"]: dots separate, a quoted name in brackets is one key."""
    path, pos = [], 0
    while pos < len(key):
        m = _KEY_TOKEN.match(key, pos)
        if m is None:
            raise ConfigError(f"--set {item!r}: cannot read the key at {key[pos:]!r}; write a.b.c=value, and a key "
                              """that holds dots in quotes and brackets: search_space["student.rank"]=…""")
        name = m.group(2) if m.group(2) is not None else (m.group(3) or "").strip()
        if name:
            path.append(name)
        pos = m.end()
    return path


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b.c=value` → (["a", "b", "c"], YAML-parsed value); `a["b.c"]=v` → (["a", "b.c"], v)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. student.embed_dim=16")
    key, raw = item.split("=", 1)
    path = _key_path(key.strip(), item)
    if not path:
        raise ConfigError(f"--set {item!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {item!r}: value is not valid YAML ({e})") from None
    return path, value


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply `key=value` overrides to a nested dict (in place; returns it)."""
    for item in overrides:
        path, value = parse_override(item)
        node = data
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {'.'.join(path[: i + 1])} is a value, not a section")
            node = child
        node[path[-1]] = value
    return data


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from a file; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level, got {type(data).__name__}")
    return data


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict → {"student.rank": 2, …} (MLflow params)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
