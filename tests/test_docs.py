"""The documentation points at things that exist: relative links resolve to files in the
repository, and every ``monitord VERB`` a page names is a verb of the CLI."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from monitord.edge.cli import _parser

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CODE = re.compile(r"```.*?```|`(?:[^`\n]|\n(?!\s*\n))+`|^(?: {4}|\t)[^\n]*$", re.S | re.M)  # spans end at a blank line
# `monitord run`, `/opt/monitord/venv/bin/monitord check-config`, `monitord approve\|deny HOST`
COMMAND = re.compile(r"(?:^|(?<=[\s/`(]))monitord ([a-z][a-z-]*(?:\\?\|[a-z][a-z-]*)*)(?![\w/.])(?: ([a-z][a-z-]*(?:\\?\|[a-z][a-z-]*)*))?")


def links(text: str) -> list[str]:
    """The targets of the Markdown links in ``text``."""
    return LINK.findall(text)


def broken_links(page: Path, text: str) -> list[str]:
    """Links of ``page`` that leave the repository or name a file that does not exist."""
    bad = []
    for target in links(text):
        if target.startswith("#"):
            continue
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("/"):
            bad.append(f"{target}: not a relative link inside the repository")
            continue
        path = (page.parent / target.split("#", 1)[0]).resolve()
        if not path.is_relative_to(REPO) or not path.exists():
            bad.append(f"{target}: no such file")
    return bad


def commands(text: str) -> list[tuple[str, str | None]]:
    """Each ``monitord VERB [SUBVERB]`` written as code in ``text``, one pair per alternative."""
    found = []
    for code in CODE.findall(text):
        for verbs, subverbs in COMMAND.findall(code):
            for verb in re.split(r"\\?\|", verbs):
                found += [(verb, sub) for sub in re.split(r"\\?\|", subverbs)] if subverbs else [(verb, None)]
    return found


def _choices(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), {})


def unknown_commands(text: str) -> list[str]:
    """Commands in ``text`` that the CLI does not have. A word after a verb without
    sub-verbs is an argument (a host name), not checked."""
    verbs = _choices(_parser())
    bad = []
    for verb, sub in commands(text):
        if verb not in verbs:
            bad.append(f"monitord {verb}")
        elif sub is not None and (subs := _choices(verbs[verb])) and sub not in subs:
            bad.append(f"monitord {verb} {sub}")
    return bad


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page: Path) -> None:
    assert broken_links(page, page.read_text()) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_named_commands_are_cli_verbs(page: Path) -> None:
    assert unknown_commands(page.read_text()) == []


def test_the_guides_are_linked_and_name_commands() -> None:
    """The new pages are reachable from README and the design notes, and the checks above see
    their commands (a page whose commands are not found would pass vacuously)."""
    for page, guides in (("README.md", {"docs/operator-guide.md", "docs/troubleshooting.md", "docs/api.md"}),
                         ("docs/design.md", {"operator-guide.md", "troubleshooting.md", "api.md"})):
        assert guides <= {t.split("#")[0] for t in links((REPO / page).read_text())}, page
    guide = commands((REPO / "docs" / "operator-guide.md").read_text())
    assert ("check-config", None) in guide and ("maintenance", "add") in guide


def test_a_broken_link_is_reported() -> None:
    page = REPO / "docs" / "x.md"
    text = "[ok](design.md#results) [gone](nothing.md) [out](https://example.com/) [up](../../etc/passwd) [a](#x)"
    assert broken_links(page, text) == ["nothing.md: no such file",
                                        "https://example.com/: not a relative link inside the repository",
                                        "../../etc/passwd: no such file"]


def test_an_unknown_verb_is_reported() -> None:
    text = ("Run `monitord run --config X`, then `monitord restart`; `monitord approve\\|deny HOST`;\n"
            "    /opt/monitord/venv/bin/monitord dashboard\n"
            "`monitord maintenance add --host web1`, `monitord maintenance purge 3`,\n"
            "`monitord report list|show|shred`; prose: monitord is not a command; `monitord_store_healthy`.")
    assert unknown_commands(text) == ["monitord restart", "monitord dashboard", "monitord maintenance purge",
                                      "monitord report shred"]


def test_the_api_reference_is_generated_from_the_openapi_document(tmp_path) -> None:
    """docs/api.md is what scripts/api_doc.py makes of monitord/edge/openapi.json: every route and
    schema is in it, and a page that no longer matches the document is caught."""
    import json

    script = REPO / "scripts" / "api_doc.py"
    done = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    doc = (REPO / "docs" / "api.md").read_text(encoding="utf-8")
    document = json.loads((REPO / "monitord" / "edge" / "openapi.json").read_text(encoding="utf-8"))
    for path, operations in document["paths"].items():
        for method, op in operations.items():
            access = "reads" if {} in op.get("security", []) else "token"
            assert f"### `{method.upper()} {path}`" in doc
            section = doc.split(f"### `{method.upper()} {path}`", 1)[1].split("###", 1)[0]
            assert f"Access: *{access}*" in section
    for name in document["components"]["schemas"]:
        assert f"### {name}\n" in doc
    stale = tmp_path / "api.md"  # a hand edit is caught
    stale.write_text(doc.replace("/api/v1/hosts/{host}/release", "/api/v1/hosts/{host}/free"), encoding="utf-8")
    done = subprocess.run([sys.executable, str(script), "--check", str(stale)], capture_output=True, text=True)
    assert done.returncode == 1 and f"{stale} is out of date" in done.stderr
