"""The secret registry: every secret read is masked in logs, the store and the metrics."""

from __future__ import annotations

import io
import json
import logging
import secrets
import sqlite3
import subprocess
import sys
from urllib.parse import quote

from monitord.shared import redact
from monitord.shared.fields import SecretRef
from monitord.edge.metrics import Metrics
from monitord.records.state import JournalEntry, SQLiteStore


def fresh(prefix: str = "") -> str:
    """A secret no other test uses (the registry is process-wide)."""
    return prefix + secrets.token_urlsafe(18)


def test_every_spelling_of_a_secret_is_masked():
    value = fresh("pä ss/\"word\\") + "?x=1&y"
    redact.remember(value)
    for spelling in (value, quote(value, safe=""), quote(value, safe=":/?&="), json.dumps(value)[1:-1],
                     json.dumps(value, ensure_ascii=False)[1:-1], repr(value)[1:-1]):
        assert redact.redact(f"error: <{spelling}> refused") == "error: <[REDACTED]> refused", spelling


def test_each_line_of_a_multi_line_secret_and_the_longest_match_first():
    inner = fresh()
    key = f"-----BEGIN KEY-----\n{inner}\n{fresh()}\n-----END KEY-----"
    redact.remember(key)
    redact.remember(inner[:10])  # a shorter secret inside a longer one
    assert redact.redact(f"bad line {inner} in key") == "bad line [REDACTED] in key"
    assert redact.redact(key) == "[REDACTED]"


def test_short_values_are_not_masked_and_text_without_secrets_is_unchanged():
    redact.remember("public")  # the SNMP default community
    redact.remember("")
    text = "on a public holiday; public is not masked, nor is an empty secret"
    assert redact.redact(text) == text


def test_reading_a_secret_registers_it(tmp_path, monkeypatch):
    value = fresh()
    monkeypatch.setenv("MONITORD_TEST_SECRET", value)
    assert redact.redact(value) == value  # not read yet
    assert SecretRef(env="MONITORD_TEST_SECRET").read() == value
    assert redact.redact(f"x{value}x") == "x[REDACTED]x"
    (tmp_path / "s").write_text(fresh() + "\n")
    on_file = SecretRef(file=tmp_path / "s").read()
    assert redact.redact(on_file) == "[REDACTED]"


def test_log_lines_and_tracebacks_are_masked():
    value = fresh()
    redact.remember(value)
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(redact.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("test_redact")
    logger.addHandler(handler)
    try:
        logger.warning("posting to %s failed", value)
        try:
            raise ValueError(f"invalid URL {value!r}")
        except ValueError:
            logger.exception("unexpected")
    finally:
        logger.removeHandler(handler)
    text = out.getvalue()
    assert value not in text
    assert "WARNING posting to [REDACTED] failed" in text and "ValueError: invalid URL '[REDACTED]'" in text


async def test_nothing_written_to_the_store_contains_a_secret(tmp_path):
    value = fresh()
    redact.remember(value)
    store = SQLiteStore(tmp_path / "state.db")
    async with store.transaction():
        await store.incidents.append(JournalEntry(ts=1.0, event="page_delivery", reason=f"HTTP 400: bad key {value}",
                                                  detail={"echo": value}))
    item = await store.outbox.enqueue("pd", "key1", "trigger", '{"summary": "x"}', 1.0)
    await store.outbox.failed(item, 1, 2.0, f"HTTP 400: {{\"routing_key\": \"{value}\"}}")
    await store.close()
    db = sqlite3.connect(tmp_path / "state.db")
    dump = "\n".join(db.iterdump())
    assert value not in dump and dump.count("[REDACTED]") == 3


def test_metrics_exposition_is_masked():
    value = fresh()
    redact.remember(value)
    metrics = Metrics()
    metrics.probe_results.labels("tcp", "critical", value).inc()
    text = metrics.exposition().decode()
    assert value not in text and 'reason="[REDACTED]"' in text


def test_an_uncaught_exception_is_logged_masked():
    value = fresh()
    program = ("from monitord.edge import cli\nfrom monitord.shared import redact\n"
               "cli._setup_logging('info')\n"
               f"redact.remember({value!r})\n"
               f"raise ValueError('invalid URL {value}')\n")
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert value not in out.stderr
    assert "CRITICAL monitord: uncaught exception" in out.stderr and "ValueError: invalid URL [REDACTED]" in out.stderr
