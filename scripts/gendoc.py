"""The command line the generated docs share: write the page, or ``--check [PAGE]`` that it is current."""

import sys
from pathlib import Path


def main(argv: list[str], text: str, doc: Path, script: str, usage: str) -> int:
    """Write ``text`` to ``doc``; with ``--check [PAGE]`` exit 1 when the page differs from it."""
    if argv[:1] == ["--check"] and len(argv) <= 2:
        page = Path(argv[1]) if len(argv) == 2 else doc
        if page.read_text(encoding="utf-8") != text:
            print(f"{page} is out of date: run {script}", file=sys.stderr)
            return 1
        return 0
    if argv:
        print(usage, file=sys.stderr)
        return 2
    doc.write_text(text, encoding="utf-8")
    return 0
