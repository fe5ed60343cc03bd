"""YAML loading that remembers where every key and item came from, for error messages.

Loading is bounded: the file's size, its nesting depth and what its aliases expand to are
capped, so no input can hang the loader or exhaust the stack. Values YAML 1.1 would silently
turn into something else are refused or read as written (see :class:`_Loader`).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import yaml

MAX_BYTES = 8 * 1024 * 1024
"""Largest config file read; a fleet of 10,000 hosts fits in a fraction of this."""
MAX_DEPTH = 64
"""Deepest nesting of mappings and sequences, aliases included (a config needs under 10)."""
MAX_ALIAS_VALUES = 100_000
"""How many values all aliases of a file may repeat together; a "billion laughs" needs far more."""
MAX_INT_CHARS = 20
"""Longest integer literal: anything longer is not a setting (and would not fit 64 bits)."""

_SHOWN_STEPS = 8  # a too deep node is named by its first steps: the rest is the nesting itself
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SEXAGESIMAL = re.compile(r"^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$")
_INT_TAG, _FLOAT_TAG, _STR_TAG = (f"tag:yaml.org,2002:{name}" for name in ("int", "float", "str"))


class LineDict(dict):
    """A mapping from YAML that knows the line of itself and of each key."""

    line: int = 0
    key_lines: dict

    def line_of(self, key: Any) -> int:
        """Line of ``key``, or of the mapping itself when the key is absent."""
        return self.key_lines.get(key, self.line)


class LineList(list):
    """A sequence from YAML that knows the line of itself and of each item."""

    line: int = 0
    item_lines: list

    def line_of(self, index: Any) -> int:
        """Line of item ``index``, or of the sequence itself."""
        if isinstance(index, int) and 0 <= index < len(self.item_lines):
            return self.item_lines[index]
        return self.line


class YamlError(Exception):
    """The file is not valid YAML, or repeats a key; ``problems`` are (path, message, line)."""

    def __init__(self, problems: list[tuple[tuple, str, int]]):
        super().__init__("; ".join(message for _, message, _ in problems))
        self.problems = problems


class _Problem(Exception):
    """Raised while composing: one (path, message, line) problem that ends the load."""

    def __init__(self, path: tuple, message: str, mark: yaml.Mark):
        super().__init__(message)
        self.problem = (path, message, mark.line + 1)


class _Loader(yaml.SafeLoader):
    """SafeLoader producing LineDict/LineList, composing within the bounds above.

    Besides the bounds it refuses mapping keys that are not plain values (``? [a, b]``),
    control characters (also when escaped, ``"\\x01"``), integers too long to be a setting and
    non-finite numbers (``.inf``, ``.nan``, ``1e400``). It reads ``10:00`` as the text
    "10:00", as YAML 1.2 does, never as YAML 1.1's sexagesimal number 600.
    """

    def __init__(self, text: str):
        super().__init__(text)
        self._steps: tuple = ()  # the path to the node being composed
        self._open: set[str] = set()  # anchors of the nodes being composed
        self._sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (values in it, nesting height)
        self._aliased = 0  # values repeated by aliases so far

    def fetch_flow_collection_start(self, TokenClass: type) -> None:
        # The scanner looks ahead over nested [ and { at a cost growing with the square of
        # the depth, so deep flow nesting is refused here, named by where the composer is.
        if self.flow_level >= MAX_DEPTH:
            raise _Problem(self._steps[:_SHOWN_STEPS], f"nests deeper than {MAX_DEPTH} levels", self.get_mark())
        super().fetch_flow_collection_start(TokenClass)

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        if isinstance(parent, yaml.MappingNode) and index is None:  # a key, found at its mapping's path
            path = self._steps
            if self.check_event(yaml.SequenceStartEvent, yaml.MappingStartEvent):
                raise _Problem(path, "a key must be a plain value, not a list or mapping", self.peek_event().start_mark)
            node = self._compose(parent, index, path)
            if not isinstance(node, yaml.ScalarNode):
                raise _Problem(path, "a key must be a plain value, not a list or mapping", node.start_mark)
            return self._checked(node, path)
        step = index.value if isinstance(index, yaml.Node) else index
        path = self._steps + ((step,) if parent is not None else ())
        if len(path) > MAX_DEPTH:
            raise _Problem(path[:_SHOWN_STEPS], f"nests deeper than {MAX_DEPTH} levels", self.peek_event().start_mark)
        outer, self._steps = self._steps, path
        try:
            return self._checked(self._compose(parent, index, path), path)
        finally:
            self._steps = outer

    def _compose(self, parent: yaml.Node | None, index: Any, path: tuple) -> yaml.Node:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            if event.anchor in self._open:
                raise _Problem(path, f"alias *{event.anchor} refers to the node that defines it", event.start_mark)
            node = super().compose_node(parent, index)
            size, height = self._sizes[id(node)]
            self._aliased += size
            if self._aliased > MAX_ALIAS_VALUES:
                raise _Problem(path, f"aliases repeat more than {MAX_ALIAS_VALUES} values (a YAML alias bomb?)",
                               event.start_mark)
            if len(path) + height - 1 > MAX_DEPTH:
                raise _Problem(path[:_SHOWN_STEPS], f"alias *{event.anchor} nests deeper than {MAX_DEPTH} levels", event.start_mark)
            return node
        if event.anchor is not None:
            self._open.add(event.anchor)
        node = super().compose_node(parent, index)
        self._open.discard(event.anchor)
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        else:
            children = node.value if isinstance(node, yaml.SequenceNode) else []
        sizes = [self._sizes[id(child)] for child in children]
        self._sizes[id(node)] = (1 + sum(size for size, _ in sizes), 1 + max((height for _, height in sizes), default=0))
        return node

    def _checked(self, node: yaml.Node, path: tuple) -> yaml.Node:
        """Refuse scalars that cannot be a setting: control characters, overlong or non-finite numbers."""
        if not isinstance(node, yaml.ScalarNode):
            return node
        control = _CONTROL.search(node.value)
        if control:
            raise _Problem(path, f"control character U+{ord(control.group()):04X} is not allowed", node.start_mark)
        if node.tag == _INT_TAG and len(node.value) > MAX_INT_CHARS:
            raise _Problem(path, f"number too large ({len(node.value)} digits)", node.start_mark)
        if node.tag == _FLOAT_TAG and not math.isfinite(self.construct_yaml_float(node)):
            raise _Problem(path, f"{node.value} is not a finite number (quote it if it is text)", node.start_mark)
        return node


_Loader.yaml_implicit_resolvers = {  # sexagesimal-looking plain scalars are text; the rest as SafeLoader
    first: ([(_STR_TAG, _SEXAGESIMAL)] if first in "+-0123456789" else []) + resolvers
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    result = LineDict()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = key_node.start_mark.line + 1
    return result


def _duplicates(node: yaml.Node, path: tuple, found: list) -> None:
    """Collect keys repeated within one mapping (YAML says they are errors; PyYAML keeps the last)."""
    if isinstance(node, yaml.MappingNode):
        first_lines: dict = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            line = key_node.start_mark.line + 1
            if key is not None and key != "<<":
                if key in first_lines:
                    found.append((path + (key,), f"duplicate key (first set on line {first_lines[key]})", line))
                first_lines.setdefault(key, line)
            _duplicates(value_node, path + (key,), found)
    elif isinstance(node, yaml.SequenceNode):
        for index, child in enumerate(node.value):
            _duplicates(child, path + (index,), found)


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> LineList:
    result = LineList(loader.construct_object(child, deep=True) for child in node.value)
    result.line = node.start_mark.line + 1
    result.item_lines = [child.start_mark.line + 1 for child in node.value]
    return result


def _construct_timestamp(loader: _Loader, node: yaml.ScalarNode) -> Any:
    """Dates like 2026-02-30 are errors with a line, not a traceback."""
    try:
        return yaml.SafeLoader.construct_yaml_timestamp(loader, node)
    except ValueError as exc:
        raise yaml.constructor.ConstructorError(None, None, f"invalid date {node.value!r}: {exc}",
                                                node.start_mark) from None


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _construct_timestamp)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def read(path: str | Path) -> str:
    """The text of the file at ``path`` (UTF-8, at most MAX_BYTES); raise :class:`YamlError`
    for a file too large or not UTF-8, and :class:`OSError` when it cannot be read."""
    with open(path, "rb") as file:
        raw = file.read(MAX_BYTES + 1)
    if len(raw) > MAX_BYTES:
        line = raw.count(b"\n", 0, MAX_BYTES) + 1
        raise YamlError([((), f"the file is larger than {MAX_BYTES // 2**20} MiB", line)])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise YamlError([((), f"not UTF-8 text: byte 0x{raw[exc.start]:02x} cannot be decoded", line)]) from None


def load(text: str) -> Any:
    """Parse YAML text into LineDict/LineList trees; raise :class:`YamlError` on bad input."""
    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise YamlError([((), f"invalid YAML: character U+{exc.character:04X} is not allowed", line)]) from None
    try:
        node = loader.get_single_node()
        duplicates: list = []
        if node is not None:
            _duplicates(node, (), duplicates)
        if duplicates:
            raise YamlError(duplicates)
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        problem = exc.problem or exc.context or "invalid YAML"
        raise YamlError([((), f"invalid YAML: {problem}", line)]) from None
    except _Problem as exc:
        raise YamlError([exc.problem]) from None
    except yaml.YAMLError as exc:
        raise YamlError([((), f"invalid YAML: {exc}", 0)]) from None
    finally:
        loader.dispose()
    return data


def in_data(data: Any, loc: tuple) -> tuple:
    """``loc`` without the steps that do not exist in ``data`` (pydantic's union tags).

    The last step is always kept: it may name a key that is missing.
    """
    node, kept = data, []
    for i, step in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, (dict, list)):
            try:
                node = node[step]
            except (KeyError, IndexError, TypeError):
                if not last:
                    continue
        kept.append(step)
    return tuple(kept)


def line_at(data: Any, loc: tuple) -> int:
    """The line of the deepest node of ``data`` reached by following ``loc``.

    Steps that do not exist in the data (pydantic's union tags) are skipped.
    """
    node, line = data, getattr(data, "line", 0)
    for step in loc:
        if isinstance(node, (LineDict, LineList)):
            line = node.line_of(step)
            try:
                node = node[step]
            except (KeyError, IndexError, TypeError):
                continue
        else:
            break
    return line
