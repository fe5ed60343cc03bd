"""The ``plugin`` kind: perfdata parsing, exit codes, process-group kills, and real monitoring-plugins
compared with the native probes."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from monitord.shared.results import Reason, Result, Status
from monitord.run.runner import run_probe
from probes import plugin, tcp
from monitord.shared.probe import CheckParams, ProbeCall, ProbeContext, ProbeKind
from probes.plugin import PerfDatum, PluginOutput, PluginParams, parse_perfdata
from tests.peers import Peer
from tests.support import free_port


async def probe(kind: ProbeKind, params: CheckParams, timeout: float = 5.0) -> Result:
    """Run ``kind`` against 127.0.0.1 through the runner, as the scheduler would."""
    ctx = ProbeContext()
    try:
        return await run_probe(kind, ctx, ProbeCall("h1", "127.0.0.1", timeout), params, now=time.time())
    finally:
        await ctx.aclose()


def script(directory: Path, body: str, name: str = "check_script") -> str:
    """An executable /bin/sh plugin with ``body``; returns its path."""
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def need_plugin(name: str) -> str:
    """The path of a monitoring-plugins executable, or skip (apt-get install monitoring-plugins-basic)."""
    found = plugin.resolve(name)
    if found is None:
        pytest.skip(f"monitoring plugin {name} is not installed")
    return str(found)


def dead(pid: int) -> bool:
    """True when ``pid`` no longer runs (gone, or a zombie waiting for its new parent)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


def wait_dead(pid: int, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while not dead(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# ---------------------------------------------------------------------------------------
# Performance data


@pytest.mark.parametrize("text,expected", [
    ("time=0.000119s;;;0.000000;10.000000",
     [PerfDatum("time", 0.000119, "s", "", "", 0.0, 10.0)]),
    ("'/var/lib/my data'=5MB;10;20;0;100",
     [PerfDatum("/var/lib/my data", 5.0, "MB", "10", "20", 0.0, 100.0)]),
    ("'it''s'=1c 'a=b'=2%", [PerfDatum("it's", 1.0, "c"), PerfDatum("a=b", 2.0, "%")]),
    ("  rta=0.5ms;@10:20;~:30   pl=0%;20;60;; ",
     [PerfDatum("rta", 0.5, "ms", "@10:20", "~:30"), PerfDatum("pl", 0.0, "%", "20", "60")]),
    ("load1=U;5;10 users=-1.5e3", [PerfDatum("load1", None, "", "5", "10"), PerfDatum("users", -1500.0)]),
    ("junk a= 'unclosed=3 b=x ok=.5", [PerfDatum("ok", 0.5)]),
    ("", []),
])
def test_perfdata_parser(text, expected):
    assert parse_perfdata(text) == expected


def test_values_are_named_by_label_in_base_units():
    output = PluginOutput.parse("OK | time=250ms size=2KB free=3MiB load=0.7 'ratio x'=12% u=U\n")
    assert output.values() == {"time": 0.25, "size": 2048.0, "free": 3 * 1024**2, "load": 0.7, "ratio x": 12.0}


def test_long_output_with_perfdata_on_later_lines():
    output = PluginOutput.parse(
        "DISK OK - free space: / 3326 MB (56%); | /=2643MB;5948;5958;0;5968\n"
        "/ 15272 MB (77%);\n"
        "/boot 68 MB (69%); | /boot=68MB;88;93;0;98\n"
        "/home=69357MB;253404;253409;0;253414\n"
        "'/var/log'=818MB;970;975;0;980\n"
    )
    assert output.summary == "DISK OK - free space: / 3326 MB (56%);"
    assert output.long_text == "/ 15272 MB (77%);\n/boot 68 MB (69%);"
    assert [item.label for item in output.perfdata] == ["/", "/boot", "/home", "/var/log"]
    assert output.values()["/home"] == 69357 * 1024**2


def test_output_without_perfdata_or_lines():
    assert PluginOutput.parse("") == PluginOutput("", "", [])
    assert PluginOutput.parse("CRITICAL: gone\nmore\n") == PluginOutput("CRITICAL: gone", "more", [])


def test_macros_expand_and_unknown_ones_are_config_errors():
    call = ProbeCall("web1", "192.0.2.7", 10.0)
    assert plugin.expand("-H $HOSTADDRESS$", call) == "-H 192.0.2.7"
    assert plugin.expand("$HOST$/$ADDRESS$ t=$TIMEOUT$ $$5", call) == "web1/192.0.2.7 t=9 $5"
    assert plugin.expand("$TIMEOUT$", ProbeCall("h", "a", 0.5)) == "1"
    with pytest.raises(ValueError, match=r"unknown macro \$HOSTADRES\$"):
        PluginParams(command="check_tcp", args=["-H", "$HOSTADRES$"])
    with pytest.raises(ValueError, match="without arguments"):
        PluginParams(command="check_tcp ")


# ---------------------------------------------------------------------------------------
# Exit codes and failures to run


@pytest.mark.parametrize("code,status,reason", [
    (0, Status.OK, Reason.NONE),
    (1, Status.WARNING, Reason.THRESHOLD),
    (2, Status.CRITICAL, Reason.THRESHOLD),
    (3, Status.UNKNOWN, Reason.ERROR),
])
async def test_exit_codes_map_to_status(tmp_path, code, status, reason):
    path = script(tmp_path, f"echo 'SVC {status} - said so | t=5ms;1;2'\necho detail\nexit {code}\n")
    result = await probe(plugin.KIND, PluginParams(command=path))
    assert (result.status, result.reason, result.summary) == (status, reason, f"SVC {status} - said so")
    assert result.values == {"t": 0.005}


async def test_exit_code_above_3_is_unknown_with_stderr(tmp_path):
    path = script(tmp_path, "echo 'half a line'\necho 'check_x: cannot parse -w' >&2\necho second >&2\nexit 7\n")
    result = await probe(plugin.KIND, PluginParams(command=path))
    assert (result.status, result.reason) == (Status.UNKNOWN, Reason.ERROR)
    assert result.summary == "plugin check_script exited with code 7: check_x: cannot parse -w"


async def test_crash_by_signal_is_unknown(tmp_path):
    path = script(tmp_path, "echo 'about to crash' >&2\nkill -SEGV $$\n")
    result = await probe(plugin.KIND, PluginParams(command=path))
    assert (result.status, result.reason) == (Status.UNKNOWN, Reason.ERROR)
    assert result.summary == "plugin check_script killed by SIGSEGV: about to crash"


async def test_missing_not_executable_and_unrunnable_plugins_are_unknown(tmp_path):
    result = await probe(plugin.KIND, PluginParams(command="check_no_such_plugin"))
    assert (result.status, result.reason) == (Status.UNKNOWN, Reason.ERROR)
    assert result.summary == ("plugin check_no_such_plugin not found in /usr/lib/nagios/plugins, "
                              "/usr/lib/monitoring-plugins")
    result = await probe(plugin.KIND, PluginParams(command=str(tmp_path / "absent")))
    assert result.summary == f"plugin {tmp_path / 'absent'} not found"
    plain = tmp_path / "check_plain"
    plain.write_text("#!/bin/sh\necho OK\n")
    result = await probe(plugin.KIND, PluginParams(command=str(plain)))
    assert (result.status, result.summary) == (Status.UNKNOWN, f"plugin {plain} is not an executable file")
    bad = tmp_path / "check_bad_interpreter"
    bad.write_text("#!/nonexistent/interpreter\n")
    bad.chmod(0o755)
    result = await probe(plugin.KIND, PluginParams(command=str(bad)))
    assert (result.status, result.reason) == (Status.UNKNOWN, Reason.ERROR)
    assert result.summary == f"cannot run plugin {bad}: No such file or directory"


async def test_environment_is_minimal_plus_env_and_args_are_not_shell_parsed(tmp_path, monkeypatch):
    monkeypatch.setenv("MONITORD_TEST_SECRET", "hunter2")
    path = script(tmp_path, 'echo "OK secret=${MONITORD_TEST_SECRET:-unset} foo=$FOO lc=$LC_ALL args=$#:$1"\n')
    result = await probe(plugin.KIND, PluginParams(command=path, env={"FOO": "bar"}, args=["a b; rm -rf /", "$HOST$"]))
    assert result.summary == "OK secret=unset foo=bar lc=C args=2:a b; rm -rf /"


async def test_no_output_uses_stderr_then_a_placeholder(tmp_path):
    result = await probe(plugin.KIND, PluginParams(command=script(tmp_path, "echo 'only stderr' >&2\nexit 2\n")))
    assert (result.status, result.summary) == (Status.CRITICAL, "only stderr")
    result = await probe(plugin.KIND, PluginParams(command=script(tmp_path, "exit 0\n", "check_quiet")))
    assert (result.status, result.summary) == (Status.OK, "(no output from plugin)")


# ---------------------------------------------------------------------------------------
# Process groups: nothing outlives the run

FORKING_PLUGIN = """\
sleep 60 &
echo "$$ $!" > "$1"
sleep 60
echo 'OK - too late'
"""


def read_pids(path: Path, timeout: float = 5.0) -> tuple[int, int]:
    deadline = time.monotonic() + timeout
    while not path.exists() or len(path.read_text().split()) < 2:
        assert time.monotonic() < deadline, "the plugin did not start"
        time.sleep(0.01)
    parent, child = path.read_text().split()
    return int(parent), int(child)


async def test_timeout_kills_the_whole_process_group(tmp_path):
    pids = tmp_path / "pids"
    params = PluginParams(command=script(tmp_path, FORKING_PLUGIN), args=[str(pids)])
    started = time.monotonic()
    result = await probe(plugin.KIND, params, timeout=0.5)
    assert (result.status, result.reason) == (Status.CRITICAL, Reason.TIMEOUT)
    assert time.monotonic() - started < 2
    parent, child = read_pids(pids)
    assert not Path(f"/proc/{parent}").exists()  # killed and reaped: no zombie of ours
    assert wait_dead(child), "the plugin's child survived the timeout"
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_cancellation_kills_the_group_and_propagates(tmp_path):
    pids = tmp_path / "pids"
    params = PluginParams(command=script(tmp_path, FORKING_PLUGIN), args=[str(pids)])
    task = asyncio.create_task(plugin.run(ProbeContext(), ProbeCall("h1", "127.0.0.1", 30.0), params))
    parent, child = await asyncio.to_thread(read_pids, pids)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not Path(f"/proc/{parent}").exists()
    assert wait_dead(child)


@pytest.mark.parametrize("turns", range(12))
async def test_cancellation_while_the_plugin_starts_kills_it_and_does_not_wait_for_its_children(tmp_path, turns):
    """Cancelled ``turns`` loop turns after it began (the plugin not yet started, started with
    its pipes still connecting, or running): the run ends at once, never waiting for the child
    that holds the pipes (asyncio's own clean-up would, for its 60 s)."""
    pids = tmp_path / "pids"
    task = asyncio.create_task(plugin.execute([script(tmp_path, FORKING_PLUGIN), str(pids)], {}))
    for _ in range(turns):
        await asyncio.sleep(0)
    task.cancel()
    async with asyncio.timeout(30):  # a hang detector, far below the children's 60 s
        with pytest.raises(asyncio.CancelledError):
            await task
    if pids.exists() and len(pids.read_text().split()) == 2:
        parent, child = read_pids(pids)
        assert not Path(f"/proc/{parent}").exists()
        assert wait_dead(child)


@pytest.mark.parametrize("redirect", [">/dev/null 2>&1", ""], ids=["detached", "holding-stdout"])
async def test_children_left_behind_by_a_finished_plugin_are_killed(tmp_path, redirect):
    """A leftover child is killed, and one that still holds stdout does not make the run time out."""
    pids = tmp_path / "pids"
    body = f'sleep 60 {redirect} &\necho "$$ $!" > "$1"\necho "OK - left a child | n=1"\n'
    started = time.monotonic()
    result = await probe(plugin.KIND, PluginParams(command=script(tmp_path, body), args=[str(pids)]), timeout=5.0)
    assert (result.status, result.summary, result.values) == (Status.OK, "OK - left a child", {"n": 1.0})
    assert time.monotonic() - started < 2
    assert wait_dead(read_pids(pids)[1])


async def test_a_child_that_left_the_session_delays_the_result_only_briefly(tmp_path):
    """A child in a session of its own is out of reach; holding stdout it delays the run by DRAIN_SECONDS."""
    pid_file = tmp_path / "escaped"
    body = ("setsid sh -c 'echo $$ > \"$0\"; exec sleep 60' \"$1\" &\n"
            'while [ ! -s "$1" ]; do sleep 0.01; done\n'
            'echo "OK - escaped"\n')
    started = time.monotonic()
    result = await probe(plugin.KIND, PluginParams(command=script(tmp_path, body), args=[str(pid_file)]), timeout=5.0)
    elapsed = time.monotonic() - started
    escaped = int(pid_file.read_text())
    try:
        assert (result.status, result.summary) == (Status.OK, "OK - escaped")
        assert plugin.DRAIN_SECONDS <= elapsed < plugin.DRAIN_SECONDS + 1
        assert not dead(escaped)
    finally:
        os.kill(escaped, signal.SIGKILL)


async def test_a_plugin_that_survives_sigkill_is_not_started_again_until_it_dies(tmp_path, monkeypatch):
    """A plugin in uninterruptible sleep (dead NFS mount) outlives SIGKILL: no second copy piles up."""
    path = script(tmp_path, "exec sleep 30\n")
    params, call = PluginParams(command=path), ProbeCall("h1", "127.0.0.1", 0.3)
    ctx = ProbeContext()
    unkillable = await ctx.resource(plugin._UNKILLABLE, plugin._new_unkillable)
    with monkeypatch.context() as patch:  # SIGKILL "does not work" and nobody waits for it
        patch.setattr(plugin, "_kill_group", lambda pid: None)
        patch.setattr(plugin, "REAP_SECONDS", 0.0)
        first = await run_probe(plugin.KIND, ctx, call, params, now=time.time())
    assert (first.status, first.reason) == (Status.CRITICAL, Reason.TIMEOUT)
    stuck = unkillable[(path,)]
    stuck.exited.clear()  # pretend it is still alive, whatever the transport's close did to it
    second = await run_probe(plugin.KIND, ctx, call, params, now=time.time())
    assert (second.status, second.reason) == (Status.UNKNOWN, Reason.ERROR)
    assert second.summary == (f"plugin check_script of an earlier run (pid {stuck.pid}) survived SIGKILL; "
                              "not starting another")
    assert wait_dead(stuck.pid)
    stuck.exited.set()  # it died at last
    third = await run_probe(plugin.KIND, ctx, call, params, now=time.time())
    assert third.reason is Reason.TIMEOUT and (path,) not in unkillable
    await ctx.aclose()


# ---------------------------------------------------------------------------------------
# Real monitoring-plugins, compared with the native probes

integration = pytest.mark.integration


@integration
async def test_check_tcp_agrees_with_the_native_tcp_probe(silent_peer: Peer):
    need_plugin("check_tcp")
    closed = free_port()
    for port, expected in ((silent_peer.port, Status.OK), (closed, Status.CRITICAL)):
        native = await probe(tcp.KIND, tcp.TcpParams(port=port))
        params = PluginParams(command="check_tcp", args=["-H", "$HOSTADDRESS$", "-p", str(port), "-t", "$TIMEOUT$"])
        checked = await probe(plugin.KIND, params)
        assert native.status is checked.status is expected, (native.summary, checked.summary)
        if expected is Status.OK:
            assert checked.summary.startswith("TCP OK")
            assert 0 <= checked.values["time"] < 5
        else:
            assert "Connection refused" in checked.summary and native.reason is Reason.REFUSED


@integration
async def test_check_disk_on_root_agrees_with_statvfs():
    need_plugin("check_disk")
    fs = os.statvfs("/")
    total = fs.f_blocks * fs.f_frsize
    used = (fs.f_blocks - fs.f_bfree) * fs.f_frsize
    free_percent = 100 * fs.f_bavail / (fs.f_bavail + fs.f_blocks - fs.f_bfree)
    if not 10 < free_percent < 90:
        pytest.skip(f"/ is {free_percent:.0f}% free: too close to the thresholds chosen here")
    # check_disk -c N%: critical when less than N% is free
    for critical_free, expected in ((free_percent - 8, Status.OK), (free_percent + 8, Status.CRITICAL)):
        params = PluginParams(command="check_disk", args=["-c", f"{critical_free:.0f}%", "-p", "/"])
        result = await probe(plugin.KIND, params)
        assert result.status is expected, result.summary
        assert result.summary.startswith(f"DISK {expected.name}")
        assert abs(result.values["/"] - used) < 0.05 * total
