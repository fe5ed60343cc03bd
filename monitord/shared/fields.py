"""Building blocks shared by the config models and the probes' parameter models."""

from __future__ import annotations

import datetime as dt
import math
import os
import re
import zoneinfo
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, WithJsonSchema, model_validator

from monitord.shared import redact

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
MAX_DURATION = 3650 * 86400.0
"""The longest duration a setting may have (ten years): longer is a typo, and overflows dates."""


def parse_duration(value: Any) -> float:
    """Parse ``90s``, ``10m``, ``1h30m``, ``500ms`` or a bare number of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 10m or 90s, not a boolean")
    if isinstance(value, (int, float)):
        try:
            seconds = float(value)
        except OverflowError:  # an int beyond the float range
            seconds = math.inf
    elif isinstance(value, str):
        text = value.strip()
        pos, seconds = 0, 0.0
        for match in _DURATION_PART.finditer(text):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
            pos = match.end()
        if not text or pos != len(text):
            raise ValueError(f"invalid duration {value!r}: write it like 10m, 90s or 1h30m")
    else:
        raise ValueError(f"expected a duration like 10m or 90s, got {type(value).__name__}")
    if math.isnan(seconds):
        raise ValueError("expected a duration like 10m or 90s, not NaN")
    if seconds <= 0:
        raise ValueError("duration must be greater than zero")
    if seconds > MAX_DURATION:
        raise ValueError(f"duration must be at most {format_duration(MAX_DURATION)}")
    return seconds


def format_duration(seconds: float) -> str:
    """The inverse of :func:`parse_duration`, for summaries (``600`` → ``10m``)."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    parts, rest = [], seconds
    for unit in ("d", "h", "m"):
        size = _UNIT_SECONDS[unit]
        if rest >= size:
            count = int(rest // size)
            parts.append(f"{count}{unit}")
            rest -= count * size
    if rest or not parts:
        parts.append(f"{rest:g}s")
    return "".join(parts)


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^(\d+(\.\d+)?(ms|s|m|h|d))+$"},
                {"type": "number", "exclusiveMinimum": 0},
            ],
            "description": "duration: 500ms, 90s, 10m, 1h30m, or seconds as a number",
        }
    ),
]

def _clock_time(value: Any) -> Any:
    """``H:MM`` or ``HH:MM[:SS]`` as a time of day; numbers (seconds since midnight?) are refused."""
    if isinstance(value, (str, int, float)):
        pattern = r"([01]?[0-9]|2[0-3]):([0-5][0-9])(?::([0-5][0-9]))?"
        match = re.fullmatch(pattern, value.strip()) if isinstance(value, str) else None
        if match is None:
            raise ValueError(f"invalid time {value!r}: write it like 9:00, 17:30 or 23:59:59")
        return dt.time(*(int(part) for part in match.groups(default="0")))
    return value


ClockTime = Annotated[dt.time, BeforeValidator(_clock_time)]
"""A time of day; the YAML loader reads an unquoted ``10:00`` as the text "10:00"."""


def _known_zone(value: str) -> str:
    try:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_+\-]*(?:/[A-Za-z0-9_+\-]+){0,2}", value):
            raise ValueError
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {value!r}") from None
    return value


TimeZoneName = Annotated[str, AfterValidator(_known_zone)]
"""An IANA time zone name, e.g. ``Asia/Tokyo``, checked when the config is loaded."""


def _resolve_path(path: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    return path if path.is_absolute() or base is None else Path(base) / path


ConfigPath = Annotated[Path, AfterValidator(_resolve_path)]
"""A path in the config; relative paths are relative to the config file's directory."""

def _valid_regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {value!r}: {exc}") from None
    return value


Regex = Annotated[str, AfterValidator(_valid_regex)]
"""A Python regular expression, checked when the config is loaded."""

Percent = Annotated[float, Field(ge=0, le=100)]
Port = Annotated[int, Field(ge=1, le=65535)]


class StrictModel(BaseModel):
    """A config model: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TimeWindow(StrictModel):
    """A span of time between two moments with an explicit UTC offset (``end`` exclusive)."""

    start: dt.datetime
    end: dt.datetime

    @model_validator(mode="after")
    def _ordered(self) -> "TimeWindow":
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("start and end need a UTC offset, e.g. 2026-12-01T02:00:00+09:00")
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self

    def covers(self, when: float) -> bool:
        """Whether epoch time ``when`` falls inside the window."""
        return self.start.timestamp() <= when < self.end.timestamp()


class SecretRef(StrictModel):
    """Where a secret lives: a file, an environment variable or a systemd credential.

    Secrets are never written inline in the config, and are read only when used.
    """

    file: ConfigPath | None = None
    env: str | None = None
    credential: str | None = Field(
        default=None, description="name of a systemd credential (LoadCredential=) in $CREDENTIALS_DIRECTORY"
    )

    @model_validator(mode="before")
    @classmethod
    def _not_inline(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise ValueError("secrets are never written inline: give {file: PATH}, {env: VAR} or {credential: NAME}")
        return data

    @model_validator(mode="after")
    def _exactly_one(self) -> "SecretRef":
        given = [name for name in ("file", "env", "credential") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of file, env or credential")
        return self

    def read(self) -> str:
        """Return the secret's value, without a trailing newline; from now on logs, the store and
        the metrics mask it (:mod:`monitord.shared.redact`)."""
        value = self._read()
        redact.remember(value)
        return value

    def _read(self) -> str:
        if self.env is not None:
            try:
                return os.environ[self.env]
            except KeyError:
                raise LookupError(f"environment variable {self.env} is not set") from None
        if self.credential is not None:
            directory = os.environ.get("CREDENTIALS_DIRECTORY")
            if not directory:
                raise LookupError(f"credential {self.credential}: $CREDENTIALS_DIRECTORY is not set")
            path = Path(directory) / self.credential
        else:
            path = self.file
        try:
            return path.read_text().rstrip("\n")
        except OSError as exc:
            raise LookupError(f"cannot read secret file {path}: {exc.strerror}") from None


MAX_ID_DIGITS = 18  # below 2**63: SQLite's integers


def parse_id(text: str) -> int:
    """An id typed or sent by a person (incident, maintenance window): plain ASCII digits only.

    ``int()`` would also take signs, spaces, underscores and other scripts' digits (``١٢``).
    """
    if not (text.isascii() and text.isdigit() and len(text) <= MAX_ID_DIGITS):
        raise ValueError(f"must be a number (digits 0-9, at most {MAX_ID_DIGITS})")
    return int(text)
