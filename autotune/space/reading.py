"""Reading a space file: its text (UTF-8), its YAML (a key written twice is refused, not taken
from its last line), and the line a field is on, so that every error names the file, the field
and the line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.reader import ReaderError

from autotune.errors import SpaceError

MERGE_TAG = "tag:yaml.org,2002:merge"


def read_text(path: str) -> str:
    """The file's text, decoded as UTF-8 (a byte-order mark is dropped)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise SpaceError(path, [("", f"cannot read file: {exc.strerror or exc}")]) from exc
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        start = raw.rfind(b"\n", 0, exc.start) + 1
        line = raw.count(b"\n", 0, exc.start) + 1
        column = len(raw[start:exc.start].decode("utf-8", errors="replace")) + 1
        raise SpaceError(path, [(
            f"line {line}, column {column}",
            f"not UTF-8 text (byte 0x{raw[exc.start]:02x}): save the file as UTF-8, and check "
            "that --space names the YAML file",
        )]) from exc


def parse(path: str, text: str) -> tuple[Any, Node | None]:
    """The YAML document in ``text`` and its node tree (for ``line_of``)."""
    loader = None
    try:
        loader = yaml.SafeLoader(text)  # refuses control characters already
        node = loader.get_single_node()
        if node is not None:
            problems = _written_twice(node, "", set())
            if problems:
                raise SpaceError(path, problems)
        return (loader.construct_document(node) if node is not None else None), node
    except ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - text.rfind("\n", 0, exc.position)
        raise SpaceError(path, [(
            f"line {line}, column {column}",
            f"not a text file: character #x{exc.character:04x} ({exc.reason}); check that "
            "--space names the YAML file",
        )]) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpaceError(path, [(where, f"YAML syntax error: {problem}")]) from exc
    finally:
        if loader is not None:
            loader.dispose()


def _written_twice(node: Node, at: str, seen: set[int]) -> list[tuple[str, str]]:
    if id(node) in seen:  # an alias to a node already checked (or a recursive one)
        return []
    seen.add(id(node))
    problems: list[tuple[str, str]] = []
    if isinstance(node, MappingNode):
        first: dict[tuple[str, str], int] = {}
        for key, value in node.value:
            name = key.value if isinstance(key, ScalarNode) else None
            field = at if key.tag == MERGE_TAG else _join(at, name)
            # `<<: *anchor` merges keys that the mapping's own keys may override: not a repeat.
            if name is not None and key.tag != MERGE_TAG:
                line, ident = key.start_mark.line + 1, (key.tag, name)
                if ident in first:
                    problems.append((f"{field} (line {line})",
                                     f"written twice, on lines {first[ident]} and {line}: YAML "
                                     "would silently keep the last; keep one"))
                else:
                    first[ident] = line
            problems += _written_twice(value, field, seen)
    elif isinstance(node, SequenceNode):
        for index, item in enumerate(node.value):
            problems += _written_twice(item, f"{at}[{index}]", seen)
    return problems


def _join(at: str, name: str | None) -> str:
    name = "?" if name is None else name
    return f"{at}.{name}" if at else name


def line_of(node: Node | None, field: tuple[str | int, ...]) -> int | None:
    """The line of ``field`` (keys from the top, list indices as ints) in the tree from
    ``parse``; None if absent."""
    line = None
    for name in field:
        if isinstance(name, int):
            if not isinstance(node, SequenceNode) or not 0 <= name < len(node.value):
                return None
            node = node.value[name]
            line = node.start_mark.line + 1
            continue
        if not isinstance(node, MappingNode):
            return None
        match = next(((k, v) for k, v in node.value
                      if isinstance(k, ScalarNode) and k.value == name), None)
        if match is None:
            return None
        line, node = match[0].start_mark.line + 1, match[1]
    return line
