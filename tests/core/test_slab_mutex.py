"""The topic's lock as a robust process-shared mutex in the meta file.

Real processes are killed while they hold it (in a change and outside
one), a mutex left looking held by a dead machine is met by the next first
opener, and DQ_LOCKING=flock makes a directory use flocks, which every
later process follows."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from queuecore import Queues, _mutex
from queuecore import slab as slab_mod

from .conftest import HAS_SLAB, NO_SLAB

pytestmark = [
    pytest.mark.skipif(not HAS_SLAB, reason=NO_SLAB),
    pytest.mark.skipif(not _mutex.AVAILABLE, reason="no robust process-shared mutexes here"),
]


def _kind(d: str, topic: str) -> bytes:
    with open(os.path.join(d, topic, "meta"), "rb") as fh:
        fh.seek(slab_mod.LOCK_KIND_OFF)
        return fh.read(len(_mutex.KIND))


def _run(code: str, env: dict[str, str] | None = None, timeout: float = 30) -> str:
    """Run ``code`` in a fresh process; a hang (a lock never given back)
    fails the test instead of hanging it."""
    run = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                         text=True, timeout=timeout, env={**os.environ, **(env or {})})
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout


def test_a_topic_is_locked_with_a_mutex_by_default(tmp_path: Path) -> None:
    d = str(tmp_path)
    with Queues(d, serializer="raw") as qs:
        qs.put("q", b"x")
        assert qs._backend._topics["q"].mutex  # type: ignore[attr-defined]
    assert _kind(d, "q") == _mutex.KIND


def test_a_process_killed_while_it_holds_the_lock_outside_a_change(tmp_path: Path) -> None:
    d = str(tmp_path)
    with Queues(d, serializer="raw") as qs:
        qs.put("q", b"before")
        holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
            import time
            from queuecore import Queues
            qs = Queues({d!r}, serializer="raw")
            qs.put("q", b"holder")
            t = qs._backend._topics["q"]
            with t.locked():
                print("held", flush=True)
                time.sleep(60)
            """)], stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
            holder.kill()
            holder.wait(timeout=10)
            assert holder.returncode == -signal.SIGKILL
        finally:
            if holder.poll() is None:
                holder.kill()
            if holder.stdout is not None:
                holder.stdout.close()
        # Another process, and this one, get the lock (EOWNERDEAD: taken over).
        out = _run(f"""
            from queuecore import Queues
            with Queues({d!r}, serializer="raw") as qs:
                qs.put("q", b"after")
                print(qs.stats()["q"]["ready"])
            """)
        assert out.split() == ["3"]
        assert [m.value for m in qs.messages("q")] == [b"before", b"holder", b"after"]


def test_a_process_killed_in_the_middle_of_a_change_holding_the_mutex(tmp_path: Path) -> None:
    d = str(tmp_path)
    with Queues(d, serializer="raw") as qs:
        qs.put("q", b"one")
        env = {"DQ_CRASH_AT": "append.after_header"}
        code = f"""
            from queuecore import Queues
            Queues({d!r}, serializer="raw").put("q", b"two")
            """
        run = subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                             env={**os.environ, **env}, timeout=30)
        assert run.returncode == -signal.SIGKILL
        out = _run(f"""
            from queuecore import Queues
            with Queues({d!r}, serializer="raw") as qs:
                qs.put("q", b"three")
                print(qs.stats()["q"]["ready"], qs.check()["ok"])
            """)
        # The killed put's entry was whole: adopted (never half, never lost).
        ready, ok = out.split()
        assert ok == "True" and int(ready) in (2, 3)
        values = [m.value for m in qs.messages("q")]
        assert values[0] == b"one" and values[-1] == b"three"


def test_a_mutex_left_looking_held_is_made_new_by_the_next_first_opener(tmp_path: Path) -> None:
    """After a power loss the meta file can hold a mutex 'held' by a thread
    of a machine that is gone (no kernel will ever mark it dead): the first
    process to open the topic makes it new instead of waiting forever."""
    d = str(tmp_path)
    with Queues(d, serializer="raw") as qs:
        qs.put("q", b"x")
    with open(os.path.join(d, "q", "meta"), "r+b") as fh:
        fh.seek(slab_mod.MUTEX_OFF)
        fh.write((424242).to_bytes(4, "little"))  # __lock: held by thread 424242
        fh.seek(slab_mod.MUTEX_OFF + 8)
        fh.write((424242).to_bytes(4, "little"))  # __owner
    out = _run(f"""
        from queuecore import Queues
        with Queues({d!r}, serializer="raw") as qs:
            qs.put("q", b"y")
            print(qs.stats()["q"]["ready"])
        """, timeout=20)
    assert out.split() == ["2"]


def test_dq_locking_flock_is_followed_by_every_later_process(tmp_path: Path) -> None:
    d = str(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys
        from queuecore import Queues
        qs = Queues({d!r}, serializer="raw")
        qs.put("q", b"first")  # the first opener: chooses flock
        print("open", flush=True)
        sys.stdin.read()
        for i in range(300):
            qs.put("q", b"a%d" % i)
        qs.close()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "DQ_LOCKING": "flock"})
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        assert _kind(d, "q") == bytes(len(_mutex.KIND))
        with Queues(d, serializer="raw") as qs:  # no DQ_LOCKING here: follows
            qs.put("q", b"second")
            assert not qs._backend._topics["q"].mutex  # type: ignore[attr-defined]
            assert holder.stdin is not None
            holder.stdin.close()  # both put at once now
            for i in range(300):
                qs.put("q", b"b%d" % i)
            assert holder.wait(timeout=30) == 0
            assert qs.stats()["q"]["ready"] == 602
            ids = [m.id for m in qs.messages("q", limit=1000)]
            assert ids == list(range(1, 603))
    finally:
        if holder.poll() is None:
            holder.kill()
        if holder.stdout is not None:
            holder.stdout.close()
    # Everyone closed: the next first opener chooses again (a mutex).
    with Queues(d, serializer="raw") as qs:
        qs.put("q", b"z")
    assert _kind(d, "q") == _mutex.KIND


def test_ctrl_c_while_waiting_for_the_lock_interrupts_and_leaves_it_free(tmp_path: Path) -> None:
    """A put waits behind another process holding the lock for 3 s; Ctrl-C
    after 0.3 s interrupts it at once (the wait is in slices, so Python runs
    the handler), and whether the interrupt came before or just after the
    mutex was taken, nothing is left held: another process puts, and this
    one closes."""
    d = str(tmp_path)
    out = _run(f"""
        import os, signal, subprocess, sys, textwrap, threading, time
        from queuecore import Queues
        d = {d!r}
        qs = Queues(d, serializer="raw")
        qs.put("q", b"a")
        holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent('''
            import sys, time
            from queuecore import Queues
            qs = Queues(sys.argv[1], serializer="raw")
            t = qs._backend._get("q")
            with t.locked():
                print("held", flush=True)
                time.sleep(3)
            ''').strip(), d], stdout=subprocess.PIPE, text=True)
        assert holder.stdout.readline().strip() == "held"
        threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
        started = time.monotonic()
        try:
            qs.put("q", b"b")
            print("not interrupted")
        except KeyboardInterrupt:
            print("interrupted after %.1f s" % (time.monotonic() - started))
        holder.wait()
        other = subprocess.run([sys.executable, "-c",
            "import sys; from queuecore import Queues; q = Queues(sys.argv[1], serializer='raw'); "
            "q.put('q', b'c'); q.close()", d], timeout=10)
        print("other", other.returncode)
        qs.close()
        print("closed", Queues(d, serializer="raw").stats()["q"]["ready"])
        """)
    lines = out.splitlines()
    assert lines[0].startswith("interrupted after "), lines
    assert float(lines[0].split()[2]) < 2.5  # not only once the holder let go, after 3 s
    assert lines[1:] == ["other 0", "closed 2"]


def test_close_from_a_signal_handler_inside_a_change_of_the_same_thread(tmp_path: Path) -> None:
    d = str(tmp_path)
    out = _run(f"""
        import os, signal
        from queuecore import Queues
        qs = Queues({d!r}, serializer="raw")
        qs.put("q", b"a")
        t = qs._backend._topics["q"]
        signal.signal(signal.SIGUSR1, lambda *a: qs.close())
        try:
            with t.locked():
                os.kill(os.getpid(), signal.SIGUSR1)  # the handler closes, with the lock held here
                print("handler returned", flush=True)
        except (OSError, ValueError):
            pass
        other = Queues({d!r}, serializer="raw")
        other.put("q", b"b")  # the lock was let go
        print(other.stats()["q"]["ready"])
        """, timeout=20)
    assert out.splitlines()[0] == "handler returned"
    assert out.splitlines()[-1] == "2"
