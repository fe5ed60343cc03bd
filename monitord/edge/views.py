"""What the read API and the CLI show: hosts, incidents and maintenance windows as JSON-ready
dicts, read from the config and the state store (which the daemon writes before it acts), so
the running daemon's API and the CLI without a daemon show the same thing. Only the checks'
next run times come from the running daemon's scheduler (``due``)."""

from __future__ import annotations

from typing import Mapping

from monitord.config import CheckSpec, Config
from monitord.escalation.engine import state_from_dict
from monitord.escalation.ladder import HostState
from monitord.records.store import Incident, JournalEntry, Maintenance, Store, StoredCheck

ACTION_EVENTS = ("decided", "outcome", "blocked")
"""Journal events that say what the ladder did, or was stopped from doing, about an incident."""


async def host_states(store: Store) -> dict[str, HostState]:
    """Every host's stored escalation state."""
    return await store.checks.escalations(state_from_dict)


async def hosts(config: Config, store: Store, now: float, due: Mapping[str, float] | None = None,
                names: list[str] | None = None) -> list[dict]:
    """The views of ``names`` (default: every host, in config order), each as :func:`host` shows
    it; the store's check states, escalations, quarantines and maintenance windows are read once
    for all of them, so the whole fleet costs one pass, not a pass per host."""
    names = list(config.hosts) if names is None else names
    stored, states = await store.checks.states(), await host_states(store)
    quarantined = await store.control.quarantined()
    covering: dict[str, list[str]] = {}
    for w in await maintenance(config, store):
        if w["active"](now):
            for h in w["hosts"]:
                covering.setdefault(h, []).append(w["id"])
    wanted = set(names)
    specs: dict[str, list[CheckSpec]] = {name: [] for name in names}
    for spec in config.checks():
        if spec.host in wanted:
            specs[spec.host].append(spec)
    return [_host(config, name, specs[name], stored, states.get(name, HostState()), quarantined.get(name),
                  covering.get(name, []), due or {}) for name in names]


async def host(config: Config, store: Store, name: str, now: float, due: Mapping[str, float] | None = None) -> dict:
    """One host: its checks with state, last result and next run; its ladder; maintenance; quarantine."""
    return (await hosts(config, store, now, due, [name]))[0]


def _host(config: Config, name: str, specs: list[CheckSpec], stored: Mapping[str, StoredCheck], state: HostState,
          quarantined: tuple[float, str] | None, maintenance_ids: list[str], due: Mapping[str, float]) -> dict:
    checks = []
    for spec in specs:
        kept = stored.get(spec.id)
        check, last = (kept.state, kept.state.last_result) if kept else (None, None)
        checks.append({
            "name": spec.name, "kind": spec.params.kind,
            "state": "unknown" if check is None else ("ok" if check.level == 0 else "soft" if check.level == 1
                                                      else "hard"),
            "status": None if check is None else check.status.name.lower(),
            "summary": last.summary if last else None, "reason": str(last.reason) if last else None,
            "last_run": check.last_run or None if check else None,
            "next_run": due.get(spec.id), "incident": kept.incident_id if kept else None,
        })
    return {
        "name": name, "address": config.hosts[name].address, "groups": list(config.hosts[name].groups),
        "checks": checks,
        "escalation": {"level": state.level, "phase": str(state.phase), "ladder": state.ladder and str(state.ladder),
                       "step": state.step and str(state.step), "incident": state.incident_id,
                       "blocked": state.blocked},
        "maintenance": maintenance_ids,
        "quarantined": {"since": quarantined[0], "reason": quarantined[1]} if quarantined else None,
    }


async def incident(store: Store, item: Incident, states: Mapping[str, HostState], journal: bool = False) -> dict:
    """One incident: level, actions taken, pages and acks, SLA timers; with ``journal`` its journal."""
    state = states.get(item.host, HostState())
    entries = await store.incidents.journal(incident_id=item.id)
    view = {
        "id": item.id, "host": item.host, "check": item.check, "kind": item.kind, "summary": item.summary,
        "opened_at": item.opened_at, "detected_at": item.detected_at, "closed_at": item.closed_at,
        "open": item.closed_at is None,
        "level": max([state.level if state.incident_id == item.id else 0]
                     + [int(e.detail.get("level", 0)) for e in entries if isinstance(e.detail.get("level"), int)]),
        "actions": [entry(e) for e in entries if e.event in ACTION_EVENTS],
        "pages": [{"id": p.id, "kind": p.kind, "severity": p.severity, "summary": p.summary, "opened_at": p.opened_at,
                   "acked_at": p.acked_at, "acked_by": p.acked_by, "closed_at": p.closed_at}
                  for p in await store.outbox.pages(open_only=False, incident_id=item.id)],
        "sla": [{"name": t.name, "started_at": t.started_at, "due": t.due, "stopped_at": t.stopped_at,
                 "breached_at": t.breached_at} for t in await store.incidents.sla_timers(item.id)],
    }
    if journal:
        view["journal"] = [entry(e) for e in entries]
    return view


async def incidents(store: Store, *, state: str = "all", host_name: str | None = None) -> list[dict]:
    """Incidents, newest first: ``state`` all, open or closed; optionally of one host."""
    states = await host_states(store)
    chosen = [i for i in await store.incidents.list(open_only=state == "open")
              if (state != "closed" or i.closed_at is not None) and (host_name is None or i.host == host_name)]
    return [await incident(store, i, states) for i in sorted(chosen, key=lambda i: -i.id)]


def entry(e: JournalEntry) -> dict:
    """A journal entry as JSON."""
    return {"id": e.id, "ts": e.ts, "event": e.event, "check": e.check, "decision": e.decision, "reason": e.reason,
            "outcome": e.outcome, "detail": dict(e.detail)}


async def maintenance(config: Config, store: Store) -> list[dict]:
    """Every maintenance window (config and stored), with the hosts it covers; ``active(now)`` says
    whether it covers them now (dropped by :func:`window_json`)."""
    windows = []
    for name, w in config.maintenance.items():
        covered = [h for h in config.hosts if config.targets_of(h) & w.targets()]
        windows.append({"id": f"config:{name}", "target": ",".join(sorted(w.targets())), "hosts": covered,
                        "reason": w.reason, "starts": w.start.timestamp(), "ends": w.end.timestamp(), "created_by": None,
                        "active": w.covers})
    for w in await store.control.maintenance():
        windows.append(_stored(config, w))
    return windows


def _stored(config: Config, w: Maintenance) -> dict:
    covered = [h for h in config.hosts if w.target in config.targets_of(h)]
    return {"id": str(w.id), "target": w.target, "hosts": covered, "reason": w.reason, "starts": w.starts,
            "ends": w.ends, "created_by": w.created_by, "active": lambda now: w.starts <= now < w.ends}


def window_json(window: dict, now: float) -> dict:
    """A window from :func:`maintenance` as JSON, ``active`` evaluated at ``now``."""
    return {**window, "active": window["active"](now)}
