"""Config fuzzing: 1,100 seeded broken configs (tests/fuzzconfig.py) through the loader, and a
sample through ``monitord check-config`` as a process. None may crash or hang the loader; each
is refused with ``path: problem (line N)`` lines naming the file, or accepted and usable."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections import Counter
from contextlib import contextmanager

import pytest

from monitord.config import ConfigError, load_config
from tests import fuzzconfig

SEED, COUNT = 20261126, 1100
CASES = fuzzconfig.cases(SEED, COUNT)
PROBLEM = re.compile(r".+ \(line [1-9][0-9]*\)")
HANG = 120
"""Seconds after which one case counts as a hang: no load comes near it (benchmarks/config_fuzz.py)."""


class Hang(Exception):
    """A case did not finish loading."""


@contextmanager
def watchdog(seconds: float):
    """Turn a hang into a test failure instead of a stuck suite."""
    def expire(*_):
        raise Hang

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_the_cases_are_many_varied_and_the_same_every_time():
    assert len(CASES) == COUNT and len({data for _, data in CASES}) > 0.85 * COUNT
    families = Counter(name.split("-")[1] for name, _ in CASES)
    assert set(families) == {"tree", "text", "bytes", "alias", "deep", "scalar", "reference", "key"}
    assert min(families.values()) >= 20
    assert fuzzconfig.cases(SEED, 50) == CASES[:50]


def test_no_generated_config_crashes_or_hangs_the_loader(tmp_path):
    outcomes = Counter()
    path = tmp_path / "monitord.yaml"
    for name, data in CASES:
        path.write_bytes(data)
        try:
            with watchdog(HANG):
                fuzzconfig.use(load_config(path))
        except ConfigError as exc:
            lines = str(exc).splitlines()
            assert lines[0] == f"{path}: invalid config:", name
            assert exc.problems and all(PROBLEM.fullmatch(p) for p in exc.problems), (name, exc.problems)
            outcomes["refused"] += 1
        except Exception as exc:  # a traceback in `monitord check-config` or `run`
            pytest.fail(f"case {name}: {type(exc).__name__}: {exc}\n{data[:500]!r}")
        else:
            outcomes["accepted"] += 1
    assert outcomes["refused"] >= 1000 and outcomes["accepted"] > 0, outcomes


def test_check_config_processes_exit_2_with_path_problem_lines(tmp_path):
    """A case of each family that used to crash, as ``monitord check-config`` processes side by side."""
    sample = {name.split("-")[1]: (name, data) for name, data in reversed(CASES)
              if name.split("-")[1] in ("alias", "bytes", "deep", "key")}
    env = {**os.environ, "PYTHONPATH": str(fuzzconfig.REPO)}
    running = []
    for family, (name, data) in sorted(sample.items()):
        path = tmp_path / f"{name}.yaml"
        path.write_bytes(data)
        running.append((name, path, subprocess.Popen([sys.executable, "-m", "monitord", "check-config", str(path)],
                                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)))
    for name, path, proc in running:
        _, err = proc.communicate(timeout=HANG)
        text = err.decode()
        assert proc.returncode == 2 and "Traceback" not in text, (name, proc.returncode, text)
        lines = text.splitlines()
        assert lines[0] == f"{path}: invalid config:" and len(lines) > 1, (name, text)
        assert all(PROBLEM.fullmatch(line.strip()) for line in lines[1:]), (name, text)
