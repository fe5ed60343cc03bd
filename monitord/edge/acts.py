"""The operator's small acts on the state store, one way whoever does them: the running
daemon's API, or the CLI when no daemon answers. Each is written and journaled in one durable
transaction; an act on a host is journaled with the incident it belongs to."""

from __future__ import annotations

from monitord.config import Config
from monitord.records.store import JournalEntry, Store, incident_of_host

MAX_WINDOW = 90 * 86400.0
"""The longest maintenance window added by hand (a typo such as 3000h must not silence a host for months)."""
ANSWERS = ("granted", "denied")


async def add_window(config: Config, store: Store, target: str, start: float, length: float, reason: str,
                     by: str | None, now: float) -> int:
    """Add a maintenance window on ``target`` (``host:NAME``, ``group:NAME`` or ``tag:NAME``)
    from ``start`` for ``length`` seconds; its id. ValueError says what is wrong."""
    kind, _, name = target.partition(":")
    known = {"host": config.hosts, "group": config.groups,
             "tag": {t for h in config.hosts.values() for t in h.tags}}.get(kind)
    if known is None or name not in known:
        raise ValueError("target must be host:NAME, group:NAME or tag:NAME naming one in the running config"
                         + (f": no {kind} {name!r}" if known is not None else ""))
    if not 0 < length <= MAX_WINDOW:
        raise ValueError(f"duration must be more than 0 and at most {MAX_WINDOW / 86400:g} days")
    if not reason.strip():
        raise ValueError("reason is required")
    host = name if kind == "host" else None
    async with store.transaction(durable=True):
        window_id = await store.control.add_maintenance(target, start, start + length, reason, by)
        await store.incidents.append(JournalEntry(ts=now, event="maintenance", decision="added", host=host,
                                                  incident_id=await incident_of_host(store, host) if host else None, reason=reason,
                                                  detail={"id": window_id, "target": target, "start": start, "end": start + length,
                                          "by": by}))
    return window_id


async def remove_window(store: Store, window_id: int, now: float) -> bool:
    """Remove a window added by hand (config windows are removed in the config); whether there was one."""
    async with store.transaction(durable=True):
        if not await store.control.remove_maintenance(window_id):
            return False
        await store.incidents.append(JournalEntry(ts=now, event="maintenance", decision="removed", detail={"id": window_id}))
    return True


async def answer_approval(store: Store, host: str, answer: str, by: str | None, now: float) -> None:
    """Record the emergency contact's answer (granted or denied) for ``host``'s pending action."""
    if answer not in ANSWERS:
        raise ValueError(f"answer must be {' or '.join(ANSWERS)}")
    async with store.transaction(durable=True):
        await store.control.set_approval(host, answer, now, by)
        await store.incidents.append(JournalEntry(ts=now, event="approval", host=host, incident_id=await incident_of_host(store, host),
                                                  decision=answer, detail={"by": by}))
