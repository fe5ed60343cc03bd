"""The ping probe: its verdicts, and real ICMP through the shared pinger in network namespaces.

Namespace tests run the probe in a child Python inside the monitor namespace (see
``tests/netns.py``) and read its results as JSON. In-process tests send only to loopback.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import time
from typing import Iterator

import pytest
from pydantic import ValidationError

from monitord.shared.results import ProbeError, Reason, Result, Status
from monitord.run.runner import run_probe
from probes import ping
from monitord.shared.probe import ProbeCall, ProbeContext
from tests.netns import HOST_ADDR, HOST_ADDR6, OPEN_PING_GROUPS, NetnsPair, repo_env
from tests.support import need_binary, need_root

integration = pytest.mark.integration
MODES = pytest.mark.parametrize("mode", ["raw", "datagram"])
FAST = {"count": 2, "packet_interval": 0.05, "reply_timeout": 1.0}

# Runs in the monitor namespace: pings every target concurrently through one ProbeContext,
# as the scheduler would, and prints the results, the socket kind and what is left in flight.
CHILD = """
import asyncio, json, sys, time
from monitord.run.runner import run_probe
from probes import ping
from monitord.shared.probe import ProbeCall, ProbeContext

async def main(spec):
    ctx = ProbeContext()
    try:
        try:
            kind = await ping.configure(ctx, spec["mode"])
        except ping.PingPermissionError as exc:
            return {"error": str(exc)}
        params = ping.PingParams(**spec["params"])
        results = await asyncio.gather(*(
            run_probe(ping.KIND, ctx, ProbeCall(target, target, spec["timeout"]), params, time.time())
            for target in spec["targets"]))
        in_flight = (await ping.pingers(ctx)).in_flight
    finally:
        await ctx.aclose()
    return {"kind": kind, "in_flight": in_flight,
            "results": {t: r.to_dict() for t, r in zip(spec["targets"], results)}}

print(json.dumps(asyncio.run(main(json.loads(sys.argv[1])))))
"""


@pytest.fixture
def pair() -> Iterator[NetnsPair]:
    """A fresh monitor/host namespace pair, deleted after the test."""
    need_root()
    need_binary("ip")
    with NetnsPair() as made:
        yield made


def ping_from_mon(
    pair: NetnsPair, targets: list[str], *, mode: str = "raw", params: dict | None = None,
    timeout: float = 10.0, drop_net_raw: bool = False,
) -> dict:
    """Ping ``targets`` from the monitor namespace; the child's JSON report with Results."""
    spec = {"targets": targets, "mode": mode, "params": params or FAST, "timeout": timeout}
    argv = pair.python_argv(CHILD, json.dumps(spec), drop_net_raw=drop_net_raw)
    done = subprocess.run(argv, capture_output=True, text=True, env=repo_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    if "results" in report:
        report["results"] = {t: Result.from_dict(r) for t, r in report["results"].items()}
        assert report["in_flight"] == 0, "requests left in the pinger's table"
    return report


def only(report: dict) -> Result:
    """The single result of a one-target report."""
    (result,) = report["results"].values()
    return result


def open_ping_groups(pair: NetnsPair) -> None:
    """Allow datagram ICMP for every group, in the monitor namespace only."""
    pair.sysctl(pair.mon, "net.ipv4.ping_group_range", OPEN_PING_GROUPS)


# ---------------------------------------------------------------------------------------------
# Verdicts (no network)


def params(**changes: object) -> ping.PingParams:
    return ping.PingParams(**{"count": 4, **changes})


def test_all_replies_is_ok_with_values() -> None:
    outcome = ping.assess("h", [0.001, 0.002, 0.003, 0.002], params())
    assert outcome.status is Status.OK and outcome.reason is Reason.NONE
    assert outcome.values == pytest.approx(
        {"loss_percent": 0, "rtt_min_ms": 1, "rtt_avg_ms": 2, "rtt_max_ms": 3, "sent": 4, "received": 4}
    )


def test_partial_loss_warns_at_the_threshold() -> None:
    outcome = ping.assess("h", [0.001, None, 0.001, 0.001], params(loss_warning_percent=25))
    assert (outcome.status, outcome.reason) == (Status.WARNING, Reason.THRESHOLD)
    assert "loss 25% >= 25%" in outcome.summary
    assert ping.assess("h", [0.001, None, 0.001, 0.001], params(loss_warning_percent=30)).status is Status.OK


def test_partial_loss_critical_and_rtt_thresholds() -> None:
    lossy = ping.assess("h", [0.001, None, None, 0.001], params(loss_critical_percent=50))
    assert (lossy.status, lossy.reason) == (Status.CRITICAL, Reason.THRESHOLD)
    slow = ping.assess("h", [0.150] * 4, params(rtt_warning_ms=100, rtt_critical_ms=200))
    assert (slow.status, slow.reason) == (Status.WARNING, Reason.THRESHOLD)
    assert "rtt avg 150.000 ms >= 100 ms" in slow.summary


def test_total_loss_is_unreachable_and_says_so() -> None:
    with pytest.raises(ProbeError) as caught:
        ping.assess("10.0.0.9", [None, None, None, None], params())
    assert caught.value.reason is Reason.UNREACHABLE
    assert caught.value.summary == "no reply from 10.0.0.9 (4 sent)"
    error = ping.IcmpError(4, 3, 1, "10.0.0.1")
    with pytest.raises(ProbeError, match=r"host unreachable \(from 10.0.0.1\)"):
        ping.assess("10.0.0.9", [None, error, None, None], params())


def test_params_validation() -> None:
    assert ping.PingParams(packet_interval="500ms", reply_timeout="1s").packet_interval == 0.5
    with pytest.raises(ValidationError, match="loss_critical_percent"):
        ping.PingParams(loss_warning_percent=50, loss_critical_percent=40)
    assert ping.PingParams(count=5, packet_interval="1s", reply_timeout="2s").min_timeout()[0] == 6.0
    with pytest.raises(ValueError, match="auto, raw or datagram"):
        ping.check_permission("sudo")


def test_checksum_matches_a_known_packet() -> None:
    # echo request, id 0x1234, seq 1, payload "abcd": ~(0x0800 + 0x1234 + 0x0001 + 0x6162 + 0x6364)
    packet = bytes.fromhex("0800" "0000" "1234" "0001") + b"abcd"
    assert ping._checksum(packet) == 0x2104
    assert ping._checksum(packet[:2] + (0x2104).to_bytes(2, "big") + packet[4:]) == 0  # as a receiver checks
    assert ping._checksum(b"\xff\xff\x00") == 0  # odd length, carry folded


# ---------------------------------------------------------------------------------------------
# Loopback, in this process (raw socket: root)


@integration  # a raw ICMP socket: root
async def test_loopback_names_and_families_in_process() -> None:
    need_root()
    ctx = ProbeContext()
    try:
        assert await ping.configure(ctx, "raw") == "raw"
        targets = ["127.0.0.1", "localhost", "::1"]
        results = await asyncio.gather(*(
            run_probe(ping.KIND, ctx, ProbeCall(t, t, 5.0), ping.PingParams(**FAST), time.time()) for t in targets
        ))
    finally:
        await ctx.aclose()
    for target, result in zip(targets, results):
        assert result.status is Status.OK, (target, result)
        assert result.values["received"] == 2
    assert results[1].summary.startswith("localhost (")


@integration  # a raw ICMP socket: root
async def test_cancelled_ping_leaves_nothing_in_flight() -> None:
    need_root()
    ctx = ProbeContext()
    try:
        pinger = (await ping.pingers(ctx)).get(socket.AF_INET)
        task = asyncio.create_task(pinger.ping(("127.0.0.1", 0), 3, 0.5, 2.0))
        await asyncio.sleep(0.1)  # the first packet is answered, the second not yet sent
        assert pinger.in_flight == 0
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert pinger.in_flight == 0
        task = asyncio.create_task(pinger.ping(("127.0.0.1", 0), 1, 0.5, 2.0))
        await asyncio.sleep(0)  # submitted, not yet sent
        assert pinger.in_flight == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert pinger.in_flight == 0
    finally:
        await ctx.aclose()


@integration  # a raw ICMP socket: root
async def test_reply_deadlines_share_one_timer_per_slot() -> None:
    need_root()
    ctx = ProbeContext()
    try:
        pinger = (await ping.pingers(ctx)).get(socket.AF_INET)
        targets = [(f"127.0.{i >> 8}.{i & 255}", 0) for i in range(1, 301)]
        results = await asyncio.gather(*(pinger.ping(target, 1, 0.2, 5.0) for target in targets))
        assert all(isinstance(packets[0], float) for packets in results)
        # answered, but each deadline stays on its slot until the slot's timer fires
        assert sum(len(requests) for _timer, requests in pinger._wheel.values()) == 300
        assert len(pinger._wheel) < 30  # sent in a few bursts: one timer per 10 ms slot, not per packet
        assert pinger.in_flight == 0
    finally:
        await ctx.aclose()
    assert pinger._wheel == {}


# ---------------------------------------------------------------------------------------------
# Namespaces


@integration
@MODES
def test_host_up(pair: NetnsPair, mode: str) -> None:
    open_ping_groups(pair)
    report = ping_from_mon(pair, [HOST_ADDR, HOST_ADDR6], mode=mode, params={**FAST, "count": 3})
    assert report["kind"] == mode
    for result in report["results"].values():
        assert result.status is Status.OK, result
        assert (result.values["sent"], result.values["received"], result.values["loss_percent"]) == (3, 3, 0)
        assert 0 < result.values["rtt_min_ms"] <= result.values["rtt_avg_ms"] <= result.values["rtt_max_ms"]


@integration
def test_link_down_is_unreachable(pair: NetnsPair) -> None:
    pair.link_down()
    result = only(ping_from_mon(pair, [HOST_ADDR]))
    assert (result.status, result.reason) == (Status.CRITICAL, Reason.UNREACHABLE), result


@integration
@MODES
def test_dropped_echo_is_unreachable(pair: NetnsPair, mode: str) -> None:
    need_binary("nft")
    open_ping_groups(pair)
    pair.drop_echo()
    report = ping_from_mon(pair, [HOST_ADDR, HOST_ADDR6], mode=mode)
    for address, result in report["results"].items():
        assert (result.status, result.reason) == (Status.CRITICAL, Reason.UNREACHABLE), result
        assert result.summary == f"no reply from {address} (2 sent)"
        assert result.duration < 3


@integration
@MODES
def test_icmp_unreachable_answer(pair: NetnsPair, mode: str) -> None:
    need_binary("nft")
    open_ping_groups(pair)
    pair.reject_echo()
    report = ping_from_mon(pair, [HOST_ADDR, HOST_ADDR6], mode=mode, params={**FAST, "reply_timeout": 5.0})
    for result in report["results"].values():
        assert (result.status, result.reason) == (Status.CRITICAL, Reason.UNREACHABLE), result
        assert "unreachable (from " in result.summary or "prohibited (from " in result.summary, result
        assert result.duration < 2, "the ICMP error should end the wait, not the reply timeout"


@integration
def test_runner_timeout_forgets_requests(pair: NetnsPair) -> None:
    need_binary("nft")
    pair.drop_echo()
    result = only(ping_from_mon(pair, [HOST_ADDR], params={**FAST, "reply_timeout": 5.0}, timeout=0.5))
    assert (result.status, result.reason) == (Status.CRITICAL, Reason.TIMEOUT), result
    # ping_from_mon asserted that nothing was left in the pinger's table


@integration
@MODES
def test_many_hosts_some_dead(pair: NetnsPair, mode: str) -> None:
    need_binary("nft")
    open_ping_groups(pair)
    addresses = pair.add_hosts("10.201.0.0/24", 200)
    dead = set(addresses[::4])
    pair.drop_echo(dead)
    report = ping_from_mon(pair, addresses, mode=mode, params={"count": 1, "reply_timeout": 1.0})
    statuses = {address: result.status for address, result in report["results"].items()}
    assert {a for a, s in statuses.items() if s is Status.OK} == set(addresses) - dead
    assert {a for a, s in statuses.items() if s is not Status.OK} == dead
    assert {report["results"][a].reason for a in dead} == {Reason.UNREACHABLE}


@integration
@MODES
def test_loopback_in_each_mode(pair: NetnsPair, mode: str) -> None:
    open_ping_groups(pair)
    report = ping_from_mon(pair, ["127.0.0.1", "::1"], mode=mode)
    assert report["kind"] == mode
    assert all(result.status is Status.OK for result in report["results"].values()), report


@integration
def test_auto_falls_back_to_datagram_without_cap_net_raw(pair: NetnsPair) -> None:
    need_binary("setpriv")
    open_ping_groups(pair)
    report = ping_from_mon(pair, [HOST_ADDR], mode="auto", drop_net_raw=True)
    assert report["kind"] == "datagram"
    assert only(report).status is Status.OK


@integration
def test_clear_error_when_no_icmp_socket_is_permitted(pair: NetnsPair) -> None:
    need_binary("setpriv")
    pair.sysctl(pair.mon, "net.ipv4.ping_group_range", "1 0")  # the kernel default: nobody
    error = ping_from_mon(pair, [HOST_ADDR], mode="auto", drop_net_raw=True)["error"]
    assert error == (
        "ping needs a raw ICMP socket (root or CAP_NET_RAW) or unprivileged ICMP "
        "(net.ipv4.ping_group_range must include gid 0; it is '1 0'): both were refused"
    )
    raw_only = ping_from_mon(pair, [HOST_ADDR], mode="raw", drop_net_raw=True)["error"]
    assert raw_only == "ping needs a raw ICMP socket (root or CAP_NET_RAW): it was refused"
