"""The running daemon: config, state store, scheduler, metrics listener and signals."""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import os
import signal
from pathlib import Path
from typing import Callable

from aiohttp import web

from monitord import __version__
from monitord.shared.clock import Clock, SystemClock
from monitord.config import Config, ConfigError, load_config
from monitord.records import report
from monitord.edge import sdnotify
from monitord.edge.api import Api
from monitord.edge.readapi import ReadApi
from monitord.edge.statuspage import StatusPage
from monitord.escalation.engine import Engine
from monitord.edge.listener import Listener
from monitord.paging.notify import Notifier
from monitord.run.runner import set_up_kinds
from monitord.paging.outbox import Dispatcher, Outbox
from monitord.edge.metrics import CONTENT_TYPE, Metrics
from monitord.run.scheduler import Scheduler
from monitord.records.postgres import PostgresLock
from monitord.records.state import SQLiteStore, StoreLock
from monitord.records.store import JournalEntry, StateError, Store, StoreFault
from monitord.records.stores import lock_postgres, open_store
from monitord.records.storewatch import StoreWatch
from monitord.shared.probe import ProbeContext

log = logging.getLogger(__name__)

STOP_TIMEOUT = 8.0
REPORT_METRICS_EVERY = 60.0
STALL_ALLOWANCE = 60.0
"""How late the scheduler's next check or the engine's next pass may be before the watchdog says so,
and how long it then waits before it stops pinging systemd."""


GC_THRESHOLDS = (20_000, 50, 100)
"""Young collections every 20,000 net allocations instead of 700, full ones 70x rarer: at fleet
scale the default thresholds spent a tenth of the CPU in the collector and paused the loop."""


def settle_memory() -> None:
    """After start-up (and each reload): move what exists now (config, check specs, state) out
    of the collector's reach (``gc.freeze``), collect the young generations less often, and
    return freed heap to the system. What
    an earlier settling froze is thawed first, so a replaced config's cycles are still collected."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    try:  # hand the heap freed by parsing back to the system (glibc; elsewhere a no-op)
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


class Daemon:
    """One monitord process."""

    def __init__(self, config_path: str | Path, config: Config, *, dry_run: bool = False, clock: Clock | None = None,
                 opened: tuple[Store, PostgresLock] | None = None):
        """On the SQLite store of ``daemon.state_path``, or on a store already ``opened`` with
        its lock held (:meth:`open`: PostgreSQL)."""
        self.config_path = Path(config_path)
        self.config = config
        self.dry_run = dry_run
        self.clock = clock or SystemClock()
        self.metrics = Metrics()
        self.ctx = ProbeContext(state_dir=config.daemon.state_path.parent)
        if opened:
            self.store, self.lock = opened
        else:
            self.lock = StoreLock(config.daemon.state_path)
            self.lock.acquire()  # one store, one daemon: before anything reads or migrates the store
            try:
                self.store = SQLiteStore(config.daemon.state_path)
            except StateError:
                self.lock.release()
                raise
        self.scheduler = Scheduler(
            clock=self.clock, store=self.store, metrics=self.metrics, ctx=self.ctx,
            max_concurrency=config.daemon.max_concurrency,
        )
        self.outbox = Outbox(self.store, self.clock)
        self.dispatcher = Dispatcher(self.outbox, config.paging, self.metrics)
        self.notifier = Notifier(config=config, store=self.store, outbox=self.outbox, clock=self.clock,
                                 metrics=self.metrics, dry_run=dry_run)
        self.engine = Engine(config=config, store=self.store, metrics=self.metrics, clock=self.clock, ctx=self.ctx,
                             scheduler=self.scheduler, notifier=self.notifier, dry_run=dry_run)
        self.scheduler.listener = self.engine
        self.storewatch = StoreWatch(store=self.store, clock=self.clock, metrics=self.metrics,
                                     config=lambda: self.config, pagers=lambda: self.dispatcher.pagers,
                                     recovered=self.engine.store_recovered)
        self._stopping = asyncio.Event()
        self.listener = Listener(self.metrics)
        self._reload_lock = asyncio.Lock()
        self.started_at = self.clock.time()
        self.last_reload: dict = {"at": self.started_at, "ok": True, "error": None}

    @classmethod
    async def open(cls, config_path: str | Path, config: Config, *, dry_run: bool = False) -> "Daemon":
        """A daemon on the configured store (``daemon.store``): on PostgreSQL, its advisory lock
        is taken before the store is opened or migrated, as SQLite's flock is."""
        if config.daemon.store.kind == "sqlite":
            return cls(config_path, config, dry_run=dry_run)
        lock = await lock_postgres(config.daemon)
        try:
            store = await open_store(config.daemon)
            store.lock = lock  # its probe takes the lock again after a PostgreSQL restart
            return cls(config_path, config, dry_run=dry_run, opened=(store, lock))
        except BaseException:
            lock.release()
            raise

    async def run(self) -> None:
        """Start everything, serve until SIGTERM/SIGINT, then stop cleanly."""
        try:
            await self._start_store()
        except StateError:
            await self.store.close()
            self.lock.release()
            raise
        await self._start_http()
        self.metrics.reload_successful.set(1)
        self.metrics.reload_timestamp.set(self.clock.time())
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._stopping.set)
        loop.add_signal_handler(signal.SIGINT, self._stopping.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self.reload()))
        settle_memory()  # before dispatching: a full collection pauses the loop
        scheduler_task = asyncio.create_task(self.scheduler.run(), name="scheduler")
        engine_task = asyncio.create_task(self.engine.run(), name="escalation")
        loops = [asyncio.create_task(self.dispatcher.run(), name="outbox"),
                 asyncio.create_task(self.storewatch.run(), name="store"),
                 asyncio.create_task(self.notifier.run(), name="paging"),
                 asyncio.create_task(self._report_metrics(), name="reports")]
        if interval := sdnotify.watchdog_interval():
            watched = [scheduler_task, engine_task, *loops]
            watchdog = sdnotify.Watchdog(lambda: self._stalled(watched), patience=STALL_ALLOWANCE)
            loops.append(asyncio.create_task(watchdog.run(interval), name="watchdog"))
        log.info("monitord %s running: %d checks on %d hosts, metrics on http://%s/metrics%s",
                 __version__, self.scheduler.size, len(self.config.hosts), self.config.daemon.metrics_listen,
                 " (dry run: no actions)" if self.dry_run else "")
        sdnotify.notify("READY=1", "STATUS=monitoring")
        try:
            await self._stopping.wait()
        finally:
            sdnotify.notify("STOPPING=1")
            log.info("stopping")
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            for task in [scheduler_task, engine_task, *loops]:
                task.cancel()
            await asyncio.wait({scheduler_task, engine_task, *loops}, timeout=STOP_TIMEOUT)
            await self.dispatcher.aclose()
            await self.ctx.aclose()
            await self.listener.stop()
            await self._journal("stopped", "clean shutdown")
            await self.store.close()
            self.lock.release()

    async def _start_store(self) -> None:
        """Refuse to start on a store that cannot be written (a clear error, not a crash loop
        of tracebacks); restore the checks' states and journal the start."""
        if await self.store.probe() is None:
            await self.engine.restore()
            checks = self.config.checks()  # built once: a second or more at 50,000 checks, on the loop
            await self.scheduler.load(checks, await self.store.checks.states())
            await self.store.checks.forget({spec.id for spec in checks})
            await self._journal("started", f"monitord {__version__}", dry_run=self.dry_run, checks=len(checks))
        if self.store.fault is not None:
            raise StateError(f"{self.store.fault}; then start monitord again")

    def stop(self) -> None:
        """Ask the daemon to stop (what SIGTERM does)."""
        self._stopping.set()

    async def reload(self) -> bool:
        """Re-read the config file; on any problem keep the running config whole and say why.

        The file is parsed on a worker thread, so a slow or hostile file never stalls probes.
        Reloads run one at a time, in the order the signals came.
        """
        async with self._reload_lock:
            sdnotify.reloading()
            try:
                new = await asyncio.to_thread(load_config, self.config_path)
                await self._set_up_kinds(new)
                if new.daemon != self.config.daemon:
                    log.warning("reload: changes under 'daemon:' take effect only after a restart")
                await self._apply(new.model_copy(update={"daemon": self.config.daemon}))
            except Exception as exc:
                self.metrics.reload_successful.set(0)
                reason = str(exc) if isinstance(exc, (ConfigError, PermissionError)) else ": ".join(
                    filter(None, (type(exc).__name__, str(exc))))
                lines = [line.strip() for line in reason.splitlines()]
                for line in lines:
                    log.error("reload failed, keeping the running config: %s", line)
                await self._journal("reload_failed", lines[-1])
                self.last_reload = {"at": self.clock.time(), "ok": False, "error": lines[-1]}
                return False
            finally:
                if not self._stopping.is_set():
                    sdnotify.notify("READY=1")
            self.metrics.reload_successful.set(1)
            self.metrics.reload_timestamp.set(self.clock.time())
            log.info("reloaded %s: %d checks on %d hosts", self.config_path, self.scheduler.size, len(new.hosts))
            await self._journal("reloaded", f"{self.scheduler.size} checks")
            self.last_reload = {"at": self.clock.time(), "ok": True, "error": None}
            settle_memory()
            return True

    async def _apply(self, config: Config) -> None:
        """Hand ``config`` to every part; if one refuses it, hand them all the running one again."""
        running = self.config
        try:
            await self._use(config)
        except Exception:
            await self._use(running)
            raise

    async def _use(self, config: Config) -> None:
        checks = config.checks()
        self.engine.apply_config(config)
        self.notifier.config = config
        self.dispatcher.configure(config.paging)
        await self.scheduler.load(checks)
        self.config = config

    async def _report_metrics(self) -> None:
        """Keep the incident-report gauges (due, overdue) current."""
        while True:
            await report.update_metrics(self.metrics, self.store, self.engine.calendars, self.clock.time(),
                                        self.config.paging.sla.report_due)
            await self.clock.sleep_until(self.clock.time() + REPORT_METRICS_EVERY)

    def _stalled(self, tasks: list[asyncio.Task]) -> str | None:
        """Why the daemon is not doing its job (a loop ended, the scheduler or engine is stuck), or None."""
        for task in tasks:
            if task.done():
                error = None if task.cancelled() else task.exception()
                return f"the {task.get_name()} loop ended" + (f": {error!r}" if error else "")
        now = self.clock.time()
        return self.scheduler.stalled(now, STALL_ALLOWANCE) or self.engine.stalled(now, STALL_ALLOWANCE)

    async def _set_up_kinds(self, config: Config, add_route: Callable | None = None) -> None:
        """Each probe kind's start-up setup (:attr:`ProbeKind.setup`); ``add_route`` only at the start."""
        await set_up_kinds(self.ctx, config, config.checks(), add_route=add_route, store=self.store,
                           clock=self.clock, running=lambda: self.config, metrics=self.metrics,
                           run_soon=self.scheduler.run_soon)

    async def _journal(self, what: str, reason: str, **detail: object) -> None:
        """Journal what the daemon did; if the store cannot take it, it has said so (once) already."""
        try:
            async with self.store.transaction():
                await self.store.incidents.append(JournalEntry(ts=self.clock.time(), event="daemon", decision=what, reason=reason,
                                                               detail=detail))
        except StoreFault:
            pass

    async def _start_http(self) -> None:
        """Set up the probe kinds (a kind may refuse the start, or add routes), then serve the listener."""
        app = self.listener.app
        await self._set_up_kinds(self.config, add_route=app.router.add_post)
        app.router.add_get("/metrics", self._metrics_handler)
        app.router.add_get("/-/healthy", self._healthy_handler)
        api = Api(self.store, self.clock, lambda: self.config, self.engine)
        api.install(app)
        ReadApi(api, self).install(app)
        StatusPage(api, self).install(app)
        await self.listener.start(*self.config.daemon.metrics_address)

    def status(self) -> dict:
        """The daemon's health, for ``GET /api/v1/status``."""
        now, due = self.clock.time(), self.scheduler.due_times()
        return {"version": __version__, "started_at": self.started_at, "uptime": now - self.started_at,
                "dry_run": self.dry_run, "hosts": len(self.config.hosts), "checks": len(due),
                "scheduler_lateness": max([0.0, *(now - d for d in due.values())]),
                "last_reload": self.last_reload, "store": {"ok": self.store.fault is None, "fault": self.store.fault},
                "blast_radius": {"active": self.engine.blast.active is not None, "reason": self.engine.blast.active}}

    def due(self) -> dict[str, float]:
        """When each check runs next."""
        return self.scheduler.due_times()

    async def explain(self, host: str) -> dict:
        """Why the engine is or is not acting on ``host`` (:meth:`Engine.explain`)."""
        return await self.engine.explain(host)

    async def _metrics_handler(self, request: web.Request) -> web.Response:
        """The exposition, rendered in a thread (never on the scheduler's loop); ``?host=NAME``
        (repeatable) limits it to those hosts' checks, in detail."""
        if unknown := sorted(set(request.query) - {"host"}):
            return web.json_response({"error": f"unknown query parameter {unknown[0]!r} (only host)"}, status=400)
        hosts = request.query.getall("host", None)
        if hosts is not None and (missing := [h for h in hosts if h not in self.config.hosts]):
            return web.json_response({"error": f"no host {missing[0]!r} in the configuration"}, status=404)
        body = await asyncio.to_thread(self.metrics.exposition, hosts)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def _healthy_handler(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")
