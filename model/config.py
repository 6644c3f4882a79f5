"""Config files for the trainer: JSON, or the small YAML subset our job files use.

The GPU machine has no PyYAML and ``model/`` imports only torch, numpy and pyarrow, so this
module parses YAML itself. Supported: nested block mappings by indentation, block sequences
(``- item``, items may be scalars or mappings), flow sequences and mappings (``[a, b]``,
``{a: 1}``), comments, quoted strings, and the YAML 1.2 core scalars (null, booleans,
integers, floats). Anchors, tags, multi-line strings and multiple documents are rejected.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

_INT = re.compile(r"^[-+]?(0|[1-9][0-9_]*)$")
_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9][0-9_]*(\.[0-9_]*)?)([eE][-+]?[0-9]+)?$")


class ConfigError(ValueError):
    """A config file that cannot be parsed."""


def parse_set_options(pairs: list[str]) -> dict[str, Any]:
    """Turn ``--set`` arguments (``["train.max_steps=100", ...]``) into ``{key: scalar}``
    (values parsed by :func:`parse_scalar`); ConfigError names a pair without ``=``."""
    out: dict[str, Any] = {}
    for kv in pairs:
        key, sep, value = kv.partition("=")
        if not sep:
            raise ConfigError(f"--set expects KEY=VALUE, got {kv!r}")
        out[key] = parse_scalar(value)
    return out


def parse_scalar(text: str) -> Any:
    """Convert one YAML scalar (already stripped of comments) to Python."""
    t = text.strip()
    if t == "" or t in ("~", "null", "Null", "NULL"):
        return None
    if t[0] in "'\"":
        if len(t) < 2 or t[-1] != t[0]:
            raise ConfigError(f"unterminated string: {t}")
        body = t[1:-1]
        if t[0] == "'":
            return body.replace("''", "'")
        return json.loads(t)  # double-quoted: JSON escapes are a subset of YAML's
    if t in ("true", "True", "TRUE"):
        return True
    if t in ("false", "False", "FALSE"):
        return False
    if t[0] in "[{":
        value, rest = _parse_flow(t, 0)
        if t[rest:].strip():
            raise ConfigError(f"trailing text after flow collection: {t}")
        return value
    if t[0] in "&*!|>%@`":
        raise ConfigError(f"unsupported YAML feature in {t!r}")
    if _INT.match(t):
        return int(t.replace("_", ""))
    if _FLOAT.match(t) and any(c.isdigit() for c in t):
        return float(t.replace("_", ""))
    if t.lower() in (".inf", "+.inf"):
        return float("inf")
    if t.lower() == "-.inf":
        return float("-inf")
    if t.lower() == ".nan":
        return float("nan")
    return t


def _parse_flow(t: str, i: int) -> tuple[Any, int]:
    """Parse a flow collection or scalar starting at ``t[i]``; return (value, next index)."""
    while i < len(t) and t[i] == " ":
        i += 1
    if t[i] in "[{":
        close = "]" if t[i] == "[" else "}"
        is_map = t[i] == "{"
        items: list[Any] = []
        out_map: dict[str, Any] = {}
        i += 1
        while True:
            while i < len(t) and t[i] in " ,":
                i += 1
            if i >= len(t):
                raise ConfigError(f"unterminated flow collection: {t}")
            if t[i] == close:
                return (out_map if is_map else items), i + 1
            if is_map:
                key, i = _parse_flow_scalar(t, i, ":")
                if i >= len(t) or t[i] != ":":
                    raise ConfigError(f"expected ':' in flow mapping: {t}")
                value, i = _parse_flow(t, i + 1)
                out_map[str(key)] = value
            else:
                value, i = _parse_flow(t, i)
                items.append(value)
    return _parse_flow_scalar(t, i, ",]}")


def _parse_flow_scalar(t: str, i: int, stops: str) -> tuple[Any, int]:
    while i < len(t) and t[i] == " ":
        i += 1
    if i < len(t) and t[i] in "'\"":
        q = t[i]
        j = i + 1
        while j < len(t):
            if t[j] == "\\" and q == '"':
                j += 2
                continue
            if t[j] == q:
                if q == "'" and j + 1 < len(t) and t[j + 1] == "'":
                    j += 2
                    continue
                break
            j += 1
        return parse_scalar(t[i:j + 1]), j + 1
    j = i
    while j < len(t) and t[j] not in stops:
        j += 1
    return parse_scalar(t[i:j]), j


def _strip_comment(line: str) -> str:
    """Remove a ``#`` comment that is not inside quotes."""
    quote = None
    for i, c in enumerate(line):
        if quote:
            if c == quote:
                quote = None
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i]
    return line


def _split_key(content: str) -> tuple[str, str] | None:
    """Split ``key: value`` (outside quotes/brackets); None if the line is not a mapping entry."""
    quote = None
    depth = 0
    for i, c in enumerate(content):
        if quote:
            if c == quote:
                quote = None
        elif c in "'\"":
            quote = c
        elif c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
        elif c == ":" and depth == 0 and (i + 1 == len(content) or content[i + 1] == " "):
            key = content[:i].strip()
            if key[:1] in "'\"":
                key = str(parse_scalar(key))
            return key, content[i + 1:].strip()
    return None


def loads_yaml(text: str) -> Any:
    """Parse the supported YAML subset (see module docstring)."""
    lines: list[tuple[int, str, int]] = []
    for n, raw in enumerate(text.splitlines(), 1):
        if raw.strip() in ("---", "..."):
            if lines:
                raise ConfigError("multiple YAML documents are not supported")
            continue
        if "\t" in raw[: len(raw) - len(raw.lstrip())]:
            raise ConfigError(f"line {n}: tabs in indentation")
        body = _strip_comment(raw).rstrip()
        if body.strip():
            lines.append((len(body) - len(body.lstrip(" ")), body.strip(), n))
    if not lines:
        return None
    value, pos = _parse_block(lines, 0, lines[0][0])
    if pos != len(lines):
        raise ConfigError(f"line {lines[pos][2]}: unexpected indentation")
    return value


def _parse_block(lines: list[tuple[int, str, int]], pos: int, indent: int) -> tuple[Any, int]:
    """Parse the block (mapping, sequence or lone scalar) at ``indent`` starting at ``pos``."""
    first = lines[pos][1]
    if first == "-" or first.startswith("- "):
        return _parse_seq(lines, pos, indent)
    if _split_key(first) is None:
        return parse_scalar(first), pos + 1
    return _parse_map(lines, pos, indent)


def _parse_value(lines: list[tuple[int, str, int]], pos: int, indent: int,
                 inline: str) -> tuple[Any, int]:
    """Value after ``key:`` or ``-``: inline scalar, or the more-indented block below."""
    if inline:
        return parse_scalar(inline), pos
    if pos < len(lines) and lines[pos][0] > indent:
        return _parse_block(lines, pos, lines[pos][0])
    # A block sequence may sit at the same indentation as its key.
    if pos < len(lines) and lines[pos][0] == indent and (
            lines[pos][1] == "-" or lines[pos][1].startswith("- ")):
        return _parse_seq(lines, pos, indent)
    return None, pos


def _parse_map(lines: list[tuple[int, str, int]], pos: int, indent: int) -> tuple[dict, int]:
    out: dict[str, Any] = {}
    while pos < len(lines) and lines[pos][0] == indent:
        _, content, n = lines[pos]
        kv = _split_key(content)
        if kv is None:
            raise ConfigError(f"line {n}: expected 'key: value', got {content!r}")
        key, inline = kv
        if key in out:
            raise ConfigError(f"line {n}: duplicate key {key!r}")
        out[key], pos = _parse_value(lines, pos + 1, indent, inline)
    if pos < len(lines) and lines[pos][0] > indent:
        raise ConfigError(f"line {lines[pos][2]}: unexpected indentation")
    return out, pos


def _parse_seq(lines: list[tuple[int, str, int]], pos: int, indent: int) -> tuple[list, int]:
    out: list[Any] = []
    while pos < len(lines) and lines[pos][0] == indent and (
            lines[pos][1] == "-" or lines[pos][1].startswith("- ")):
        _, content, n = lines[pos]
        rest = content[1:].strip()
        if rest and _split_key(rest) is not None and rest[0] not in "[{'\"":
            # "- key: value" starts a mapping whose keys sit at the column after "- ".
            item_indent = indent + (len(content) - len(rest))
            sub = [(item_indent, rest, n)]
            j = pos + 1
            while j < len(lines) and lines[j][0] >= item_indent:
                sub.append(lines[j])
                j += 1
            value, used = _parse_map(sub, 0, item_indent)
            if used != len(sub):
                raise ConfigError(f"line {sub[used][2]}: unexpected indentation")
            out.append(value)
            pos = j
        else:
            value, pos = _parse_value(lines, pos + 1, indent, rest)
            out.append(value)
    return out, pos


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a ``.json`` or YAML config file into a dict."""
    p = Path(path)
    text = p.read_text()
    if p.suffix == ".json" or text.lstrip().startswith("{"):
        data = json.loads(text)
    else:
        data = loads_yaml(text)
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping")
    return data


def merge_overrides(config: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """Deep-merge ``overrides`` into a copy of ``config``.

    Keys may be dotted paths (``{"train.max_steps": 10}``) or nested dicts.
    """
    out = json.loads(json.dumps(config))  # deep copy of plain data
    for key, value in (overrides or {}).items():
        parts = key.split(".")
        node = out
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        last = parts[-1]
        if isinstance(value, dict) and isinstance(node.get(last), dict):
            node[last] = merge_overrides(node[last], value)
        else:
            node[last] = value
    return out
