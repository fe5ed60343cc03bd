"""YAML loading that remembers where every key and item came from, for error messages."""

from __future__ import annotations

from typing import Any

import yaml


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


class _Loader(yaml.SafeLoader):
    """SafeLoader producing LineDict/LineList."""


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


def load(text: str) -> Any:
    """Parse YAML text into LineDict/LineList trees; raise :class:`YamlError` on bad input."""
    loader = _Loader(text)
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
