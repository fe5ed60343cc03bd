"""The scheduler on a fake clock: spread, retries, confirmation, restarts, reloads, limits."""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest

from monitord.run.checkstate import CheckState
from monitord.config import CheckSpec
from monitord.edge.metrics import Metrics
from monitord.shared.results import Outcome, ProbeError, Reason, Status
from monitord.run.scheduler import FLUSH_EVERY, Scheduler, initial_due, next_slot, phase
from monitord.records.state import JournalEntry, SQLiteStore, StoredCheck, StoreFault
from monitord.shared.probe import CheckParams, ProbeContext, ProbeKind
from tests.fakeclock import FakeClock


class FakeParams(CheckParams):
    kind: Literal["fake"] = "fake"


class Script:
    """A probe kind whose answers the test sets per host; records every call."""

    def __init__(self) -> None:
        self.failing: set[str] = set()
        self.hung: set[str] = set()
        self.calls: list[tuple[str, float]] = []
        self.clock: FakeClock | None = None
        self.kind = ProbeKind("fake", FakeParams, self.run, 600.0, "scripted")

    async def run(self, ctx, call, params) -> Outcome:
        self.calls.append((call.host, self.clock.time()))
        if call.host in self.hung:
            await asyncio.Event().wait()
        if call.host in self.failing:
            raise ProbeError(Reason.REFUSED, "connection refused")
        return Outcome(Status.OK, "fine", values={"answer": 42.0})


def spec(script: Script, host: str, interval=600.0, retry=60.0, attempts=3, timeout=10.0) -> CheckSpec:
    return CheckSpec(id=f"{host}/fake", host=host, name="fake", address="127.0.0.1", kind=script.kind,
                     params=FakeParams(), interval=interval, retry_interval=retry, max_attempts=attempts,
                     timeout=timeout)


@pytest.fixture
async def env(tmp_path):
    clock = FakeClock()
    script = Script()
    script.clock = clock
    store = SQLiteStore(tmp_path / "state.db")
    metrics = Metrics()

    def make(max_concurrency=100):
        return Scheduler(clock=clock, store=store, metrics=metrics, ctx=ProbeContext(), max_concurrency=max_concurrency)

    yield clock, script, store, metrics, make
    await store.close()


async def start(scheduler: Scheduler) -> asyncio.Task:
    task = asyncio.create_task(scheduler.run())
    await asyncio.sleep(0)
    return task


async def stop(task: asyncio.Task) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert leftover == []


def test_next_slot_and_phase():
    assert next_slot(1000.0, 600.0, 100.0) == 1300.0
    assert next_slot(1300.0, 600.0, 100.0) == 1900.0  # strictly after
    assert 0 <= phase("web1/ping", 600) < 600
    assert phase("web1/ping", 600) == phase("web1/ping", 600)
    assert phase("web1/ping", 600) != phase("web2/ping", 600)


def test_first_runs_spread_over_the_interval(env):
    clock, script, *_ = env
    now = clock.time()
    specs = [spec(script, f"h{i}") for i in range(10_000)]
    dues = [initial_due(s, CheckState(), now) for s in specs]
    assert all(now < d <= now + 600 for d in dues)
    per_second = collections.Counter(int(d - now) for d in dues)
    # 10,000 checks over 600 s average 16.7 a second; never a thundering herd
    assert max(per_second.values()) < 45
    assert len(per_second) == 600


async def test_runs_every_interval_at_its_phase(env):
    clock, script, store, metrics, make = env
    scheduler = make()
    s = spec(script, "web1")
    await scheduler.load([s])
    task = await start(scheduler)
    await clock.advance(1800)
    await stop(task)
    times = [t for _, t in script.calls]
    assert len(times) == 3
    assert [t2 - t1 for t1, t2 in zip(times, times[1:])] == [600.0, 600.0]
    assert all(((t - phase(s.id, 600)) % 600) == pytest.approx(0, abs=1e-6) for t in times)


async def test_failure_confirmed_after_retries_opens_incident_and_recovery_closes_it(env):
    clock, script, store, metrics, make = env
    scheduler = make()
    s = spec(script, "web1", attempts=3, retry=60)
    script.failing.add("web1")
    await scheduler.load([s])
    task = await start(scheduler)
    first_due = scheduler.due_times()[s.id]
    await clock.advance(first_due - clock.time() + 121)
    times = [t - first_due for _, t in script.calls]
    assert times == [0, 60, 120]  # retried at retry_interval while soft
    assert scheduler.state_of(s.id).hard and scheduler.state_of(s.id).status is Status.CRITICAL
    [incident] = await store.incidents.list(open_only=True)
    assert (incident.host, incident.check, incident.detected_at) == ("web1", "fake", first_due)
    # hard: back to the normal interval, at the check's phase
    assert scheduler.due_times()[s.id] == next_slot(first_due + 120, 600, phase(s.id, 600))
    script.failing.clear()
    await clock.advance(600)
    await stop(task)
    assert await store.incidents.list(open_only=True) == []
    events = [(e.event, e.reason) for e in await store.incidents.journal()]
    assert events == [("detected", "refused"), ("confirmed", "refused"), ("recovered", None)]
    assert metrics.check("web1", "fake", "fake").state == 0
    assert metrics.incidents_open._value.get() == 0


async def test_logs_transitions_only(env, caplog):
    clock, script, store, metrics, make = env
    scheduler = make()
    script.failing.add("web1")
    await scheduler.load([spec(script, "web1", attempts=2, retry=60, interval=300)])
    task = await start(scheduler)
    with caplog.at_level(logging.DEBUG, logger="monitord.run.scheduler"):
        await clock.advance(3000)
    await stop(task)
    assert len(script.calls) >= 10
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert "problem detected" in messages[0] and "problem confirmed" in messages[1]


async def test_hung_probe_does_not_delay_others_and_concurrency_is_limited(env):
    clock, script, store, metrics, make = env
    scheduler = make(max_concurrency=3)
    script.hung.update({"h0", "h1"})
    specs = [spec(script, f"h{i}", interval=60, timeout=1e6) for i in range(6)]
    await scheduler.load(specs)
    task = await start(scheduler)
    await clock.advance(60)
    # h0 and h1 hang (their timeout is far away); the others still run, within the limit
    assert metrics.checks_running._value.get() == 2
    ran = {host for host, _ in script.calls}
    assert ran == {f"h{i}" for i in range(6)}
    await clock.advance(600)
    assert sum(1 for host, _ in script.calls if host == "h5") == 11
    await stop(task)  # cancels the hung runs; nothing leaks
    assert metrics.checks_running._value.get() == 0


async def test_restart_resumes_at_slots_without_a_burst(env):
    clock, script, store, metrics, make = env
    specs = [spec(script, f"h{i}", interval=600) for i in range(300)]
    long_ago = clock.time() - 7200
    stored = {s.id: StoredCheck(CheckState(last_run=long_ago), None) for s in specs}
    scheduler = make()
    await scheduler.load(specs, stored)
    task = await start(scheduler)
    await clock.advance(10)
    await stop(task)
    # every check was overdue by two hours, yet only those whose slot fell in these 10 s ran
    expected = {s.host for s in specs if next_slot(clock.time() - 10, 600, phase(s.id, 600)) <= clock.time()}
    assert {host for host, _ in script.calls} == expected
    assert len(expected) < 15


async def test_restart_in_soft_state_keeps_retrying(env):
    clock, script, store, metrics, make = env
    s = spec(script, "web1", retry=60)
    now = clock.time()
    soft = CheckState(status=Status.CRITICAL, hard=False, attempt=2, last_run=now - 20, problem_since=now - 80)
    scheduler = make()
    await scheduler.load([s], {s.id: StoredCheck(soft, None)})
    assert scheduler.due_times()[s.id] == now + 40
    script.failing.add("web1")
    task = await start(scheduler)
    await clock.advance(41)
    await stop(task)
    state = scheduler.state_of(s.id)
    assert (state.hard, state.attempt) == (True, 3)  # the third attempt confirmed it


async def test_reload_keeps_unchanged_reschedules_changed_and_withdraws_removed(env):
    clock, script, store, metrics, make = env
    scheduler = make()
    a, b, c = spec(script, "a", attempts=1), spec(script, "b"), spec(script, "c")
    script.failing.add("a")
    await scheduler.load([a, b, c])
    task = await start(scheduler)
    await clock.advance(600)
    assert len(await store.incidents.list(open_only=True)) == 1
    due_b = scheduler.due_times()["b/fake"]
    b_faster = spec(script, "b", interval=120)
    await scheduler.load([b_faster, c])
    await stop(task)
    dues = scheduler.due_times()
    assert set(dues) == {"b/fake", "c/fake"}
    assert dues["b/fake"] != due_b and dues["b/fake"] - clock.time() <= 120
    assert await store.incidents.list(open_only=True) == []
    assert (await store.incidents.journal())[-1].event == "withdrawn"
    assert 'host="a"' not in metrics.exposition().decode()


async def test_lateness_is_observed(env):
    clock, script, store, metrics, make = env
    scheduler = make()
    await scheduler.load([spec(script, f"h{i}") for i in range(5)])
    task = await start(scheduler)
    await clock.advance(600)
    await stop(task)
    text = metrics.exposition().decode()
    assert 'monitord_scheduler_lateness_seconds_count{kind="fake"} 5.0' in text
    assert "monitord_probe_value" not in text  # per-host detail only
    host = metrics.exposition(hosts={"h0"}).decode()
    assert 'monitord_probe_value{check="fake",host="h0",kind="fake",name="answer"} 42.0' in host
    assert 'host="h1"' not in host and "monitord_scheduler_lateness" not in host


async def test_checks_whose_first_slot_passed_during_start_up_resume_at_their_next_slot(env):
    """Start-up work between loading the checks and dispatching (seconds at fleet scale) must not
    leave the checks whose slot fell meanwhile all due at once, late: they run at their next
    slot, like after a restart; a soft check keeps retrying; every run is on time."""
    clock, script, store, metrics, make = env
    scheduler = make()
    specs = [spec(script, f"h{i}") for i in range(40)]
    soft = CheckState(status=Status.CRITICAL, hard=False, attempt=1, last_run=clock.time() - 30)
    await scheduler.load(specs, {specs[0].id: StoredCheck(soft, None)})
    await clock.advance(150)  # loading, settling memory, opening the listener...
    started = clock.time()
    passed = {s.id for s in specs if scheduler.due_times()[s.id] < started}
    assert len(passed) > 5 and specs[0].id in passed  # the case under test: a quarter of the slots passed
    task = await start(scheduler)
    assert all(due >= started for due in scheduler.due_times().values())
    assert all(scheduler.due_times()[s.id] == next_slot(started, 600, phase(s.id, 600)) for s in specs[1:])
    assert scheduler.due_times()[specs[0].id] == started + phase(specs[0].id, 60)  # retrying: within its retry
    await clock.advance(600)
    await stop(task)
    ran = [host for host, _ in script.calls]
    assert sorted(h for h in ran if h != "h0") == sorted(s.host for s in specs[1:])  # each once, none skipped
    assert ran.count("h0") == 2  # the retry (it answers OK), then its normal slot
    assert 'monitord_scheduler_lateness_seconds_sum{kind="fake"} 0.0' in metrics.exposition().decode()


def committed(path) -> dict[str, tuple[float, int, int]]:
    """What another process (or a restart after kill -9) finds: check id -> (last_run, attempt, hard)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {c: (r, a, h) for c, r, a, h in db.execute("SELECT check_id, last_run, attempt, hard FROM check_state")}
    finally:
        db.close()


async def test_plain_results_are_written_once_per_tick_journaled_ones_at_once(env):
    clock, script, store, metrics, make = env
    scheduler = make()
    quiet = [spec(script, f"ok{i}") for i in range(3)]
    failing = spec(script, "bad")
    script.failing.add("bad")
    await scheduler.load([*quiet, failing])
    task = await start(scheduler)
    assert min(scheduler.due_times().values()) > clock.time() + FLUSH_EVERY  # no scheduled run in this test
    for s in [*quiet, failing]:
        await scheduler.run_now(s.id)
    now = clock.time()
    assert committed(store.path) == {failing.id: (now, 1, 0)}  # detected: journaled, its state with it
    assert [e.event for e in await store.incidents.journal()] == ["detected"]
    assert {c: s.state.last_run for c, s in (await store.checks.states()).items()} == dict.fromkeys(
        [s.id for s in [*quiet, failing]], now)  # staged states are read at once
    await clock.advance(FLUSH_EVERY / 2)
    assert set(committed(store.path)) == {failing.id}
    await clock.advance(FLUSH_EVERY / 2)
    assert {c: v[0] for c, v in committed(store.path).items()} == dict.fromkeys(
        [s.id for s in [*quiet, failing]], now)  # the tick's one transaction
    assert store.checks.staged() == 0
    await stop(task)


async def test_stopping_writes_the_staged_states(env):
    clock, script, store, metrics, make = env
    scheduler = make()
    s = spec(script, "web1", interval=60)
    await scheduler.load([s])
    task = await start(scheduler)
    await clock.advance(scheduler.due_times()[s.id] - clock.time())
    assert store.checks.staged() == 1 and committed(store.path) == {}
    await stop(task)
    assert committed(store.path)[s.id][0] == script.calls[0][1]


async def test_a_result_recorded_while_the_store_is_unwritable_leaves_the_state_standing(env):
    clock, script, store, metrics, make = env
    scheduler = make()
    s = spec(script, "web1", interval=60)
    await scheduler.load([s])
    store._db.execute("PRAGMA query_only=1")
    await scheduler.flush()  # nothing staged: nothing fails
    with pytest.raises(StoreFault):
        await store.incidents.append(JournalEntry(ts=0.0, event="note"))
    with pytest.raises(StoreFault):
        await scheduler.run_now(s.id)
    assert scheduler.state_of(s.id) == CheckState() and store.checks.staged() == 0
    store._db.execute("PRAGMA query_only=0")
    assert await store.probe() is None
    await scheduler.run_now(s.id)
    assert scheduler.state_of(s.id).last_run == clock.time() and store.checks.staged() == 1


CRASH_CHILD = """
import asyncio, json, sys
from monitord.edge.metrics import Metrics
from monitord.records.state import SQLiteStore
from monitord.run.scheduler import Scheduler
from monitord.shared.probe import ProbeContext
from tests.fakeclock import FakeClock
from tests.test_scheduler import Script, spec

async def main(path):
    clock, script = FakeClock(), Script()
    script.clock = clock
    store = SQLiteStore(path)
    scheduler = Scheduler(clock=clock, store=store, metrics=Metrics(), ctx=ProbeContext(), max_concurrency=10)
    specs = [spec(script, "a", interval=60, retry=60, attempts=2), spec(script, "b", interval=60, retry=60, attempts=2),
             spec(script, "c", interval=60, retry=60, attempts=2)]
    await scheduler.load(specs)
    script.failing.add("c")
    ticks = []
    for tick in range(2):
        ticks.append(clock.time())
        for s in specs:
            await scheduler.run_now(s.id)
        if tick == 0:
            await scheduler.flush()  # the end of tick 1; tick 2 ends never: kill -9 first
        await clock.advance(60)
    print(json.dumps({"ticks": ticks, "incident": scheduler.incident_of("c/fake")}), flush=True)
    await asyncio.Event().wait()

asyncio.run(main(sys.argv[1]))
"""


async def test_kill_9_loses_at_most_the_ticks_check_states_never_a_journal_entry(env, tmp_path):
    """A daemon killed in the middle of a tick: the plain results of that tick are lost (the
    check states are one tick stale), the confirmation journaled in it is not, and a restart
    from what is left carries on correctly."""
    clock, script, store, metrics, make = env
    path = tmp_path / "crashed.db"
    root = Path(__file__).resolve().parent.parent
    child = subprocess.Popen([sys.executable, "-c", CRASH_CHILD, str(path)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    line = child.stdout.readline()
    child.kill()  # SIGKILL: nothing is flushed, nothing is closed
    _, err = child.communicate(timeout=60)
    assert line, err
    facts = json.loads(line)
    (t1, t2), incident = facts["ticks"], facts["incident"]
    assert child.returncode == -signal.SIGKILL and incident is not None
    seen = committed(path)
    assert seen["a/fake"] == seen["b/fake"] == (t1, 1, 1)  # one tick stale: tick 2's OK results are lost
    assert seen["c/fake"] == (t2, 2, 1)  # confirmed in tick 2: written with its journal entry
    crashed = SQLiteStore(path)
    try:
        journal = [(e.event, e.check, e.incident_id) for e in await crashed.incidents.journal()]
        assert journal == [("detected", "fake", None), ("confirmed", "fake", incident)]
        assert [(i.id, i.host) for i in await crashed.incidents.list(open_only=True)] == [(incident, "c")]
        # the restart: state as stored, the next runs at their slots, and c's recovery closes its incident
        clock._now = t2 + 90
        restarted = Scheduler(clock=clock, store=crashed, metrics=Metrics(), ctx=ProbeContext(), max_concurrency=10)
        specs = [spec(script, h, interval=60, retry=60, attempts=2) for h in "abc"]
        await restarted.load(specs, await crashed.checks.states())
        assert restarted.state_of("a/fake").last_run == t1 and restarted.incident_of("c/fake") == incident
        assert all(due > clock.time() for due in restarted.due_times().values())  # no burst of overdue runs
        await restarted.run_now("c/fake")
        assert await crashed.incidents.list(open_only=True) == []
        assert [e.event for e in await crashed.incidents.journal()][-1] == "recovered"
    finally:
        await crashed.close()
