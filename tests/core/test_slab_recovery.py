"""Recovery of the slab backend from torn writes, damaged bytes and crashes.

Each case damages real slab files (or kills a real process at a named step)
and checks that every sound entry survives, the damaged one is never
delivered, the damage is counted, and the queue keeps working.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from queuecore import Queues
from queuecore.slab import HEADER_SIZE, SLAB_HEADER_SIZE, _align

STRESS = bool(os.environ.get("DQ_STRESS"))


def fill(d: Path, n: int = 5, size: int = 40) -> list[tuple[int, int]]:
    """n messages of `size` bytes in topic q; returns (start, end) of each
    entry's bytes (the padding after them is checked by nothing)."""
    with Queues(str(d), fsync_put=False) as qs:
        for i in range(n):
            qs.put("q", {"i": i, "pad": "x" * size})
    spans = []
    off = SLAB_HEADER_SIZE
    data = (d / "q" / "m000000000001.slab").read_bytes()
    import struct

    for _ in range(n):
        plen, xlen = struct.unpack_from("<II", data, off + 4)
        end = off + _align(HEADER_SIZE + plen + xlen)
        spans.append((off, off + HEADER_SIZE + plen + xlen))
        off = end
    return spans


def drain(d: Path) -> tuple[list[int], dict[str, int], dict]:
    with Queues(str(d), fsync_put=False) as qs:
        got = []
        while (t := qs.take("q", timeout=0)) is not None:
            assert t.value["pad"].startswith("x")
            got.append(t.value["i"])
            t.complete()
        assert qs.put("q", {"i": 99, "pad": "x"}) > 0  # still works
        return got, qs.stats()["q"], qs.info("q")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[int, int]]]:
    d = tmp_path_factory.mktemp("pristine") / "queues"
    return d, fill(d)


def damaged_copy(tmp_path: Path, pristine: tuple[Path, list[tuple[int, int]]], name: str) -> Path:
    d = tmp_path / name
    shutil.copytree(pristine[0], d)
    return d


@pytest.mark.parametrize("mode", ["truncate", "zero", "garbage"])
def test_torn_tail_every_byte(tmp_path: Path, pristine, mode: str) -> None:
    spans = pristine[1]
    start, end = spans[-1]
    step = 1 if STRESS else 7
    rng = random.Random(1)
    for cut in range(start, end, step):
        d = damaged_copy(tmp_path, pristine, f"{mode}-{cut}")
        slab = d / "q" / "m000000000001.slab"
        with open(slab, "r+b") as fh:
            if mode == "truncate":
                fh.truncate(cut)
            else:
                fh.seek(cut)
                fh.write(bytes(end - cut) if mode == "zero" else rng.randbytes(end - cut))
        got, stats, info = drain(d)
        assert got[:4] == [0, 1, 2, 3], (mode, cut)
        assert 4 not in got  # the damaged entry is never delivered
        assert info["dropped"] == 1, (mode, cut)
        assert stats["ready"] == 1 and stats["in_progress"] == 0
        shutil.rmtree(d)


def test_middle_damage_keeps_later_entries(tmp_path: Path, pristine) -> None:
    spans = pristine[1]
    for victim in range(len(spans) - 1):
        for mode in ("zero", "garbage", "header"):
            d = damaged_copy(tmp_path, pristine, f"mid-{victim}-{mode}")
            slab = d / "q" / "m000000000001.slab"
            start, end = spans[victim]
            with open(slab, "r+b") as fh:
                if mode == "header":
                    fh.seek(start + 4)
                    fh.write(b"\xff\xff\xff\x7f")  # a huge payload length
                else:
                    fh.seek(start)
                    fh.write(
                        bytes(end - start)
                        if mode == "zero"
                        else random.Random(victim).randbytes(end - start)
                    )
            with Queues(str(d), fsync_put=False) as qs:
                report = qs.check()
                assert not report["ok"] and report["problems"], (victim, mode)
            got, stats, info = drain(d)
            assert got == [i for i in range(5) if i != victim], (victim, mode)
            assert info["dropped"] == 1
            shutil.rmtree(d)


def test_bit_flips_are_detected(tmp_path: Path, pristine) -> None:
    """Flip one bit in the bytes of an entry covered by its checks: either the
    entry is dropped (immutable part) or read as ready again (status part);
    never a changed value, never a loss of another entry."""
    spans = pristine[1]
    start, end = spans[2]
    positions = list(range(start, start + 76)) + list(range(start + HEADER_SIZE, end - 8))
    if not STRESS:
        positions = positions[::5]
    for pos in positions:
        bit = pos % 8
        d = damaged_copy(tmp_path, pristine, f"flip-{pos}")
        slab = d / "q" / "m000000000001.slab"
        with open(slab, "r+b") as fh:
            fh.seek(pos)
            b = fh.read(1)[0]
            fh.seek(pos)
            fh.write(bytes([b ^ (1 << bit)]))
        with Queues(str(d), fsync_put=False) as qs:
            assert qs.check()["problems"], pos  # detected
        got, stats, info = drain(d)
        assert [0, 1, 3, 4] == [i for i in got if i != 2], pos
        if 2 not in got:
            assert info["dropped"] == 1, pos
        shutil.rmtree(d)


def test_check_fix_repairs(tmp_path: Path, pristine) -> None:
    d = damaged_copy(tmp_path, pristine, "fix")
    start, end = pristine[1][1]
    with open(d / "q" / "m000000000001.slab", "r+b") as fh:
        fh.seek(start + HEADER_SIZE)
        fh.write(b"\x00\x01\x02")
    with Queues(str(d), fsync_put=False) as qs:
        first = qs.check()
        assert not first["ok"]
        fixed = qs.check(fix=True)
        assert fixed["fixed"]
        assert qs.check()["ok"]
        assert qs.stats()["q"]["ready"] == 4


def test_lost_meta_is_rebuilt(tmp_path: Path, pristine) -> None:
    d = damaged_copy(tmp_path, pristine, "nometa")
    (d / "q" / "meta").unlink()
    got, stats, _ = drain(d)
    assert got == [0, 1, 2, 3, 4]


def test_damaged_slab_header_salt(tmp_path: Path, pristine) -> None:
    d = damaged_copy(tmp_path, pristine, "salt")
    with open(d / "q" / "m000000000001.slab", "r+b") as fh:
        fh.seek(16)  # the first copy of the salt
        b = fh.read(1)[0]
        fh.seek(16)
        fh.write(bytes([b ^ 4]))
    got, _, _ = drain(d)
    assert got == [0, 1, 2, 3, 4]


CRASHER = textwrap.dedent(
    """
    import sys
    from queuecore import Queues
    qs = Queues(sys.argv[1], fsync_put=True, slab_size=4096)
    action = sys.argv[2]
    if action == "put":
        for i in range(30):
            qs.put("q", {"i": i, "pad": "x" * 200})
            print(i, flush=True)
    else:
        while True:
            t = qs.take("q", timeout=0)
            if t is None:
                break
            getattr(t, action)() if action != "retry" else t.retry(delay=0)
            print(t.value["i"], flush=True)
    """
)

CRASH_POINTS = [
    ("put", "append.before_header"),
    ("put", "append.after_header"),
    ("put", "put.before_counters"),
    ("put", "put.after_return"),
    ("put", "slab.before_rename"),
    ("complete", "complete.after_status"),
    ("complete", "slab.before_delete"),
    ("retry", "move.after_append"),
    ("retry", "move.after_status"),
    ("fail", "move.after_append"),
]


@pytest.mark.parametrize("action,point", CRASH_POINTS)
def test_named_crash_points(tmp_path: Path, action: str, point: str) -> None:
    d = tmp_path / "queues"
    script = tmp_path / "crasher.py"
    script.write_text(CRASHER)
    env = {**os.environ, "DQ_CRASH_AT": point}
    if action != "put":
        with Queues(str(d), fsync_put=True, slab_size=4096) as qs:
            qs.put_many("q", [{"i": i, "pad": "x" * 200} for i in range(30)])
    proc = subprocess.run(
        [sys.executable, str(script), str(d), action],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == -9, (proc.returncode, proc.stderr)
    acked = [int(x) for x in proc.stdout.split()]
    with Queues(str(d), fsync_put=False) as qs:
        stats = qs.stats()["q"]
        assert min(stats.values()) >= 0
        waiting = {}
        for state in ("ready", "in_progress", "failed", "delayed"):
            for m in qs.messages("q", state=state, limit=1000):
                waiting.setdefault(m.value["i"], []).append(state)
        assert all(len(v) == 1 for v in waiting.values()), waiting
        if action == "put":
            # every acknowledged put is there; no half message is visible
            assert set(acked) <= set(waiting)
            assert set(waiting) <= set(range(30))
        elif action == "complete":
            # nothing completed comes back; everything else is still there
            assert set(waiting) | set(acked) >= set(range(30)) - {len(acked)}
            assert not set(acked) & set(waiting)
        else:
            # nothing lost: every message is still somewhere
            assert set(waiting) == set(range(30)), (sorted(waiting), acked)
        assert stats["ready"] + stats["in_progress"] + stats["failed"] + stats["delayed"] == len(
            waiting
        )
        assert qs.check()["ok"], qs.check()


# -- after a kill -9 and after a reboot ---------------------------------------------

KILLED = textwrap.dedent(
    """
    import os, signal, sys
    from queuecore import Queues
    qs = Queues(sys.argv[1], fsync_put=False)
    qs.put_many("q", [{"i": i, "pad": "x"} for i in range(10)])
    held = [qs.take("q", timeout=0) for _ in range(3)]
    assert held[0].complete()
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def _counts(qs: Queues) -> dict[str, int]:
    s = qs.stats()["q"]
    return {k: s[k] for k in ("enqueued", "ready", "in_progress", "completed")}


def _meta_field(d: Path, name: str, value: int) -> None:
    from queuecore.slab import _Meta

    field = getattr(_Meta, name)
    with open(d / "q" / "meta", "r+b") as fh:
        fh.seek(field.offset)
        fh.write(value.to_bytes(field.size, "little"))


def test_a_kill9_in_the_same_boot_needs_no_rebuild(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The page cache holds the counters and the slabs together: after a
    kill -9 the next opener trusts the counters (an open stays fast with
    millions of messages waiting), and they are exact."""
    d = tmp_path / "queues"
    subprocess.run([sys.executable, "-c", KILLED, str(d)], check=False)
    from queuecore.slab import _Topic

    rebuilds: list[str] = []
    real = _Topic._recount
    monkeypatch.setattr(_Topic, "_recount", lambda t: (rebuilds.append(t.name), real(t))[1])
    with Queues(str(d), fsync_put=False, visibility_timeout=30) as qs:
        # The dead process's two leases count as ready at once: stats()
        # looks for dead owners (a look, not a rebuild).
        assert _counts(qs) == {"enqueued": 10, "ready": 9, "in_progress": 0, "completed": 1}
        assert rebuilds == []
        assert not qs.check()["problems"]
        got = []
        while len(got) < 9 and (t := qs.take("q", timeout=10)) is not None:
            got.append(t.value["i"])
            assert t.complete()
        assert sorted(got) == list(range(1, 10))


def test_after_a_reboot_the_counters_are_rebuilt(tmp_path: Path) -> None:
    """Another boot (an OS crash, a power loss) means the slabs on disk may
    be newer or older than the counters: the first opener rebuilds them."""
    d = tmp_path / "queues"
    subprocess.run([sys.executable, "-c", KILLED, str(d)], check=False)
    _meta_field(d, "ready", 999)  # a stale counter, as a power loss could leave
    with Queues(str(d), fsync_put=False) as qs:
        # Same boot: trusted (999, plus the dead process's two leases,
        # which stats() counts back as ready).
        assert qs.stats()["q"]["ready"] == 999 + 2
    _meta_field(d, "ready", 999)
    _meta_field(d, "clean", 0)  # the power went before anyone closed it ...
    _meta_field(d, "boot_lo", 12345)  # ... and the machine came back in another boot
    with Queues(str(d), fsync_put=False) as qs:
        assert _counts(qs) == {"enqueued": 10, "ready": 9, "in_progress": 0, "completed": 1}
        assert not qs.check()["problems"]


def test_a_rebuild_cut_short_is_started_again(tmp_path: Path) -> None:
    d = tmp_path / "queues"
    with Queues(str(d), fsync_put=False) as qs:
        qs.put_many("q", ["a", "b", "c"])
    _meta_field(d, "ready", 999)
    _meta_field(d, "needs_recount", 1)  # what a rebuild leaves until it is done
    with Queues(str(d), fsync_put=False) as qs:
        assert qs.stats()["q"]["ready"] == 3
