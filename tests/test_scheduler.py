"""The scheduler on a fake clock: spread, retries, confirmation, restarts, reloads, limits."""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Literal

import pytest

from monitord.run.checkstate import CheckState
from monitord.config import CheckSpec
from monitord.edge.metrics import Metrics
from monitord.shared.results import Outcome, ProbeError, Reason, Status
from monitord.run.scheduler import Scheduler, initial_due, next_slot, phase
from monitord.records.state import SQLiteStore, StoredCheck
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
def env(tmp_path):
    clock = FakeClock()
    script = Script()
    script.clock = clock
    store = SQLiteStore(tmp_path / "state.db")
    metrics = Metrics()

    def make(max_concurrency=100):
        return Scheduler(clock=clock, store=store, metrics=metrics, ctx=ProbeContext(), max_concurrency=max_concurrency)

    yield clock, script, store, metrics, make
    store.close()


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
    scheduler.load([s])
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
    scheduler.load([s])
    task = await start(scheduler)
    first_due = scheduler.due_times()[s.id]
    await clock.advance(first_due - clock.time() + 121)
    times = [t - first_due for _, t in script.calls]
    assert times == [0, 60, 120]  # retried at retry_interval while soft
    assert scheduler.state_of(s.id).hard and scheduler.state_of(s.id).status is Status.CRITICAL
    [incident] = store.incidents(open_only=True)
    assert (incident.host, incident.check, incident.detected_at) == ("web1", "fake", first_due)
    # hard: back to the normal interval, at the check's phase
    assert scheduler.due_times()[s.id] == next_slot(first_due + 120, 600, phase(s.id, 600))
    script.failing.clear()
    await clock.advance(600)
    await stop(task)
    assert store.incidents(open_only=True) == []
    events = [(e.event, e.reason) for e in store.journal()]
    assert events == [("detected", "refused"), ("confirmed", "refused"), ("recovered", None)]
    assert metrics.check("web1", "fake", "fake").state == 0
    assert metrics.incidents_open._value.get() == 0


async def test_logs_transitions_only(env, caplog):
    clock, script, store, metrics, make = env
    scheduler = make()
    script.failing.add("web1")
    scheduler.load([spec(script, "web1", attempts=2, retry=60, interval=300)])
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
    scheduler.load(specs)
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
    scheduler.load(specs, stored)
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
    scheduler.load([s], {s.id: StoredCheck(soft, None)})
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
    scheduler.load([a, b, c])
    task = await start(scheduler)
    await clock.advance(600)
    assert len(store.incidents(open_only=True)) == 1
    due_b = scheduler.due_times()["b/fake"]
    b_faster = spec(script, "b", interval=120)
    scheduler.load([b_faster, c])
    await stop(task)
    dues = scheduler.due_times()
    assert set(dues) == {"b/fake", "c/fake"}
    assert dues["b/fake"] != due_b and dues["b/fake"] - clock.time() <= 120
    assert store.incidents(open_only=True) == []
    assert store.journal()[-1].event == "withdrawn"
    assert 'host="a"' not in metrics.exposition().decode()


async def test_lateness_is_observed(env):
    clock, script, store, metrics, make = env
    scheduler = make()
    scheduler.load([spec(script, f"h{i}") for i in range(5)])
    task = await start(scheduler)
    await clock.advance(600)
    await stop(task)
    text = metrics.exposition().decode()
    assert 'monitord_scheduler_lateness_seconds_count{kind="fake"} 5.0' in text
    assert "monitord_probe_value" not in text  # per-host detail only
    host = metrics.exposition(hosts={"h0"}).decode()
    assert 'monitord_probe_value{check="fake",host="h0",kind="fake",name="answer"} 42.0' in host
    assert 'host="h1"' not in host and "monitord_scheduler_lateness" not in host
