"""Power a virtual machine through its hypervisor with libvirt (the VM has no BMC or outlet).

fence_virsh / fence_xvm are the anchors: the domain's power is whether it is *active*
(running, paused, being shut down: ON; shut off or crashed: OFF); ON is ``create()``, OFF
is ``destroy()`` (pulling the plug), RESET is ``reset()`` (the virtual reset button: the
guest reboots at once, the domain stays active). With ``shutdown_timeout`` set, OFF first
asks the guest to shut down (ACPI) and only forces it off when it is not off by that deadline.
:func:`monitord.shared.power.power_change` adds the read → skip → act → poll-verify → retry
discipline, exactly as for IPMI and PDU outlets.

The binding is libvirt-python from PyPI (``pip install monitord[vm]``; it builds against
Debian's ``libvirt-dev`` with ``pkg-config`` and ``gcc``), chosen over Debian's
``python3-libvirt`` because that one lives in the system Python only and the daemon runs in
its own virtualenv. Without the binding every call fails with a clear ``ERROR``, so the
ladder falls back to the next driver or pages.

libvirt blocks, so each call runs in a worker thread bounded by ``timeout``; a call that
outlives it is a ``TIMEOUT`` (a command may have been carried out: ``maybe_done``). One
driver holds one connection from ``__aenter__`` to ``__aexit__`` (a whole power change).
Secrets: the password is answered through libvirt's auth callback, never put into the URI,
the journal or an error; the SSH key file is passed as ``keyfile=`` (a path, not a secret).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable
from urllib.parse import quote

from monitord.shared.results import Reason
from monitord.shared.power import ActionError, PowerAction, PowerState
from monitord.shared.access import VmConfig


_EXECUTOR = ThreadPoolExecutor(max_workers=8, thread_name_prefix="monitord-libvirt")
SHUTDOWN_POLL = 1.0


def _libvirt() -> Any:
    try:
        import libvirt
    except ImportError:
        raise ActionError(Reason.ERROR, "the libvirt Python binding is not installed (pip install monitord[vm])") from None
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors are raised, not printed
    return libvirt


def _error(exc: Exception, where: str) -> ActionError:
    """A typed :class:`ActionError` for what libvirt raised."""
    libvirt = _libvirt()
    if not isinstance(exc, libvirt.libvirtError):
        return ActionError(Reason.ERROR, f"{where}: {type(exc).__name__}: {exc}")
    code, message = exc.get_error_code(), (exc.get_error_message() or str(exc)).strip()
    if code == libvirt.VIR_ERR_NO_DOMAIN:
        reason = Reason.ERROR
    elif code in (libvirt.VIR_ERR_AUTH_FAILED, libvirt.VIR_ERR_AUTH_CANCELLED, libvirt.VIR_ERR_ACCESS_DENIED):
        reason = Reason.AUTH
    elif code == libvirt.VIR_ERR_OPERATION_TIMEOUT:
        reason = Reason.TIMEOUT
    elif code == libvirt.VIR_ERR_SYSTEM_ERROR and exc.get_int1() == errno.ECONNREFUSED:
        reason = Reason.REFUSED
    elif code in (libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_RPC):
        reason = Reason.UNREACHABLE
    else:
        reason = Reason.PROTOCOL
    return ActionError(reason, f"{where}: {message}")


class VmDriver:
    """Power of one libvirt domain; use as ``async with VmDriver(config) as driver``."""

    name = "vm"

    def __init__(self, config: "VmConfig") -> None:
        self.config = config
        self._conn: Any = None
        self._domain: Any = None

    @classmethod
    def from_config(cls, config: "VmConfig") -> "VmDriver":
        """A driver for a host's ``vm:`` block."""
        return cls(config)

    @property
    def _where(self) -> str:
        return f"vm {self.config.domain} on {self.config.uri}"

    def _uri(self) -> str:
        if self.config.key_file is None:
            return self.config.uri
        sep = "&" if "?" in self.config.uri else "?"
        return f"{self.config.uri}{sep}keyfile={quote(str(self.config.key_file), safe='/')}"

    async def _call(self, work: Callable[[], Any], what: str, maybe_done: bool = False) -> Any:
        """Run blocking ``work`` in the libvirt pool within the configured timeout."""
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(loop.run_in_executor(_EXECUTOR, work), self.config.timeout)
        except TimeoutError:
            raise ActionError(Reason.TIMEOUT, f"{self._where}: {what}: no answer within {self.config.timeout:g}s",
                              maybe_done=maybe_done) from None
        except ActionError:
            raise
        except Exception as exc:  # noqa: BLE001 - libvirtError and friends become typed failures
            raise _error(exc, f"{self._where}: {what}") from None

    def _open(self, password: str | None) -> Any:
        libvirt = _libvirt()
        c = self.config

        def answer(credentials: list, _data: Any) -> int:
            for cred in credentials:
                if cred[0] == libvirt.VIR_CRED_AUTHNAME and c.username is not None:
                    cred[4] = c.username
                elif cred[0] == libvirt.VIR_CRED_PASSPHRASE and password is not None:
                    cred[4] = password
                else:
                    return -1  # asked for something we do not have: fail the login, do not hang
            return 0

        auth = [[libvirt.VIR_CRED_AUTHNAME, libvirt.VIR_CRED_PASSPHRASE], answer, None]
        conn = libvirt.openAuth(self._uri(), auth, 0)
        try:
            if len(c.domain) == 36 and c.domain.count("-") == 4:
                try:
                    return conn, conn.lookupByUUIDString(c.domain)
                except libvirt.libvirtError:
                    pass  # a domain may be named like a UUID
            return conn, conn.lookupByName(c.domain)
        except BaseException:
            conn.close()
            raise

    async def __aenter__(self) -> "VmDriver":
        try:
            password = self.config.password.read() if self.config.password is not None else None
        except LookupError as exc:
            raise ActionError(Reason.ERROR, f"{self._where}: password: {exc}") from None
        self._conn, self._domain = await self._call(lambda: self._open(password), "connect")
        return self

    async def __aexit__(self, *exc: object) -> None:
        conn, self._conn, self._domain = self._conn, None, None
        if conn is not None:
            with contextlib.suppress(ActionError):  # a failed close must not hide what the action did
                await self._call(conn.close, "close")

    async def status(self) -> PowerState:
        """ON while the domain is active (running, paused, shutting down), else OFF."""
        active = await self._call(self._domain.isActive, "read state")
        return PowerState.ON if active else PowerState.OFF

    async def command(self, action: PowerAction) -> None:
        """Send one ON (create), OFF (destroy, or shutdown first) or RESET (reset) command."""
        if action is PowerAction.OFF and self.config.shutdown_timeout is not None:
            await self.shutdown(self.config.shutdown_timeout)
            return
        work = {PowerAction.ON: self._domain.create, PowerAction.OFF: self._domain.destroy,
                PowerAction.RESET: lambda: self._domain.reset(0)}.get(action)
        if work is None:
            raise ActionError(Reason.ERROR, f"{self._where}: cannot send {action}")
        await self._call(work, str(action), maybe_done=True)

    async def shutdown(self, deadline: float) -> bool:
        """Ask the guest to shut down; if it is still active after ``deadline`` seconds, force
        it off. Returns True if the guest went down by itself."""
        loop = asyncio.get_running_loop()
        await self._call(self._domain.shutdown, "shutdown", maybe_done=True)
        until = loop.time() + deadline
        while loop.time() < until:
            if await self.status() is PowerState.OFF:
                return True
            await asyncio.sleep(min(SHUTDOWN_POLL, max(0.0, until - loop.time())))
        if await self.status() is PowerState.OFF:
            return True
        await self._call(self._domain.destroy, "destroy after shutdown deadline", maybe_done=True)
        return False

