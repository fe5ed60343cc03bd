#!/usr/bin/env python3
"""Write docs/api.md from the API's OpenAPI document (monitord/edge/openapi.json).

    scripts/api_doc.py                 regenerate the page
    scripts/api_doc.py --check [PAGE]  exit 1 if the page (default docs/api.md) is not what
                                       the document gives
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import gendoc  # scripts/gendoc.py, beside this script

REPO = Path(__file__).resolve().parent.parent
DOCUMENT = REPO / "monitord" / "edge" / "openapi.json"
DOC = REPO / "docs" / "api.md"

INTRO = """\
# API reference

Generated from `monitord/edge/openapi.json` by `scripts/api_doc.py`; do not edit by hand. The
running daemon serves the same document at `/api/v1/openapi.json`, on the listener of
`daemon.metrics_listen`, and a test runs schemathesis against a live daemon with it. How to
configure the token and the reads is in the [operator guide](operator-guide.md); the CLI uses
this API when a daemon runs.

{description}

**Access**: *reads* are open, token-protected or off by `daemon.api.reads`; *token* routes
always need `Authorization: Bearer TOKEN` (`daemon.api_token`).
"""


def load() -> dict:
    """The OpenAPI document."""
    return json.loads(DOCUMENT.read_text(encoding="utf-8"))


def _type(schema: dict) -> str:
    """A schema in a few words: a link to a named schema, an array of one, or its type and values."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{name.lower()})"
    if schema.get("type") == "array":
        return f"array of {_type(schema.get('items', {}))}"
    text = schema.get("type", "any")
    if "enum" in schema:
        text += " (" + " \\| ".join(f"`{v}`" for v in schema["enum"]) + ")"
    if "default" in schema:
        text += f", default `{schema['default']}`"
    return text + (", or null" if schema.get("nullable") else "")


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _operation(method: str, path: str, op: dict) -> list[str]:
    access = "reads" if {} in op.get("security", []) else "token"
    summary = _cell(op.get("summary", ""))
    lines = [f"### `{method.upper()} {path}`", "", f"{summary[:1].upper()}{summary[1:]}. Access: *{access}*.", ""]
    params = op.get("parameters", [])
    if params:
        lines += ["| parameter | in | type |", "|---|---|---|"]
        lines += [f"| `{p['name']}` | {p['in']} | {_type(p.get('schema', {}))} |" for p in params]
        lines.append("")
    body = op.get("requestBody")
    if body:
        schema = body["content"]["application/json"]["schema"]
        lines += [f"Body ({'required' if body.get('required') else 'optional'}): {_type(schema)}", ""]
    lines += ["| status | meaning | body |", "|---|---|---|"]
    for status, answer in sorted(op["responses"].items()):
        content = answer.get("content", {}).get("application/json")
        lines.append(f"| {status} | {_cell(answer['description'])} | {_type(content['schema']) if content else '—'} |")
    return lines + [""]


def _schema(name: str, schema: dict) -> list[str]:
    lines = [f"### {name}", ""]
    if schema.get("description"):
        lines += [_cell(schema["description"]), ""]
    if schema.get("nullable"):
        lines += ["May be null.", ""]
    properties = schema.get("properties", {})
    if not properties:
        return lines + [f"Type: {_type({k: v for k, v in schema.items() if k != 'nullable'})}.", ""]
    required = set(schema.get("required", []))
    lines += ["| field | type | required | meaning |", "|---|---|---|---|"]
    for field, spec in properties.items():
        lines.append(f"| `{field}` | {_type(spec)} | {'yes' if field in required else 'no'} "
                     f"| {_cell(spec.get('description', ''))} |")
    return lines + [""]


def render(document: dict) -> str:
    """The Markdown page."""
    lines = [INTRO.format(description=document["info"]["description"]), "## Routes", ""]
    for path, operations in document["paths"].items():
        for method, op in operations.items():
            lines += _operation(method, path, op)
    lines += ["## Schemas", ""]
    for name, schema in document["components"]["schemas"].items():
        lines += _schema(name, schema)
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str]) -> int:
    return gendoc.main(argv, render(load()), DOC, "scripts/api_doc.py", __doc__)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
