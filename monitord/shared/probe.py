"""What every probe kind provides, and what the runner hands to it."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Protocol

from pydantic import Field, model_validator

from monitord.shared.fields import Duration, SecretRef, StrictModel
from monitord.shared.results import Outcome
from monitord.shared.access import BmcConfig, SnmpConfig, SshConfig


class RestartMethod(StrictModel):
    """How the service-down ladder restarts what a check watches (over SSH)."""

    unit: str | None = Field(default=None, description="systemd unit to restart")
    status_command: str | None = Field(default=None, description="exit 0 when running (instead of systemctl is-active)")
    restart_command: str | None = Field(default=None, description="instead of systemctl restart UNIT")
    kill_command: str | None = Field(default=None, description="a process restart: stops it (exit status ignored)")
    start_command: str | None = Field(default=None, description="a process restart: starts it after kill_command")
    grace: Duration = Field(default=10.0, description="wait this long after the restart before re-probing")

    @model_validator(mode="after")
    def _something_to_run(self) -> "RestartMethod":
        if self.kill_command is not None and self.start_command is None:
            raise ValueError("kill_command needs a start_command")
        if self.start_command is not None and (self.unit is not None or self.restart_command is not None):
            raise ValueError("give either start_command (with kill_command) or unit/restart_command, not both")
        if self.unit is None and self.restart_command is None and self.start_command is None:
            raise ValueError("give unit, restart_command, or kill_command and start_command")
        return self


class CheckParams(StrictModel):
    """Settings every check has; each probe kind subclasses it with its own fields.

    Unset scheduling fields are inherited from the host, its groups and ``defaults``.
    """

    kind: str
    interval: Duration | None = None
    retry_interval: Duration | None = None
    max_attempts: int | None = Field(default=None, ge=1, le=100)
    timeout: Duration | None = None
    enabled: bool = True
    description: str = ""
    host_critical: bool = Field(default=False, description="a confirmed failure means the host is down (host ladder)")
    restart: RestartMethod | None = None

    def min_timeout(self) -> tuple[float, str]:
        """The time a run needs at least, and what takes it; the check's timeout must exceed it."""
        return 0.0, ""

    def needs(self) -> frozenset[str]:
        """Host access blocks this check needs besides its kind's :attr:`ProbeKind.needs`
        (e.g. ``ssh`` for a check whose transport is SSH)."""
        return frozenset()

    def problems(self) -> list[tuple[tuple, str]]:
        """Problems only visible after :meth:`inherit` (e.g. a setting found nowhere in the
        cascade), as (path below the check, problem); the config reports them with line numbers."""
        return []

    def heartbeat_token(self) -> SecretRef | None:
        """The token of a check that takes results posted to the heartbeat receiver; None if it takes none."""
        return None

    def unsupported_on(self, os: str) -> str | None:
        """Why this check cannot run on a host with ``os`` (linux, windows), or None."""
        return None

    def inherit(self, setting: Callable[[str], Any]) -> "CheckParams":
        """These params with unset values taken from the cascaded settings; ``setting(name)``
        is the effective value of the :class:`~monitord.config.Settings` field ``name`` for
        the check's host (built-in default included). The default inherits nothing."""
        return self


@dataclass(frozen=True, slots=True)
class ProbeCall:
    """One invocation: which host and check, at which address, within what time.

    ``ssh``, ``bmc`` and ``snmp`` are the host's access blocks, given only to kinds that
    declare them in :attr:`ProbeKind.needs` (the config refuses such a check on a host
    without them).
    """

    host: str
    address: str
    timeout: float
    check: str = ""
    ssh: "SshConfig | None" = None
    bmc: "BmcConfig | None" = None
    snmp: "SnmpConfig | None" = None


class ProbeContext:
    """Resources shared by all probes of one daemon (sockets, pools), closed on shutdown.

    ``state_dir`` is where probes keep what must survive between runs and restarts (a log
    cursor, the last SEL record seen); the daemon passes its state directory. Without one
    (one-off runs from the CLI) a temporary directory is used, removed by :meth:`aclose`, so
    a one-off run never moves the daemon's cursors.
    """

    def __init__(self, state_dir: Path | None = None) -> None:
        self._resources: dict[str, asyncio.Future] = {}
        self._stack = AsyncExitStack()
        self._state_dir = state_dir
        self._temporary: Path | None = None

    @property
    def state_dir(self) -> Path:
        """The root of kept state: the daemon's state directory, or the temporary one."""
        if self._state_dir is not None:
            return self._state_dir
        if self._temporary is None:
            self._temporary = Path(tempfile.mkdtemp(prefix="monitord-probes-"))
        return self._temporary

    def check_dir(self, kind: str, call: ProbeCall) -> Path:
        """The directory for one check's kept state, ``<state_dir>/<kind>/<host>/<check>``, created if needed."""
        path = self.state_dir / kind / call.host / (call.check or kind)
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path

    async def resource(self, key: str, factory: Callable[["ProbeContext"], Awaitable[Any]]) -> Any:
        """Return the shared resource ``key``, created once by ``factory(ctx)``.

        Concurrent first callers share one creation; a caller that times out does not
        cancel it for the others. A factory that needs cleanup registers it with :meth:`enter`.
        """
        future = self._resources.get(key)
        if future is not None and future.done() and not future.cancelled() and future.exception() is None:
            return future.result()  # made already: every run after the first takes this path
        if future is None or future.done():
            future = self._resources[key] = asyncio.ensure_future(factory(self))
        return await asyncio.shield(future)

    async def enter(self, manager: Any) -> Any:
        """Enter an async context manager that lives until :meth:`aclose`."""
        return await self._stack.enter_async_context(manager)

    async def aclose(self) -> None:
        """Close every shared resource (and remove the temporary state directory, if any)."""
        self._resources.clear()
        await self._stack.aclose()
        if self._temporary is not None:
            shutil.rmtree(self._temporary, ignore_errors=True)
            self._temporary = None


class ProbeFunc(Protocol):
    def __call__(self, ctx: ProbeContext, call: ProbeCall, params: Any) -> Awaitable[Outcome]: ...


@dataclass(frozen=True, slots=True)
class Runtime:
    """What a kind's :attr:`ProbeKind.setup` is given: at the daemon's start, after each reload,
    and before a one-off run from the CLI.

    ``settings`` is the kind's section of the config's ``daemon:`` block (an instance of its
    :attr:`ProbeKind.daemon_settings`), ``in_use`` whether a check of the kind is configured
    (for the CLI: among the checks about to run). Only the daemon's start gives the rest:
    ``add_route(path, handler)`` adds a POST route to the daemon's hardened HTTP listener,
    ``store`` keeps what the kind receives (:class:`HeartbeatStore`), ``clock`` is the daemon's
    clock and ``running()`` the running config, ``metrics`` the daemon's metrics and
    ``run_soon(check_id)`` runs a check at once, out of schedule (a passive kind that just
    received something that changes a check's verdict).
    """

    settings: Any = None
    in_use: bool = False
    add_route: Callable[[str, Callable[[Any], Awaitable[Any]]], Any] | None = None
    store: Any = None
    clock: Any = None
    running: Callable[[], Any] | None = None
    metrics: Any = None
    run_soon: Callable[[str], None] | None = None


class SetupFunc(Protocol):
    def __call__(self, ctx: ProbeContext, runtime: Runtime) -> Awaitable[None]: ...


@dataclass(frozen=True, slots=True)
class ProbeKind:
    """A registered probe kind: its name, parameter model and coroutine."""

    name: str
    params: type[CheckParams]
    run: ProbeFunc
    default_interval: float
    summary: str
    bounded: bool = True
    """Whether runs count against ``daemon.max_concurrency``; kinds that hold no socket or
    process of their own while waiting (ping shares one socket) need not."""
    needs: frozenset[str] = frozenset()
    """The host access blocks the kind uses (``ssh``, ``bmc``, ``snmp``): passed on its
    :class:`ProbeCall`, and required on the host by the config."""
    host_down: bool = False
    """A confirmed failure means the host is down (the host-down ladder, as for a check marked
    ``host_critical``), and its checks verify that a host is back after a power action (ping)."""
    threshold_notice: bool = False
    """Its threshold verdicts (a full disk, a backup gone stale) are notices to the customer,
    never a ladder; other kinds' threshold verdicts (partial packet loss) page people."""
    daemon_settings: type[StrictModel] | None = None
    """The kind's section of the config's ``daemon:`` block, named after the kind (e.g. ``daemon.ping``)."""
    setup: SetupFunc | None = None
    """Prepares shared resources at start-up and after each reload (ping's socket mode, the
    heartbeat receiver's routes): see :class:`Runtime`. Raises to refuse the start."""
