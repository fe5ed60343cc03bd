"""An OpenSSH known_hosts file, read the way ``ssh`` reads it (paramiko's own loader is not used).

paramiko's ``HostKeys`` keeps one key per host and key type (a second one silently replaces the
first) and fails the whole file on a ``@revoked`` or ``@cert-authority`` line. Here:

- every key listed for a host is trusted, however many share a type;
- ``@revoked`` keys are never accepted, for any host, even if another line trusts them;
- ``@cert-authority`` lines are skipped with a warning (host certificates are not negotiated,
  so a CA cannot vouch for anything);
- a line that cannot be parsed is skipped with a warning naming its line number;
- host patterns may be hashed (``|1|salt|hash``), use ``*`` and ``?`` wildcards and ``!`` negation.

Warnings are logged once per file, line and problem, not on every login.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import re
from dataclasses import dataclass
from hashlib import sha1
from pathlib import Path

import paramiko

log = logging.getLogger(__name__)

_warned: set[tuple[str, int, str]] = set()

# The signature algorithms a host key of each type can be offered with.
_ALGORITHMS = {"ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")}


@dataclass(frozen=True, slots=True)
class Entry:
    patterns: tuple[str, ...]
    key: paramiko.PKey
    line: int

    def matches(self, host: str) -> bool:
        """Whether ``host`` (``name`` or ``[name]:port``) is one this line is for."""
        matched = False
        for pattern in self.patterns:
            negated = pattern.startswith("!")
            if _match(pattern.removeprefix("!"), host):
                if negated:
                    return False
                matched = True
        return matched


def _match(pattern: str, host: str) -> bool:
    if pattern.startswith("|1|"):
        try:
            salt, digest = (base64.b64decode(part, validate=True) for part in pattern[3:].split("|", 1))
        except (ValueError, binascii.Error):
            return False
        return hmac.compare_digest(hmac.new(salt, host.encode(), sha1).digest(), digest)
    wildcards = "".join({"*": ".*", "?": "."}.get(c, re.escape(c)) for c in pattern.lower())  # no [sets]
    return re.fullmatch(wildcards, host.lower()) is not None


class KnownHosts:
    """The trusted and revoked host keys of one known_hosts file."""

    def __init__(self, trusted: list[Entry], revoked: list[Entry]):
        self.trusted, self.revoked = trusted, revoked

    @classmethod
    def load(cls, path: Path) -> "KnownHosts":
        """Read ``path`` (OSError if it cannot be read); bad or unsupported lines are skipped."""
        trusted: list[Entry] = []
        revoked: list[Entry] = []
        with open(path, encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, 1):
                fields = line.split()
                if not fields or fields[0].startswith("#"):
                    continue
                marker = fields.pop(0) if fields[0].startswith("@") else None
                if marker == "@cert-authority":
                    _warn(path, number, "@cert-authority line ignored: host certificates are not supported")
                    continue
                if marker not in (None, "@revoked"):
                    _warn(path, number, f"unknown marker {marker}: line ignored")
                    continue
                if len(fields) < 3:
                    _warn(path, number, "not 'hosts keytype key': line ignored")
                    continue
                try:
                    key = paramiko.PKey.from_type_string(fields[1], base64.b64decode(fields[2], validate=True))
                except (ValueError, binascii.Error, paramiko.SSHException) as exc:
                    _warn(path, number, f"unusable {fields[1]} key ({exc or type(exc).__name__}): line ignored")
                    continue
                entry = Entry(tuple(fields[0].split(",")), key, number)
                (revoked if marker else trusted).append(entry)
        return cls(trusted, revoked)

    def keys_for(self, host: str) -> list[paramiko.PKey]:
        """The keys trusted for ``host``."""
        return [entry.key for entry in self.trusted if entry.matches(host)]

    def is_revoked(self, key: paramiko.PKey) -> bool:
        """Whether ``key`` is listed as ``@revoked`` (for any host)."""
        return any(entry.key == key for entry in self.revoked)

    def algorithms_for(self, host: str) -> set[str] | None:
        """The host key algorithms to offer for ``host`` (those of its known keys), or None if it has none."""
        keys = self.keys_for(host)
        if not keys:
            return None
        return {alg for key in keys for alg in _ALGORITHMS.get(key.get_name(), (key.get_name(),))}


def _warn(path: Path, line: int, problem: str) -> None:
    if (str(path), line, problem) not in _warned:
        _warned.add((str(path), line, problem))
        log.warning("%s line %d: %s", path, line, problem)
