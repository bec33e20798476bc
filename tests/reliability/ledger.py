"""The ledger harness of the reliability campaign (issue 6).

Every process of a campaign writes what it did to its own append-only
ledger file, one ``os.write`` per line on an ``O_APPEND`` descriptor, so a
line is either there whole or not at all when the process is killed:

- a producer writes ``try <topic> <key>`` before a put and
  ``ack <topic> <id> <key>`` after the put returned (``fsync_put=True``:
  the message is acknowledged);
- a consumer writes ``got <topic> <id> <key> <ok|bad> <attempts> <thread>``
  when it handled a message, *before* completing it, then ``done ...`` when
  ``complete()`` returned True (``lost ...`` when it returned False: the
  lease was taken away, e.g. by an operator's requeue). ``retry`` and
  ``fail`` lines record the other outcomes (not handling);
- an admin writes ``purge <topic> <count>`` and ``problem <text>``.

Values carry a checksum (:func:`make_value`), so a consumer can tell a
damaged value (``bad``) from a sound one.

:func:`analyse` reads every ledger of a directory and counts:

- lost: acknowledged, never handled (purges are counted per topic);
- phantom: handled, never even tried by a producer;
- corrupt: handled with a bad checksum, or under another id than acknowledged;
- duplicates: handlings beyond the first of a message, compared with the
  bound: what each killed consumer held (handled, not yet completed) when it
  was killed, plus the handlings whose lease was lost (not a kill).

:class:`Fleet` starts, kills (SIGKILL) and restarts the worker processes
(``tests/reliability/worker.py`` and ``manage.py runconsumers``).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).resolve().parent / "worker.py"
DEADLINE = 60.0  # seconds any one process may take; only a hang reaches it


# -- values ----------------------------------------------------------------------


def make_value(key: str, size: int, rng: random.Random) -> dict[str, Any]:
    """A message value: its key, ``size`` random bytes and a checksum of both."""
    pad = rng.randbytes(size)
    return {"k": key, "p": pad, "c": zlib.crc32(pad, zlib.crc32(key.encode()))}


def value_ok(value: Any) -> bool:
    """True if ``value`` is a sound :func:`make_value` value."""
    try:
        return zlib.crc32(value["p"], zlib.crc32(value["k"].encode())) == value["c"]
    except Exception:
        return False


def value_key(value: Any) -> str:
    try:
        key = value["k"]
    except Exception:
        return "?"
    return key if isinstance(key, str) and key and " " not in key else "?"


def payload_size(rng: random.Random, big: bool = False) -> int:
    """A payload size: mostly small, some of tens of KiB, with ``big`` a
    few up to 1 MiB; 0 bytes too."""
    r = rng.random()
    if r < 0.05:
        return 0
    if r < 0.80:
        return rng.randrange(1, 600)
    if r < 0.97 or not big:
        return rng.randrange(600, 40_000)
    return rng.randrange(40_000, 1024 * 1024 + 1)


# -- writing ---------------------------------------------------------------------


class LedgerFile:
    """One process's append-only ledger (one write per line)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, *fields: object) -> None:
        os.write(self.fd, (" ".join(str(f) for f in fields) + "\n").encode())

    def close(self) -> None:
        os.close(self.fd)


# -- reading ---------------------------------------------------------------------


@dataclass
class Kill:
    """A process killed with SIGKILL: its role and the ledger it wrote."""

    role: str
    ledger: str
    at: float


@dataclass
class Verdict:
    """What :func:`analyse` found."""

    tried: int = 0
    acknowledged: int = 0
    handled: int = 0  # handlings (got lines), duplicates included
    unique_handled: int = 0
    lost: int = 0
    phantom: int = 0
    corrupt: int = 0
    duplicates: int = 0
    bound: int = 0  # what duplicates may be at most
    kills: int = 0
    purged: int = 0
    lost_leases: int = 0
    problems: list[str] = field(default_factory=list)
    details: dict[str, list[Any]] = field(default_factory=dict)

    def ok(self) -> bool:
        return (
            self.lost == 0
            and self.phantom == 0
            and self.corrupt == 0
            and self.duplicates <= self.bound
            and not self.problems
        )

    def summary(self) -> dict[str, Any]:
        return {
            "kills": self.kills,
            "acknowledged": self.acknowledged,
            "handled": self.handled,
            "lost": self.lost,
            "phantom": self.phantom,
            "corrupt": self.corrupt,
            "duplicates": self.duplicates,
            "bound": self.bound,
            "purged": self.purged,
            "lost_leases": self.lost_leases,
        }

    def explain(self) -> str:
        lines = [json.dumps(self.summary())]
        lines += self.problems[:20]
        for name, items in self.details.items():
            if items:
                lines.append(f"{name}: {items[:20]}")
        return "\n".join(lines)


def _lines(path: Path) -> list[list[str]]:
    out = []
    for raw in path.read_bytes().split(b"\n"):
        if raw:
            out.append(raw.decode(errors="replace").split(" "))
    return out


def analyse(directory: str | os.PathLike[str], kills: list[Kill] | None = None, *,
            purge_topics: frozenset[str] = frozenset()) -> Verdict:
    """Read every ``*.log`` ledger in ``directory`` and count (see the module
    docstring). Messages of ``purge_topics`` are checked by count: acknowledged
    = handled (unique) + purged, as purge says how many it removed, not which."""
    kills = kills or []
    v = Verdict(kills=len(kills))
    tried: set[str] = set()
    acked: dict[str, tuple[str, int]] = {}
    handled: dict[str, list[tuple[str, int, str]]] = defaultdict(list)
    purged: Counter[str] = Counter()
    lost_lease_keys: list[str] = []
    per_file: dict[str, list[list[str]]] = {}
    for path in sorted(Path(directory).glob("*.log")):
        lines = per_file[str(path)] = _lines(path)
        for f in lines:
            kind = f[0]
            if kind == "try" and len(f) == 3:
                tried.add(f[2])
            elif kind == "ack" and len(f) == 4:
                acked[f[3]] = (f[1], int(f[2]))
            elif kind == "got" and len(f) >= 5:
                handled[f[3]].append((f[1], int(f[2]), f[4]))
            elif kind == "lost" and len(f) >= 4:
                lost_lease_keys.append(f[3])
            elif kind == "purge" and len(f) == 3:
                purged[f[1]] += int(f[2])
            elif kind == "problem":
                v.problems.append(f"{path.name}: {' '.join(f[1:])}")
    v.tried, v.acknowledged = len(tried), len(acked)
    v.handled = sum(len(h) for h in handled.values())
    v.unique_handled = len(handled)
    v.purged = sum(purged.values())
    v.lost_leases = len(lost_lease_keys)

    lost = [k for k, (topic, _) in acked.items() if k not in handled and topic not in purge_topics]
    for topic in purge_topics:
        n_acked = sum(1 for t, _ in acked.values() if t == topic)
        n_handled = sum(1 for k, h in handled.items() if h[0][0] == topic and k in acked)
        missing = n_acked - n_handled - purged[topic]
        if missing > 0:
            lost.append(f"{missing} of topic {topic} (acked {n_acked}, handled {n_handled}, "
                        f"purged {purged[topic]})")
    phantom = [k for k in handled if k not in tried]
    corrupt = []
    for k, hs in handled.items():
        for topic, mid, ok in hs:
            if ok != "ok" or (k in acked and acked[k] != (topic, mid)):
                corrupt.append((k, topic, mid, ok, acked.get(k)))
    dup_keys = {k: len(hs) - 1 for k, hs in handled.items() if len(hs) > 1}

    # What each killed consumer held: handled, not completed. A worker
    # consumer writes done/lost after complete(); a runconsumers handler
    # cannot, so each of its threads may hold its last handled message.
    in_flight: set[str] = set()
    bound = 0
    for kill in kills:
        lines = per_file.get(kill.ledger)
        if lines is None:
            p = Path(kill.ledger)
            lines = _lines(p) if p.exists() else []
        held: dict[str, str] = {}
        if kill.role == "runconsumers":
            last: dict[str, str] = {}
            for f in lines:
                if f[0] == "got" and len(f) >= 7:
                    last[f[6]] = f[3]
            held = {k: k for k in last.values()}
        else:
            for f in lines:
                if f[0] == "got" and len(f) >= 4:
                    held[f[3]] = f[3]
                elif f[0] in ("done", "lost") and len(f) >= 4:
                    held.pop(f[3], None)
        bound += len(held)
        in_flight |= set(held)
    bound += len(lost_lease_keys)
    allowed = in_flight | set(lost_lease_keys)
    unexplained = [k for k in dup_keys if k not in allowed]

    v.lost, v.phantom, v.corrupt = len(lost), len(phantom), len(corrupt)
    v.duplicates, v.bound = sum(dup_keys.values()), bound
    if unexplained:
        v.problems.append(f"{len(unexplained)} duplicated messages no killed consumer held: "
                          f"{unexplained[:10]}")
    v.details = {"lost": lost, "phantom": phantom, "corrupt": corrupt,
                 "duplicates": sorted(dup_keys)}
    return v


# -- processes -------------------------------------------------------------------


def child_env(location: str, options: dict[str, Any], ledgers: Path, tmp: Path,
              **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        "DJANGO_SETTINGS_MODULE": "tests.reliability.settings",
        "DQ_LOCATION": location,
        "DQ_OPTIONS": json.dumps(options),
        "DQ_LEDGER_DIR": str(ledgers),
        "DQ_VAR_DIR": str(tmp),
        "DQ_LOG_LEVEL": "WARNING",
        "TMPDIR": str(tmp),
        **extra,
    }
    env.pop("DQ_CRASH_AT", None)
    return env


@dataclass
class Member:
    """One process slot of a fleet: restarted under a new incarnation."""

    name: str
    role: str  # produce, consume, admin or runconsumers
    args: dict[str, Any]
    proc: subprocess.Popen[bytes] | None = None
    incarnation: int = 0
    ledger: str = ""
    log: str = ""


class Fleet:
    """Worker processes on one queue directory, killed and restarted at will."""

    def __init__(self, location: str, options: dict[str, Any], work: Path,
                 rng: random.Random, lifetime: float = DEADLINE) -> None:
        self.location = location
        self.options = options
        self.work = work
        self.ledgers = work / "ledgers"
        self.ledgers.mkdir(parents=True, exist_ok=True)
        self.logs = work / "logs"
        self.logs.mkdir(exist_ok=True)
        self.rng = rng
        self.lifetime = lifetime  # longest life of one worker process (hang detection)
        self.members: dict[str, Member] = {}
        self.kills: list[Kill] = []
        self.starts = 0
        self.stop_file = work / "stop"
        self.drain_file = work / "drain"

    def add(self, name: str, role: str, **args: Any) -> Member:
        m = self.members[name] = Member(name, role, args)
        return m

    def env(self, **extra: str) -> dict[str, str]:
        return child_env(self.location, self.options, self.ledgers, self.work, **extra)

    def start(self, m: Member, **env: str) -> None:
        m.incarnation += 1
        self.starts += 1
        tag = f"{m.name}.{m.incarnation}"
        m.log = str(self.logs / f"{tag}.txt")
        out = open(m.log, "wb")  # noqa: SIM115 - the child owns it
        if m.role == "runconsumers":
            cmd = [sys.executable, str(ROOT / "manage.py"), "runconsumers",
                   *m.args["topics"], "--concurrency", str(m.args.get("concurrency", 2)),
                   "--grace", "20"]
        else:
            m.ledger = str(self.ledgers / f"{tag}.log")
            a = {
                "location": self.location,
                "options": self.options,
                "ledger": m.ledger,
                "tag": tag,
                "seed": self.rng.randrange(2**32),
                "stop": str(self.stop_file),
                "drain": str(self.drain_file),
                "deadline": self.lifetime,
                **m.args,
            }
            cmd = [sys.executable, str(WORKER), m.role, json.dumps(a)]
        m.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env(**env), stdout=out,
                                  stderr=subprocess.STDOUT)
        out.close()
        if m.role == "runconsumers":
            m.ledger = str(self.ledgers / f"rc-{m.proc.pid}.log")

    def start_all(self) -> None:
        for m in self.members.values():
            self.start(m)

    def wait_until_working(self, timeout: float = 60.0) -> None:
        """Wait until a producer has had a put acknowledged: on a loaded
        machine the children can take seconds to start, and killing them
        before they did anything would test nothing."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in self.members.values():
                if m.role == "produce" and m.ledger and os.path.exists(m.ledger) and "ack" in Path(m.ledger).read_text():
                    return
            time.sleep(0.05)
        raise AssertionError(f"no producer had a put acknowledged within {timeout} s")

    def kill(self, m: Member) -> bool:
        """SIGKILL ``m``; False if it had already exited."""
        assert m.proc is not None
        if m.proc.poll() is not None:
            self.check_exit(m)
            return False
        m.proc.send_signal(signal.SIGKILL)
        m.proc.wait(timeout=DEADLINE)
        self.kills.append(Kill(m.role, m.ledger, time.time()))
        return True

    def check_exit(self, m: Member) -> None:
        """A member that exited by itself must have exited cleanly."""
        assert m.proc is not None
        rc = m.proc.poll()
        if rc not in (None, 0):
            raise AssertionError(f"{m.name} (incarnation {m.incarnation}) exited with {rc}:\n"
                                 + Path(m.log).read_text(errors="replace")[-3000:])

    def kill_some(self) -> int:
        """Kill a random non-empty subset of the running members; restart them."""
        alive = [m for m in self.members.values() if m.proc is not None and m.proc.poll() is None]
        for m in self.members.values():
            self.check_exit(m)
        if not alive:
            return 0
        victims = self.rng.sample(alive, self.rng.randint(1, len(alive)))
        n = 0
        for m in victims:
            if self.kill(m):
                n += 1
            self.start(m)
        return n

    def wait(self, m: Member, timeout: float = DEADLINE) -> int:
        assert m.proc is not None
        try:
            rc = m.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            m.proc.kill()
            m.proc.wait()
            raise AssertionError(f"{m.name} did not finish within {timeout} s (a hang?):\n"
                                 + Path(m.log).read_text(errors="replace")[-5000:]) from None
        return rc

    def finish(self, timeout: float = DEADLINE) -> None:
        """Stop producers, then let consumers drain and stop; every process
        must exit cleanly within ``timeout``."""
        self.stop_file.touch()
        for m in self.members.values():
            if m.role == "produce":
                rc = self.wait(m, timeout)
                assert rc == 0, (m.name, rc, Path(m.log).read_text(errors="replace")[-3000:])
        self.drain_file.touch()
        for m in self.members.values():
            if m.role in ("consume", "admin"):
                rc = self.wait(m, timeout)
                assert rc == 0, (m.name, rc, Path(m.log).read_text(errors="replace")[-3000:])
        for m in self.members.values():
            if m.role == "runconsumers":
                assert m.proc is not None
                self.wait_heartbeat(m, timeout)  # its SIGTERM handler is set by then
                m.proc.send_signal(signal.SIGTERM)
                rc = self.wait(m, timeout)
                assert rc == 0, (m.name, rc, Path(m.log).read_text(errors="replace")[-3000:])

    def wait_heartbeat(self, m: Member, timeout: float = DEADLINE) -> None:
        """Wait until a runconsumers process wrote its first heartbeat."""
        from queuecore import Queues

        assert m.proc is not None
        deadline = time.monotonic() + timeout
        with Queues(self.location, **self.options) as qs:
            while not any(b.get("pid") == m.proc.pid for b in qs.backend.heartbeats()):
                self.check_exit(m)
                if time.monotonic() > deadline:
                    raise AssertionError(f"{m.name} wrote no heartbeat within {timeout} s")
                time.sleep(0.02)

    def stop_everything(self) -> None:
        """Teardown: nothing may outlive the test."""
        for m in self.members.values():
            if m.proc is not None and m.proc.poll() is None:
                m.proc.kill()
                m.proc.wait()


def final_drain(location: str, options: dict[str, Any], ledger_path: Path,
                topics: list[str]) -> None:
    """In this process: give failed messages another chance and handle
    everything left, writing to ``ledger_path`` like a consumer."""
    from queuecore import Queues

    ledger = LedgerFile(ledger_path)
    try:
        with Queues(location, **options) as qs:
            for topic in topics:
                if topic not in qs.topics():
                    continue
                qs.requeue_failed(topic)
                deadline = time.monotonic() + DEADLINE
                while True:
                    tasks = qs.take_many(topic, 100, timeout=0)
                    if not tasks:
                        s = qs.stats()[topic]
                        # Every writer is gone: what is in progress belongs to
                        # dead owners and comes back at the next reclaim.
                        if s["delayed"] == 0 and s["ready"] == 0 and s["in_progress"] == 0:
                            break
                        assert time.monotonic() < deadline, s
                        time.sleep(0.02)
                        continue
                    for t in tasks:
                        ok = "ok" if value_ok(t.value) else "bad"
                        ledger.write("got", topic, t.id, value_key(t.value), ok, t.attempts,
                                     "final")
                        assert t.complete()
                        ledger.write("done", topic, t.id, value_key(t.value))
    finally:
        ledger.close()


def consistency(location: str, options: dict[str, Any]) -> list[str]:
    """Counters against what browsing lists, per state, and check()."""
    from queuecore import Queues
    from queuecore.slab.backend import RECLAIM_INTERVAL

    with Queues(location, **options) as qs:
        # Each call looks for ended leases first, and a look may run in one
        # call and not the one before (while a crashed holder's earliest
        # deadline is unknown, looks run at most every RECLAIM_INTERVAL): a
        # lease taken back between stats() and messages() is no miscount.
        # A miscount stays; a look that ran in between does not.
        problems: list[str] = []
        for _ in range(3):
            problems = []
            for topic, s in qs.stats().items():
                if min(s.values()) < 0:
                    problems.append(f"{topic}: negative counter {s}")
                for state in ("ready", "delayed", "in_progress", "failed"):
                    listed = len(qs.messages(topic, state=state, limit=10**9))
                    if listed != s[state]:
                        problems.append(f"{topic}: stats say {s[state]} {state}, messages() lists {listed}")
            if not problems:
                break
            time.sleep(RECLAIM_INTERVAL * 2)
        report = qs.check()
        if not report["ok"]:
            problems.append(f"check(): {report['problems']}")
    return problems
