"""The operator commands that write to the state store, without a running daemon."""

from __future__ import annotations

import asyncio
import json
import sys

import pytest

from monitord.edge import cli
from monitord.records.state import SQLiteStore


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "monitord.yaml"
    path.write_text(f"""
daemon: {{state_path: {tmp_path / 'state.db'}}}
groups: {{web: {{}}}}
hosts:
  web1: {{address: 127.0.0.1, groups: [web], tags: [gold]}}
""")
    return path


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_maintenance_add_list_remove(config, capsys):
    code, out, _ = run(capsys, "maintenance", "add", "--config", str(config), "--group", "web", "--duration", "2h",
                       "--reason", "kernel update", "--by", "ops")
    assert code == 0 and out.startswith("maintenance #1: group web until ")
    code, out, _ = run(capsys, "maintenance", "list", "--config", str(config))
    assert "group:web" in out and "active" in out and "kernel update (ops)" in out
    assert run(capsys, "maintenance", "remove", "--config", str(config), "1")[:2] == (0, "maintenance #1 removed\n")
    assert run(capsys, "maintenance", "remove", "--config", str(config), "1")[0] == 2
    code, _, err = run(capsys, "maintenance", "add", "--config", str(config), "--host", "nope", "--duration", "1h",
                       "--reason", "x")
    assert code == 2 and "no host 'nope'" in err
    code, _, err = run(capsys, "maintenance", "add", "--config", str(config), "--tag", "gold", "--duration", "soon",
                       "--reason", "x")
    assert code == 2 and "invalid duration 'soon'" in err


def test_approvals_and_journal(config, capsys, tmp_path):
    assert run(capsys, "approve", "--config", str(config), "web1", "--by", "night-contact")[:2] == (0, "web1: granted\n")
    assert asyncio.run(SQLiteStore(tmp_path / "state.db").control.take_approval("web1", 0)) == "granted"
    code, out, _ = run(capsys, "journal", "--config", str(config), "--json")
    [entry] = [json.loads(line) for line in out.splitlines()]
    assert (entry["event"], entry["host"], entry["decision"], entry["detail"]) == (
        "approval", "web1", "granted", {"by": "night-contact"})


def test_incident_commands(config, capsys, tmp_path):
    store = SQLiteStore(tmp_path / "state.db")
    incident = asyncio.run(store.incidents.open("web1", "ping", "ping", 1000.0, 1000.0, "down"))
    asyncio.run(store.close())
    assert run(capsys, "ack", "--config", str(config), "99")[0] == 2
    assert run(capsys, "ack", "--config", str(config), str(incident))[1] == f"incident #{incident}: 0 page(s) acknowledged\n"
    assert run(capsys, "arrived", "--config", str(config), str(incident))[0] == 2  # no timer running
    code, out, _ = run(capsys, "swap-decided", "--config", str(config), str(incident))
    assert code == 0 and "replacement must answer on the network by" in out
    assert run(capsys, "swap-decided", "--config", str(config), str(incident))[0] == 2  # only once
    code, out, _ = run(capsys, "swapped", "--config", str(config), str(incident))
    assert code == 0 and out.rstrip().endswith(": met")
    events = [(e.event, e.decision) for e in asyncio.run(SQLiteStore(tmp_path / "state.db").incidents.journal())]
    assert events == [("ack", "acknowledged"), ("sla_started", "replacement_on_network"),
                      ("sla_stopped", "replacement_on_network")]


def test_release_of_a_host_that_is_not_quarantined(config, capsys):
    code, _, err = run(capsys, "release", "--config", str(config), "web1")
    assert code == 2 and "web1 is not quarantined" in err


@pytest.mark.parametrize("given", ["١", "１", "¹", "+1", " 1", "1_0", "1.0", "9" * 19])
def test_ids_are_plain_ascii_digits(config, capsys, tmp_path, given):
    store = SQLiteStore(tmp_path / "state.db")
    asyncio.run(store.incidents.open("web1", "ping", "ping", 1000.0, 1000.0, "down"))  # #1: int() would take "١" for it
    asyncio.run(store.close())
    for args in (["ack", "--config", str(config), given], ["report", "show", "--config", str(config), given],
                 ["maintenance", "remove", "--config", str(config), given]):
        with pytest.raises(SystemExit) as exit_:
            cli.main(args)
        assert exit_.value.code == 2
        assert f"{given!r} must be a number (digits 0-9, at most 18)" in capsys.readouterr().err


def test_the_daemon_runs_on_uvloop_when_installed_else_on_asyncio(monkeypatch):
    import asyncio

    import uvloop
    assert cli.event_loop_runner() is uvloop.run
    monkeypatch.setitem(sys.modules, "uvloop", None)  # not installed: the import fails
    assert cli.event_loop_runner() is asyncio.run
