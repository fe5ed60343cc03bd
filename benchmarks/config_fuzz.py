"""Config fuzz benchmark: the fuzz test's generated bad configs through ``monitord check-config``.

Counts, per outcome: accepted (exit 0) and usable as ``run`` uses a config, accepted but then
failing at run time, rejected (exit 2 with a well-formed error), any other
exit code, tracebacks (by exception type), error lines without ``(line N)``, and timeouts
(a case still loading after --timeout seconds), plus the slowest cases. Run it against
another checkout (e.g. main, for a before/after table) with --code:

    .venv/bin/python benchmarks/config_fuzz.py --cases 1100 --code /work/main

The cases always come from this checkout's tests/fuzzconfig.py. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import re
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
PROBLEM = re.compile(r"  .+ \(line [1-9][0-9]*\)")


class Timeout(Exception):
    """A case took longer than --timeout."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1100)
    parser.add_argument("--seed", type=int, default=20261126)
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds before a case counts as a hang")
    parser.add_argument("--code", type=Path, default=HERE, help="checkout whose monitord is measured")
    args = parser.parse_args()
    spec = importlib.util.spec_from_file_location("fuzzconfig", HERE / "tests" / "fuzzconfig.py")
    fuzzconfig = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fuzzconfig)
    sys.path.insert(0, str(args.code.resolve()))
    from monitord.edge import cli
    from monitord.config import load_config

    def expire(*_: object) -> None:
        raise Timeout

    signal.signal(signal.SIGALRM, expire)
    outcomes, failures, slowest = Counter(), Counter(), []
    cases = fuzzconfig.cases(args.seed, args.cases)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "case.yaml"
        for name, data in cases:
            path.write_bytes(data)
            err = io.StringIO()
            begun = time.perf_counter()
            signal.setitimer(signal.ITIMER_REAL, args.timeout)
            try:
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
                    code = cli.main(["check-config", str(path)])
                if code == 0:
                    try:
                        fuzzconfig.use(load_config(path))
                    except (Exception, RecursionError) as exc:
                        outcomes["accepted, then failed at run time"] += 1
                        failures[(f"run: {type(exc).__name__}", _family(name))] += 1
                        continue
            except Timeout:
                outcomes["timeout"] += 1
                failures[("timeout", _family(name))] += 1
                continue
            except (Exception, RecursionError) as exc:
                outcomes["traceback"] += 1
                failures[(type(exc).__name__, _family(name))] += 1
                continue
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            slowest.append((time.perf_counter() - begun, name))
            lines = err.getvalue().splitlines()
            if code == 0:
                outcomes["accepted (exit 0)"] += 1
            elif code == 2 and lines[:1] == [f"{path}: invalid config:"] and all(PROBLEM.fullmatch(x) for x in lines[1:]):
                outcomes["rejected (exit 2)"] += 1
            elif code == 2:
                outcomes["exit 2, problem without (line N)"] += 1
                failures[("no line", _family(name))] += 1
            else:
                outcomes[f"exit {code}"] += 1
    total = time.perf_counter() - started
    print(f"code: {args.code}   cases: {len(cases)}   seed: {args.seed}   wall: {total:.1f}s")
    for outcome, n in sorted(outcomes.items()):
        print(f"  {outcome:<36} {n:>5}")
    if failures:
        print("failures by kind and case family:")
        for (kind, family), n in failures.most_common():
            print(f"  {n:>5}  {kind:<24} {family}")
    print("slowest cases: " + ", ".join(f"{name} {seconds:.2f}s" for seconds, name in sorted(slowest)[-5:]))


def _family(name: str) -> str:
    """``0042-alias-bomb-3x9-top`` → ``alias-bomb``."""
    return "-".join(name.split("-")[1:3])


if __name__ == "__main__":
    main()
