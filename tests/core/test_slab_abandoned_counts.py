"""Counts tell the truth about abandoned leases, on slab files: the leases
of a holder that was killed (kill -9) or closed count as ready in
``stats()``, and show so in ``info()``, ``messages()`` and ``peek()``,
without a take to find them; with every holder alive, those calls read no
log (the look for ended leases is skipped) and probe the owner files at
most every RECLAIM_INTERVAL.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import queuecore.slab as slab_mod
from queuecore import Queues
from queuecore.slab.backend import RECLAIM_INTERVAL

from .conftest import HAS_SLAB, NO_SLAB

pytestmark = pytest.mark.skipif(not HAS_SLAB, reason=NO_SLAB)

PATIENCE = 30.0


class Holder:
    """A child process that takes ``count`` messages of "q" one take at a
    time (so its own takes look for ended leases and note the earliest
    deadline, as a busy consumer's do), prints their ids, then, as the test
    says on stdin, closes its ``Queues`` or waits to be killed."""

    def __init__(self, d: str, count: int) -> None:
        code = textwrap.dedent(
            f"""
            import sys
            from queuecore import Queues
            qs = Queues({d!r}, serializer="raw", visibility_timeout=300)
            tasks = [qs.take("q", timeout=5) for _ in range({count})]
            print(" ".join(str(t.id) for t in tasks), flush=True)
            if sys.stdin.readline().strip() == "close":
                qs.close()  # with the leases held
                print("closed", flush=True)
            sys.stdin.read()
            """
        )
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.ids = [int(i) for i in self.proc.stdout.readline().split()]
        assert len(self.ids) == count

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        assert self.proc.wait(timeout=PATIENCE) == -signal.SIGKILL

    def close(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("close\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "closed"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=PATIENCE)
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                f.close()


@pytest.fixture
def holders() -> Iterator[list[Holder]]:
    made: list[Holder] = []
    yield made
    for h in made:
        h.stop()


@pytest.fixture
def takes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every take of this process (none may find the abandoned leases here)."""
    seen: list[str] = []
    real = slab_mod.SlabBackend.take

    def spy(self: slab_mod.SlabBackend, topic: str, limit: int, timeout: float | None) -> object:
        seen.append(topic)
        return real(self, topic, limit, timeout)

    monkeypatch.setattr(slab_mod.SlabBackend, "take", spy)
    return seen


@pytest.fixture
def scans(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    real = slab_mod.SlabBackend._reclaim

    def spy(self: slab_mod.SlabBackend, t: slab_mod._Topic) -> None:
        seen.append(t.name)
        real(self, t)

    monkeypatch.setattr(slab_mod.SlabBackend, "_reclaim", spy)
    return seen


def _gauges(qs: Queues) -> tuple[int, int]:
    st = qs.stats()["q"]
    return st["ready"], st["in_progress"]


def _put(d: str, n: int) -> None:
    with Queues(d, serializer="raw") as qs:
        qs.put_many("q", [b"%d" % i for i in range(n)])


@pytest.mark.parametrize("end", ["kill -9", "close"])
def test_a_process_that_opens_the_queue_counts_the_leases_of_a_gone_holder_as_ready(
    tmp_path: Path, holders: list[Holder], takes: list[str], end: str
) -> None:
    d = str(tmp_path)
    _put(d, 5)
    holders.append(holder := Holder(d, 5))
    with Queues(d, serializer="raw") as qs:
        assert _gauges(qs) == (0, 5)
    if end == "close":
        holder.close()  # and the process lives on
    else:
        holder.kill()
    with Queues(d, serializer="raw") as qs:
        assert _gauges(qs) == (5, 0)
    assert takes == []
    with Queues(d, serializer="raw") as qs:
        got = qs.take_many("q", 5, timeout=0)
        assert sorted(t.id for t in got) == holder.ids
        assert {t.attempts for t in got} == {2}
        assert qs.complete_many(got) == 5


def test_a_process_that_keeps_looking_sees_a_killed_holders_leases_within_the_interval(
    tmp_path: Path, holders: list[Holder], takes: list[str]
) -> None:
    """A dashboard asks every second: the owner files it probed less than
    RECLAIM_INTERVAL ago stand for a new probe, so a kill -9 shows within
    that; a holder that closes shows at once (the count of owners gone)."""
    d = str(tmp_path)
    _put(d, 10)
    holders.append(killed := Holder(d, 5))
    holders.append(closer := Holder(d, 5))
    with Queues(d, serializer="raw") as qs:
        assert _gauges(qs) == (0, 10)
        closer.close()
        assert _gauges(qs) == (5, 5)  # at once
        killed.kill()
        started = time.monotonic()
        while _gauges(qs) != (10, 0):
            assert time.monotonic() - started < RECLAIM_INTERVAL + 0.5
            time.sleep(0.01)
    assert takes == []


@pytest.mark.parametrize("call", ["messages", "peek", "info"])
def test_messages_peek_and_info_show_a_killed_holders_messages_as_ready(
    tmp_path: Path, holders: list[Holder], takes: list[str], call: str
) -> None:
    d = str(tmp_path)
    _put(d, 3)
    holders.append(holder := Holder(d, 2))
    holder.kill()
    with Queues(d, serializer="raw") as qs:
        meta = qs._backend._get("q").meta  # type: ignore[attr-defined]
        assert meta.in_progress == 2  # opened: nothing looked yet
        if call == "messages":
            assert qs.messages("q", state="in_progress") == []
            assert [m.id for m in qs.messages("q", state="ready")] == [1, 2, 3]  # id order
        elif call == "peek":
            assert qs.peek("q", holder.ids[0]).state == "ready"
        else:
            assert qs.info("q")["oldest_ready_at"] is not None
        assert meta.in_progress == 0
        assert _gauges(qs) == (3, 0)
    assert takes == []


def test_counts_read_no_log_while_every_holder_lives(
    tmp_path: Path, holders: list[Holder], scans: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    d = str(tmp_path)
    _put(d, 20)
    holders.append(Holder(d, 3))
    holders.append(Holder(d, 3))
    probes: list[str] = []
    real_probe = slab_mod.owners._Owners.probe

    def spy(self: slab_mod.owners._Owners, path: str) -> int:
        probes.append(path)
        return int(real_probe(self, path))

    monkeypatch.setattr(slab_mod.owners._Owners, "probe", spy)
    with Queues(d, serializer="raw") as qs:
        for _ in range(200):
            assert _gauges(qs) == (14, 6)
            qs.info("q")
            qs.peek("q", 20)
        assert scans == []  # the holders' takes noted the earliest deadline
        assert len(probes) <= 2 * 2  # each holder's file, at most twice in the run
