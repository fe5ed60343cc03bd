#!/usr/bin/env python3
"""Write docs/metrics.md from the metrics manifest (monitord/edge/metrics_manifest.yaml).

    scripts/metrics_doc.py          regenerate the page
    scripts/metrics_doc.py --check [PAGE]  exit 1 if the page (default docs/metrics.md) is not
                                           what the manifest gives
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

import gendoc  # scripts/gendoc.py, beside this script

REPO = Path(__file__).resolve().parent.parent
MANIFEST = REPO / "monitord" / "edge" / "metrics_manifest.yaml"
DOC = REPO / "docs" / "metrics.md"

INTRO = """\
# Metrics

Generated from `monitord/edge/metrics_manifest.yaml` by `scripts/metrics_doc.py`; do not edit by
hand. A test holds the manifest to what a running daemon exports, both ways.

Names are as queried in PromQL (counters end in `_total`; a histogram `X` is the series
`X_bucket{le}`, `X_sum` and `X_count`). Check series carry `host`, `check` and `kind`, and a
check removed by a reload loses its series. A scrape of `/metrics` has three series per check
(success, duration, state); `/metrics?host=NAME` (repeatable, like blackbox_exporter's
`/probe?target=`) has only those hosts' check series, with their detail too (status, last run,
measured values: the metrics marked "per-host scrape only"). Alert rules for these metrics are in
`deploy/prometheus/monitord.rules.yml`, a Grafana dashboard in `deploy/grafana/monitord.json`.

| metric | type | labels | meaning | series exist |
|---|---|---|---|---|
"""


def load() -> list[dict]:
    """The manifest's metrics, in order."""
    return yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))["metrics"]


def render(metrics: list[dict]) -> str:
    """The Markdown page."""
    rows = [f"| `{m['name']}` | {m['type']} | {', '.join(f'`{label}`' for label in m['labels']) or '—'} "
            f"| {m['help']} | {m['when']} |" for m in metrics]
    return INTRO + "\n".join(rows) + "\n"


def main(argv: list[str]) -> int:
    return gendoc.main(argv, render(load()), DOC, "scripts/metrics_doc.py", __doc__)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
