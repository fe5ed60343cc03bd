"""Seeded generator of broken config files, for the config fuzz test and benchmark.

Every case is a mutation of the shipped example configs (or of a slice of them): wrong
types, deleted and misspelt keys, references to nothing, YAML syntax damage, alias bombs,
self-references, deep nesting, huge and non-finite numbers, sexagesimal times, control
characters and undecodable bytes. The same seed always gives the same cases. This module
imports no monitord code, so a benchmark can run the same cases against another checkout.
"""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "config" / "monitord.example.yaml"
LOCAL = REPO / "config" / "local.yaml"

HOSTILE: list[Any] = [
    None, True, False, 0, -1, 0.5, 2**64, 10**400, float("inf"), float("-inf"), float("nan"), 1e308, 65536, -65536,
    "", " ", "x" * 3000, "\x00", "\x1b[31mred", "\u202eevil", "日本語", "1:30", "10:00", "1:30:00", "-1s", "0s",
    "99999999d", "1e400s", ".inf", "nonexistent", "../../etc/passwd", "Asia/Tokio", "a/" * 300, "127.0.0.1:99999",
    "*", "%", "{", [], {}, [None], [[]], {"k": None}, {"file": None}, {"env": ""}, [1, "a", None],
]
"""Values dropped in place of any key or item of a valid config."""

DAMAGE = ["[", "]", "{", "}", ":", ": :", "- ", "? ", "&a ", "*a", "*nope", "!!python/object/apply:os.system ['id'] ",
          "!!binary ", "!!set ", "'", '"', "|", ">", "\t", "%YAML 1.1\n", "---\n", "...\n", "<<: ", "\\", "#", "@", "`",
          "\x00", "\x01", "\x1b", "\x7f", "\x85", "\ufeff", "\u2028", "\x0c"]
"""Text inserted at a random place of a config file."""

BAD_BYTES = [b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80"]
"""Byte sequences that are not UTF-8."""


WHEN = 1_798_759_800.0
"""2026-12-31 23:30 UTC: the year-end break, a time for calendars and rotations to get wrong."""


def use(config: Any) -> None:
    """What ``run`` does with a loaded config before and while serving; raises if a part fails.

    monitord is imported here, at the call, so that a benchmark measures the checkout it chose.
    """
    from monitord.paging.business_calendar import Calendars

    host, port = config.daemon.metrics_address
    assert host and 0 <= port <= 65535, config.daemon.metrics_listen
    for spec in config.checks():
        assert 0 < spec.timeout < spec.interval <= 3650 * 86400 and spec.fingerprint, spec.id
    calendars = Calendars(config)
    for name in config.hosts:
        config.remediation(name)
        calendar = calendars.for_host(name)
        calendar.is_business_time(WHEN)
        calendar.add_business_days(WHEN, 2)
    for schedule in config.paging.schedules.values():
        assert schedule.on_call(WHEN) in schedule.members + [o.person for o in schedule.overrides]


def cases(seed: int, count: int) -> list[tuple[str, bytes]]:
    """``count`` (name, file content) pairs; the name says how the case was made."""
    rng = random.Random(seed)
    bases = _bases(rng)
    makers: list[tuple[int, Callable[[random.Random, list], tuple[str, bytes]]]] = [
        (30, _tree_mutation), (25, _text_mutation), (8, _byte_damage), (10, _alias_case), (5, _deep_case),
        (10, _scalar_case), (10, _reference_case), (3, _key_case),
    ]
    weights = [w for w, _ in makers]
    out = []
    for i in range(count):
        maker = rng.choices([m for _, m in makers], weights)[0]
        name, data = maker(rng, bases)
        out.append((f"{i:04d}-{name}", data))
    return out


def _bases(rng: random.Random) -> list[dict]:
    """Small valid configs, so each case stays quick to load: the local config, the example's
    paging and customers, and per example host that host with its parent (and no customer)."""
    example = yaml.safe_load(EXAMPLE.read_text())
    paging = {key: example[key] for key in ("business_hours", "paging", "customers")}
    out = [yaml.safe_load(LOCAL.read_text()), paging]
    for name, host in example["hosts"].items():
        if name != "core-sw1":
            host = {key: value for key, value in host.items() if key != "customer"}
            out.append({"groups": example["groups"], "escalation": example["escalation"],
                        "maintenance": example["maintenance"], "hosts": {"core-sw1": example["hosts"]["core-sw1"], name: host}})
    return out


def _dump(data: Any) -> bytes:
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml when there, for speed
    return yaml.dump(data, Dumper=dumper, sort_keys=False, allow_unicode=True, width=120).encode()


def _paths(node: Any, path: tuple = ()) -> Iterator[tuple]:
    """Every key and item path in ``node``."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        yield path + (key,)
        yield from _paths(value, path + (key,))


def _parent(data: Any, path: tuple) -> Any:
    for step in path[:-1]:
        data = data[step]
    return data


def _tree_mutation(rng: random.Random, bases: list) -> tuple[str, bytes]:
    """One to three edits of a parsed base: a hostile value, a deletion, a typo, a wrapped value."""
    data = copy.deepcopy(rng.choice(bases))
    what = []
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(list(_paths(data)))
        parent, last = _parent(data, path), path[-1]
        op = rng.choice(["hostile", "hostile", "delete", "typo", "wrap", "retype"])
        if op == "hostile":
            parent[last] = copy.deepcopy(rng.choice(HOSTILE))
        elif op == "delete":
            del parent[last]
        elif op == "typo" and isinstance(parent, dict) and isinstance(last, str) and len(last) > 1:
            i = rng.randrange(len(last) - 1)
            parent[last[:i] + last[i + 1] + last[i] + last[i + 2:]] = parent.pop(last)
        elif op == "wrap":
            parent[last] = [parent[last]] if rng.random() < 0.5 else {"value": parent[last]}
        else:
            value = parent[last]
            parent[last] = str(value) if not isinstance(value, str) else len(value)
        what.append(op)
    return "tree-" + "+".join(what), _dump(data)


def _text_mutation(rng: random.Random, bases: list) -> tuple[str, bytes]:
    """Syntax damage to the text: lines deleted, duplicated, re-indented, cut, or junk inserted."""
    text = LOCAL.read_text() if rng.random() < 0.15 else _dump(rng.choice(bases)).decode()
    lines = text.splitlines(keepends=True)
    op = rng.choice(["insert", "insert", "delete-line", "duplicate-line", "indent", "dedent", "truncate"])
    i = rng.randrange(len(lines))
    if op == "insert":
        pos = rng.randrange(len(text) + 1)
        text = text[:pos] + rng.choice(DAMAGE) + text[pos:]
    elif op == "delete-line":
        text = "".join(lines[:i] + lines[i + 1:])
    elif op == "duplicate-line":
        text = "".join(lines[:i + 1] + lines[i:])
    elif op == "indent":
        text = "".join(lines[:i] + [" " * rng.randint(1, 3) + lines[i]] + lines[i + 1:])
    elif op == "dedent":
        text = "".join(lines[:i] + [lines[i].lstrip(" ")] + lines[i + 1:])
    else:
        text = text[:rng.randrange(len(text))]
    return f"text-{op}", text.encode("utf-8", "surrogatepass")


def _byte_damage(rng: random.Random, bases: list) -> tuple[str, bytes]:
    """Bytes that do not decode: junk at a random place, or the whole file in another encoding."""
    data = _dump(rng.choice(bases))
    if rng.random() < 0.2:
        return "bytes-utf16", data.decode().encode("utf-16")
    pos = rng.randrange(len(data) + 1)
    return "bytes-junk", data[:pos] + rng.choice(BAD_BYTES) + data[pos:]


def _alias_case(rng: random.Random, bases: list) -> tuple[str, bytes]:
    """Billion laughs of random width and depth, self-references, alias chains, merge abuse."""
    kind = rng.choice(["bomb", "bomb", "self", "chain", "merge", "undefined"])
    if kind == "bomb":
        width, depth = rng.randint(2, 12), rng.randint(4, 12)
        lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
        lines += [f"l{d}: &l{d} [{', '.join([f'*l{d - 1}'] * width)}]" for d in range(1, depth)]
        where = rng.choice(["top", "description", "groups"])
        body = "\n".join(lines) + "\n"
        if where == "description":
            body = "x-anchors:\n" + "".join("  " + line + "\n" for line in lines)
            body += f"hosts:\n  h:\n    address: 127.0.0.1\n    description: *l{depth - 1}\n"
        elif where == "groups":
            body = "groups:\n" + "".join(f"  g{d}: {{description: x}}\n" for d in range(3)) + body
        return f"alias-bomb-{width}x{depth}-{where}", body.encode()
    if kind == "self":
        return "alias-self", rng.choice([
            b"x: &a [*a]\n", b"hosts: &h\n  web1: {address: 127.0.0.1, checks: *h}\n",
            b"defaults: &d {remediation: *d}\n", b"groups:\n  g: &g\n    defaults: {intervals: *g}\n",
            b"a: &a {<<: *a}\n",
        ])
    if kind == "chain":
        n = rng.randint(2, 40)
        lines = ["a0: &a0 " + "[" * 30 + "x" + "]" * 30]
        lines += [f"a{i}: &a{i} " + "[" * 20 + f"*a{i - 1}" + "]" * 20 for i in range(1, n)]
        return f"alias-chain-{n}", ("\n".join(lines) + "\n").encode()
    if kind == "merge":
        n = rng.randint(1, 300)
        body = "x-base: &base {address: 127.0.0.1, description: x}\nhosts:\n"
        body += "".join(f"  h{i}: {{<<: *base}}\n" for i in range(n))
        return f"alias-merge-{n}", body.encode()
    return "alias-undefined", b"hosts:\n  web1: {address: *nowhere}\n"


def _key_case(rng: random.Random, bases: list) -> tuple[str, bytes]:
    """Keys that are not plain values: complex keys, flow collections and aliases as keys."""
    return "key", rng.choice([
        b"? [a, b]\n: 1\n", b"{[a]: 1}\n", b"? {a: 1}\n: x\n", b"hosts: {? [x] : y}\n",
        b"a: &a [1]\n*a : x\n", b"hosts:\n  ? - web1\n  : {address: 127.0.0.1}\n",
        b"groups:\n  ? " + b"[" * 2000 + b"]" * 2000 + b"\n  : x\n", b"[1, 2]: x\n",
        b"hosts:\n  web1:\n    address: 127.0.0.1\n    checks: {? {kind: ping} : {}}\n",
    ])


def _deep_case(rng: random.Random, bases: list) -> tuple[str, bytes]:
    """Nesting from harmless to stack-breaking, in flow and block style, in keys and values."""
    n = rng.choice([10, 63, 64, 65, 100, 249, 250, 300, 1000, 50000])
    style = rng.choice(["flow-list", "flow-map", "block", "in-host"])
    if style == "flow-list":
        text = "x: " + "[" * n + "]" * n + "\n"
    elif style == "flow-map":
        text = "x: " + "{a: " * n + "b" + "}" * n + "\n"
    elif style == "block":
        n = min(n, 300)
        text = "".join("  " * d + f"k{d}:\n" for d in range(n)) + "  " * n + "v\n"
    else:
        text = "hosts:\n  h:\n    address: 127.0.0.1\n    description: " + "[" * n + "]" * n + "\n"
    return f"deep-{style}-{n}", text.encode()


def _scalar_case(rng: random.Random, bases: list) -> tuple[str, bytes]:
    """Hostile scalars written straight into a setting of a valid config."""
    value = rng.choice([".inf", "-.inf", ".nan", ".NaN", "1e400", "9" * 400, "9" * 5000, "0x" + "f" * 40, "1:30",
                        "10:00", "190:20:30", '"\\0"', '"\\x01"', '"\\e[31m"', '"\\u202e"', "0o17", "0b101", "1_000",
                        "~", "[]", "{}", "!!binary aGk=", "2026-02-30", "2026-13-01", "12:00:00", "-0", "+12", "0.0"])
    setting = rng.choice([
        "defaults:\n  timeout: {v}\n", "defaults:\n  max_attempts: {v}\n", "daemon:\n  metrics_listen: {v}\n",
        "daemon:\n  max_concurrency: {v}\n", "business_hours:\n  start: {v}\n", "business_hours:\n  timezone: {v}\n",
        "hosts:\n  h:\n    address: {v}\n    checks:\n      ping: {{}}\n",
        "hosts:\n  h:\n    address: 127.0.0.1\n    checks:\n      tcp: {{port: {v}}}\n",
        "hosts:\n  h:\n    address: 127.0.0.1\n    checks:\n      ping: {{interval: {v}}}\n",
        "hosts:\n  h:\n    address: 127.0.0.1\n    pdu: {{address: 10.0.0.1, outlet: {v}, community: {{env: X}}}}\n",
        "hosts:\n  h:\n    address: 127.0.0.1\n    checks:\n      disk: {{transport: local, critical_percent: {v}}}\n",
        "paging:\n  people: {{a: {{notify: [m]}}}}\n  integrations: {{m: {{type: slack, webhook_url: {{env: X}}}}}}\n"
        "  schedules: {{s: {{members: [a], start: 2026-01-05, handoff: {v}}}}}\n",
        "paging:\n  people: {{a: {{notify: [m]}}}}\n  integrations: {{m: {{type: slack, webhook_url: {{env: X}}}}}}\n"
        "  schedules: {{s: {{members: [a], start: 2026-01-05, rotation: {v}}}}}\n",
        "escalation:\n  blast_radius: {{window: {v}}}\n",
        "daemon:\n  metrics_listen: 127.0.0.1:{v}\n",
    ])
    return "scalar", setting.format(v=value).encode()


REFERENCES = [
    ("maintenance", "rack-a-firmware", "hosts"), ("maintenance", "rack-a-firmware", "groups"),
    ("maintenance", "rack-a-firmware", "tags"), ("escalation", "blast_radius", "canaries"),
    ("paging", "routes", 0, "groups"), ("paging", "routes", 0, "tags"), ("paging", "routes", 0, "policy"),
    ("paging", "people", "aoki", "notify"), ("paging", "schedules", "primary", "members"),
    ("paging", "schedules", "primary", "timezone"), ("paging", "policies", "notices", "tiers", 0, "targets"),
    ("customers", "acme", "notify"), ("customers", "acme", "emergency_contact"),
]
"""Places in the bases where a name refers to something else (hosts add groups, parents, customer)."""


def _reference_case(rng: random.Random, bases: list) -> tuple[str, bytes]:
    """A valid base where one name that refers to something else refers to nothing."""
    data = copy.deepcopy(rng.choice(bases[1:]))
    spots = [path for path in REFERENCES if path[0] in data]
    spots += [("hosts", name, key) for name in data.get("hosts", {}) if name != "core-sw1"
              for key in ("groups", "parents", "customer")]
    path = rng.choice(spots)
    typo = rng.choice(["nobody", "wbe", "acme-corp", "Asia/Tokio", "core-sw2", "gold-plan", "primay"])
    _parent(data, path)[path[-1]] = typo if path[-1] in ("policy", "customer", "timezone") else [typo]
    return f"reference-{path[-1]}", _dump(data)
