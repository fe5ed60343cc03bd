"""Secret values never leave the process in text: one registry, applied where text leaves.

Every value read from a ``{file|env|credential}`` secret is remembered here when it is read
(:meth:`monitord.shared.fields.SecretRef.read`), with the forms an error message may quote it in
(percent-encoded, JSON- or repr-escaped, each line of a multi-line secret); :func:`redact`
masks them all. It is applied where error text is made (driver, pager and probe errors) and
where text leaves the process: every log line (:class:`Formatter`), every string written to
the state store (:class:`Connection`), the metrics exposition. A secret that was never read
cannot be in any text we produce.

Values shorter than :data:`MIN_LENGTH` are not masked: they are well-known defaults (SNMP
"public"/"private", a BMC's "calvin") or too weak to protect, and masking such a common word in
every log line and journal entry ("public holiday") would hide more than it protects.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import threading
from urllib.parse import quote

MASK = "[REDACTED]"
MIN_LENGTH = 8

_lock = threading.Lock()
_forms: set[str] = set()
_pattern: re.Pattern[str] | None = None


def _spellings(value: str) -> set[str]:
    forms = {value, quote(value, safe=""), quote(value, safe=":/?#[]@!$&'()*+,;=%"),
             json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1], repr(value)[1:-1]}
    if "\n" in value:
        forms.update(line.strip() for line in value.splitlines())
    return {form for form in forms if len(form) >= MIN_LENGTH}


def remember(value: str) -> None:
    """Mask ``value`` (a secret just read) in all text from now on."""
    global _pattern
    new = _spellings(value) - _forms
    if not new:
        return
    with _lock:
        _forms.update(new)
        # longest first, so a value is masked whole rather than around a shorter one inside it
        _pattern = re.compile("|".join(re.escape(form) for form in sorted(_forms, key=len, reverse=True)))


def redact(text: str) -> str:
    """``text`` with every remembered secret replaced by ``[REDACTED]``."""
    pattern = _pattern
    return pattern.sub(MASK, text) if pattern is not None and text else text


class Formatter(logging.Formatter):
    """A log formatter whose output (message, exception, stack) never contains a secret."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def _clean(params):
    if isinstance(params, dict):
        return {k: redact(v) if isinstance(v, str) else v for k, v in params.items()}
    return tuple(redact(v) if isinstance(v, str) else v for v in params)


class Connection(sqlite3.Connection):
    """An SQLite connection that never writes a secret (pass as ``sqlite3.connect(factory=...)``)."""

    def execute(self, sql: str, parameters=(), /):
        return super().execute(sql, _clean(parameters))

    def executemany(self, sql: str, seq_of_parameters, /):
        return super().executemany(sql, (_clean(p) for p in seq_of_parameters))
