"""Leases against clocks and limits, on the slab backend (found by a review
of the engine; each test failed before its fix): a clock stepped back, a
complete whose lease ran out, non-finite options, a waiting take in a
process with more than 1024 descriptors, an owner file that cannot be
opened."""

from __future__ import annotations

import errno
import os
import resource
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from queuecore import InvalidOption, Queues

from .conftest import HAS_SLAB, NO_SLAB

pytestmark = pytest.mark.skipif(not HAS_SLAB, reason=NO_SLAB)


def test_leases_of_a_dead_owner_come_back_after_the_clock_was_stepped_back(tmp_path: Path) -> None:
    """A process whose clock ran an hour ahead took two messages and died;
    the clock is right again: its leases are reclaimed at once, not in an
    hour (the last look for dead owners is 'in the future')."""
    d = str(tmp_path)
    with Queues(d, serializer="raw") as qs:
        qs.put_many("q", [b"1", b"2"])
    code = textwrap.dedent(
        f"""
        import os, time
        import queuecore.slab as slab
        real = time.time
        time.time = lambda: real() + 3600  # this process's clock is an hour ahead (slab._now reads it)
        from queuecore import Queues
        qs = Queues({d!r}, serializer="raw")
        assert len(qs.take_many("q", 2, timeout=0)) == 2
        assert qs.take("q", timeout=0) is None  # looks for dead owners: 'last look' is an hour ahead
        os.kill(os.getpid(), 9)
        """
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == -9
    with Queues(d, serializer="raw") as qs:
        got = qs.take_many("q", 2, timeout=5)
        assert sorted(t.id for t in got) == [1, 2]
        assert qs.complete_many(got) == 2


def test_a_complete_after_the_lease_ran_out_never_fails_the_message(tmp_path: Path) -> None:
    with Queues(str(tmp_path), serializer="raw", visibility_timeout=0.05) as qs:
        qs.put("q", b"a")
        task = qs.take("q", timeout=0)
        assert task is not None
        time.sleep(0.1)
        assert task.complete() is False  # the lease ran out: not completed ...
        st = qs.stats()["q"]
        assert (st["ready"], st["failed"], st["completed"]) == (1, 0, 0)  # ... and never failed
        again = qs.take("q", timeout=0)
        assert again is not None and again.id == task.id and again.complete()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("visibility_timeout", float("nan")),
        ("visibility_timeout", float("inf")),
        ("visibility_timeout", 0),
        ("visibility_timeout", "300"),
        ("slab_size", float("nan")),
        ("slab_size", 1.5e6 + 0.5),
        ("max_queue_size", "x"),
        ("max_queue_size", 0),
        ("fsync_interval", float("nan")),
        ("fsync_threshold", True),
        ("max_message_size", -1),
    ],
)
def test_numeric_options_out_of_range_are_refused(tmp_path: Path, name: str, value: object) -> None:
    with pytest.raises(InvalidOption) as err:
        Queues(str(tmp_path), **{name: value})
    assert err.value.name == name


def test_a_waiting_take_works_with_descriptors_past_1024(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1300:
        pytest.skip(f"the hard limit of open files is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1300), hard))
    filler = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        with Queues(str(tmp_path), serializer="raw") as qs:
            assert qs.take("q", timeout=0.05) is None  # waited on a descriptor past 1024
            th = threading.Timer(0.1, qs.put, ("q", b"x"))
            th.start()
            task = qs.take("q", timeout=10)
            th.join()
            assert task is not None and task.value == b"x" and task.complete()
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_an_owner_file_that_cannot_be_opened_keeps_its_lease(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EMFILE or EACCES on another process's owner file: the lease is kept
    (never taken away on doubt), and the take raises no bare OSError."""
    d = str(tmp_path)
    with Queues(d, serializer="raw", visibility_timeout=60) as other:
        other.put_many("q", [b"a", b"b"])
        held = other.take("q", timeout=0)
        assert held is not None
        with Queues(d, serializer="raw") as qs:
            real_open = os.open

            def failing_open(path: str, flags: int, *args: int) -> int:
                if ".owners" in str(path) and not str(path).endswith(f"{qs.backend._owner():016x}.lock"):  # type: ignore[attr-defined]
                    raise OSError(errno.EMFILE, "Too many open files")
                return real_open(path, flags, *args)

            qs.backend._owner()  # type: ignore[attr-defined]
            monkeypatch.setattr(os, "open", failing_open)
            got = [qs.take("q", timeout=0) for _ in range(2)]
            time.sleep(0.6)
            got.append(qs.take("q", timeout=0))  # a look for dead owners happens here
            monkeypatch.undo()
            assert [t.value if t else None for t in got] == [b"b", None, None]
            assert held.complete()
