"""A full disk and failing fsyncs.

The full disk is real: a 2 MiB tmpfs mounted for the test (we run as root;
without the right to mount, an ENOSPC from ``os.posix_fallocate`` is
injected instead). A producer process fills it while a ballast writer eats
the rest; every failure must be a typed ``DiskFull`` raised before the put
is acknowledged, the process must never die of SIGBUS, nothing acknowledged
is lost, and puts work again once space is freed.

A failing fsync cannot be produced for real here, so ``os.fdatasync`` is
patched to raise EIO (the only mock: the fault itself).
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from queuecore import DiskFull, Queues, StorageError
from tests.reliability import report
from tests.reliability.ledger import (
    DEADLINE,
    ROOT,
    WORKER,
    LedgerFile,
    analyse,
    child_env,
    final_drain,
    make_value,
)

OPTIONS = {"fsync_put": True, "slab_size": 64 * 1024}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path | None]:
    """A 2 MiB tmpfs, unmounted afterwards; None when mounting is not allowed."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                          capture_output=True)
    if done.returncode != 0:
        yield None
        return
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
        if os.path.ismount(mnt):
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def eat_space(path: Path, limit: int | None = None) -> int:
    """Write a ballast file until ENOSPC (or ``limit`` bytes); returns what it wrote."""
    written = 0
    chunk = b"\xaa" * 16384
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        while limit is None or written < limit:
            try:
                written += os.write(fd, chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
    finally:
        os.close(fd)
    return written


def test_full_disk_during_puts(tmp_path: Path, small_disk: Path | None) -> None:
    if small_disk is None:
        pytest.skip("cannot mount a tmpfs here: see test_full_disk_fault_hook")
    location = str(small_disk / "queues")
    ledgers = tmp_path / "ledgers"
    ledgers.mkdir()
    ballast = small_disk / "ballast"
    eat_space(ballast, 1024 * 1024)  # half the disk gone before the queue starts
    args = {
        "location": location, "options": OPTIONS, "ledger": str(ledgers / "fill.log"),
        "tag": "fill", "seed": 6, "stop": str(tmp_path / "stop"), "topic": "q", "full": 5,
        "max_size": 20_000, "deadline": DEADLINE,
    }
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), "fill", json.dumps(args)], cwd=ROOT,
        env=child_env(location, OPTIONS, ledgers, tmp_path), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    # Once it has put a few, fill the rest while it puts: the disk runs out
    # under its feet.
    deadline = time.monotonic() + DEADLINE
    fill_log = ledgers / "fill.log"
    while proc.poll() is None and (
        not fill_log.exists() or fill_log.read_text().count("ack ") < 10
    ):
        assert time.monotonic() < deadline, "the producer never put 10 messages"
        time.sleep(0.005)
    while proc.poll() is None:
        eat_space(ballast)
        assert time.monotonic() < deadline, "the producer never met the full disk"
        time.sleep(0.01)
    out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    assert proc.returncode != -signal.SIGBUS, out
    assert proc.returncode == 0, out
    lines = (ledgers / "fill.log").read_text().splitlines()
    full = [ln for ln in lines if ln.startswith("full ")]
    acked = [ln for ln in lines if ln.startswith("ack ")]
    assert len(full) == 5 and acked

    # Still full: a put that needs a new slab fails, typed, in this process too.
    with Queues(location, **OPTIONS) as qs:
        with pytest.raises(DiskFull):
            qs.put("q", make_value("fill.big", 200_000, random.Random(1)))
    ballast.unlink()  # space freed: puts work again
    led = LedgerFile(ledgers / "after.log")
    with Queues(location, **OPTIONS) as qs:
        for i in range(3):
            led.write("try", "q", f"after.{i}")
            mid = qs.put("q", make_value(f"after.{i}", 100_000, random.Random(i)))
            led.write("ack", "q", mid, f"after.{i}")
    led.close()
    final_drain(location, OPTIONS, ledgers / "drain.log", ["q"])
    v = analyse(ledgers)
    assert v.ok(), v.explain()
    # A put that raised DiskFull was rolled back: never delivered.
    full_keys = {ln.split()[2] for ln in full}
    handled = {ln.split()[3] for ln in (ledgers / "drain.log").read_text().splitlines()
               if ln.startswith("got ")}
    assert not full_keys & handled
    with Queues(location, **OPTIONS) as qs:
        assert qs.check()["ok"]
    report.record("disk_full", acknowledged=v.acknowledged, handled=v.handled, lost=v.lost,
                  disk_full_errors=len(full))


def test_full_disk_fault_hook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a small filesystem: ENOSPC from posix_fallocate (the reservation
    of a new slab) is a DiskFull before any acknowledgement."""
    location = str(tmp_path / "queues")
    with Queues(location, **OPTIONS) as qs:
        acked = [qs.put("q", {"i": i, "pad": "x" * 5000}) for i in range(5)]
        real = os.posix_fallocate

        def no_space(fd: int, offset: int, length: int) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "posix_fallocate", no_space)
        with pytest.raises(DiskFull):
            for i in range(5, 100):  # until a new slab is needed
                acked.append(qs.put("q", {"i": i, "pad": "x" * 5000}))
        monkeypatch.setattr(os, "posix_fallocate", real)
        assert not any(n.endswith(".tmp") for n in os.listdir(Path(location) / "q"))
        acked.append(qs.put("q", {"i": 100, "pad": ""}))
        got = []
        while (t := qs.take("q", timeout=0)) is not None:
            got.append(t.id)
            assert t.complete()
        assert got == acked
        assert qs.check()["ok"]


def _eio(fd: int) -> None:
    raise OSError(errno.EIO, "Input/output error")


def test_fsync_eio_is_a_storage_error_and_never_retried_into_success(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Queues(str(tmp_path / "queues"), fsync_put=True) as qs:
        qs.put("q", "before")
        real = os.fdatasync
        monkeypatch.setattr(os, "fdatasync", _eio)
        with pytest.raises(StorageError) as info:
            qs.put("q", "during")
        assert not isinstance(info.value, DiskFull)
        monkeypatch.setattr(os, "fdatasync", real)
        backend = qs.backend
        t = backend._get("q")  # type: ignore[attr-defined]
        failed_op = int(t.meta.op_seq)
        # Asking again for the same write must not report success: the
        # kernel may have dropped the pages the failed fsync did not write.
        with pytest.raises(StorageError):
            backend._sync_topic(t, failed_op)  # type: ignore[attr-defined]
        # Later writes are synced afresh and succeed.
        assert qs.put("q", "after") > 0


def test_b2_a_write_in_a_failed_fsync_range_never_reports_success(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The group-commit race, one step at a time: thread B appended its
    message and waits for the group commit; thread A's fsync, which covers B's
    write, fails with EIO; thread C's later fsync succeeds (the kernel
    reported the error once and may have dropped B's pages); then B checks
    whether its write is on disk."""
    with Queues(str(tmp_path / "queues"), fsync_put=True) as qs:
        backend = qs.backend
        t = backend._get("q")  # type: ignore[attr-defined]
        with t.locked():  # B: appended, not yet synced
            backend._append_ready(t, [b"\xa1B"])  # type: ignore[attr-defined]
            op_b = int(t.meta.op_seq)
        monkeypatch.setattr(os, "fdatasync", _eio)
        with pytest.raises(StorageError):
            qs.put("q", "A")  # A's group commit covers B's write and fails
        monkeypatch.undo()
        qs.put("q", "C")  # C's fsync succeeds
        with pytest.raises(StorageError):
            backend._sync_topic(t, op_b)  # type: ignore[attr-defined]


def test_fsync_enospc_is_disk_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Queues(str(tmp_path / "queues"), fsync_put=True) as qs:
        qs.put("q", "before")

        def enospc(fd: int) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "fdatasync", enospc)
        with pytest.raises(DiskFull):
            qs.put("q", "during")
        monkeypatch.undo()
