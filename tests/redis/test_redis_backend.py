"""The Redis backend's own tests, against a real server: what the shared
conformance suite (tests/core) cannot see from the outside — the key layout,
the consumer group, leases across processes and machines' clocks, fork
safety, check() repairs, heartbeats — and several consumer processes
sharing one topic with nothing lost."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from queuecore import Queues, identity
from queuecore.backend import Record
from queuecore.defaults import MAX_ORIGINS
from queuecore.errors import QueueFull, StorageError
from queuecore.redis_backend import BATCH, GROUP, HEARTBEAT_TTL, RedisBackend

WORKER = str(Path(__file__).with_name("worker.py"))


def keys_of(rclient: Any, prefix: str) -> list[str]:
    return sorted(k.decode() for k in rclient.scan_iter(match=f"{prefix}:*", count=1000))


# -- layout ---------------------------------------------------------------------


def test_every_key_starts_with_the_prefix_and_a_topic_shares_one_hash_tag(
    qs: Queues, rclient: Any, prefix: str
) -> None:
    qs.put("orders", 1)
    qs.put("other", 2)
    task = qs.take("orders", timeout=0)
    assert task is not None
    task.fail("x")
    qs.backend.write_heartbeat("w1", {"pid": 1})
    keys = keys_of(rclient, prefix)
    assert keys and all(k.startswith(prefix + ":") for k in keys)
    topic_keys = [k for k in keys if "{orders}" in k]
    assert {f"{prefix}:{{orders}}:stream", f"{prefix}:{{orders}}:meta"} <= set(topic_keys)
    # one Cluster slot per topic: every key of the topic carries its hash tag
    assert all(k.startswith(f"{prefix}:{{orders}}:") for k in topic_keys)
    assert rclient.smembers(f"{prefix}:topics") == {b"orders", b"other"}


def test_a_small_message_stays_a_compact_hash_whatever_its_producer(
    qs: Queues, rclient: Any, prefix: str
) -> None:
    # A message names its producer by a digest; the topic keeps the origin
    # once, so a long host or command does not turn every small message's
    # hash from a listpack into a hashtable (several times its memory).
    long = {"host": "h" * 64, "pid": 4242, "cmd": "c" * identity.MAX_CMD}
    (mid,) = qs.backend.restore("q1", [Record(0, b"small", "ready", 0, time.time(), origin=long)])
    own = qs.put("q1", "mine")
    assert rclient.object("encoding", f"{prefix}:{{q1}}:m:{mid}") == b"listpack"
    assert qs.peek("q1", mid).origin == long and qs.peek("q1", own).origin == identity.current()
    assert rclient.hlen(f"{prefix}:{{q1}}:origins") == 2
    # A message whose hash holds the origin's JSON itself still reads.
    rclient.hset(f"{prefix}:{{q1}}:m:{own}", "o", json.dumps({"host": "old", "pid": 1}))
    assert qs.peek("q1", own).origin == {"host": "old", "pid": 1}


def test_a_topic_keeps_a_bounded_number_of_producers(qs: Queues, rclient: Any, prefix: str) -> None:
    now = time.time()
    for start in range(0, MAX_ORIGINS + 50, 1000):
        batch = [Record(0, b"x", "ready", 0, now, origin={"host": "h", "pid": n})
                 for n in range(start, min(start + 1000, MAX_ORIGINS + 50))]
        qs.backend.restore("q1", batch)
    assert rclient.hlen(f"{prefix}:{{q1}}:origins") == MAX_ORIGINS
    # The producer putting now is always kept.
    mid = qs.put("q1", "now")
    assert qs.peek("q1", mid).origin == identity.current()
    assert rclient.hlen(f"{prefix}:{{q1}}:origins") == MAX_ORIGINS
    known = sum(1 for m in qs.messages("q1", limit=MAX_ORIGINS + 100) if m.origin)
    assert MAX_ORIGINS - 50 <= known <= MAX_ORIGINS + 1


def test_ids_are_a_per_topic_counter_not_stream_ids(qs: Queues, open_queues: Any) -> None:
    assert qs.put_many("a", [1, 2, 3]) == [1, 2, 3]
    assert qs.put("b", 1) == 1
    other = open_queues()
    assert other.put("a", 4) == 4  # the counter lives in Redis, shared
    qs.purge("a")
    assert qs.put("a", 5) == 5  # ids are never reused


def test_take_uses_the_consumer_group_with_this_process_as_consumer(
    qs: Queues, rclient: Any, prefix: str
) -> None:
    qs.put("t", "x")
    task = qs.take("t", timeout=0)
    assert task is not None
    stream = f"{prefix}:{{t}}:stream"
    pending = rclient.xpending_range(stream, GROUP, "-", "+", 10)
    backend = qs.backend
    assert isinstance(backend, RedisBackend)
    assert [p["consumer"].decode() for p in pending] == [backend.owner]
    assert task.complete()
    assert rclient.xpending(stream, GROUP)["pending"] == 0
    assert rclient.xlen(stream) == 0  # completed entries are deleted, not only acked
    assert not rclient.exists(f"{prefix}:{{t}}:m:1")


# -- leases -------------------------------------------------------------------------


def test_an_expired_lease_is_claimed_by_another_consumer(
    open_queues: Any, rclient: Any, prefix: str
) -> None:
    a = open_queues(visibility_timeout=0.3)
    b = open_queues(visibility_timeout=0.3)
    b.backend._owner = "other-machine:42"  # as if another process took it over
    a.put("t", "job")
    first = a.take("t", timeout=0)
    assert first is not None and first.attempts == 1
    assert b.take("t", timeout=0) is None  # leased
    second = b.take("t", timeout=2)
    assert second is not None and second.id == first.id and second.attempts == 2
    pending = rclient.xpending_range(f"{prefix}:{{t}}:stream", GROUP, "-", "+", 10)
    assert [p["consumer"] for p in pending] == [b"other-machine:42"]
    lease = a.peek("t", first.id).lease
    assert lease is not None and lease.owner == "other-machine:42"
    assert not first.complete()  # the old delivery cannot settle the new one
    assert second.complete()
    assert a.stats()["t"]["completed"] == 1


def test_a_requeued_in_progress_message_refuses_its_old_task(qs: Queues) -> None:
    qs.put("t", 1)
    old = qs.take("t", timeout=0)
    assert old is not None
    qs.requeue("t", old.id)
    new = qs.take("t", timeout=0)
    assert new is not None and new.id == old.id and new.attempts == 2
    assert not old.complete()
    assert new.complete()


def test_lease_deadline_follows_the_server_clock(qs: Queues, rclient: Any) -> None:
    qs2 = Queues(qs.location, prefix=qs.options["prefix"], visibility_timeout=30)
    try:
        qs2.put("t", 1)
        task = qs2.take("t", timeout=0)
        assert task is not None
        sec, usec = rclient.time()
        lease = qs2.peek("t", task.id).lease
        assert lease is not None
        assert abs(lease.deadline - (sec + usec / 1e6 + 30)) < 2
    finally:
        qs2.close()


def test_delayed_retry_wakes_a_waiting_take(qs: Queues) -> None:
    qs.put("t", 1)
    task = qs.take("t", timeout=0)
    assert task is not None and task.retry(delay=0.3, reason="later")
    started = time.monotonic()
    again = qs.take("t", timeout=3)
    waited = time.monotonic() - started
    assert again is not None and again.attempts == 2
    assert 0.2 <= waited < 1.5
    assert [e["reason"] for e in again.errors] == ["later"]


def test_a_waiting_take_wakes_within_milliseconds_of_a_put_from_another_process(
    qs: Queues, redis_url: str, prefix: str, python: str
) -> None:
    got: list[float] = []

    def consume() -> None:
        task = qs.take("t", timeout=10)
        got.append(time.monotonic())
        assert task is not None

    thread = threading.Thread(target=consume)
    thread.start()
    time.sleep(0.3)
    code = (
        "import sys, time; sys.path.insert(0, '.');"
        "from queuecore import Queues;"
        f"qs = Queues({redis_url!r}, prefix={prefix!r}); qs.put('t', 1);"
        "print(time.monotonic())"
    )
    out = subprocess.run(
        [python, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[2],
    )
    put_at = float(out.stdout)
    thread.join(10)
    assert got and got[0] - put_at < 0.2


# -- put and the size limit -----------------------------------------------------------


def test_put_many_is_one_atomic_call_under_the_limit(open_queues: Any) -> None:
    qs = open_queues(max_queue_size=5)
    qs.put_many("t", [1, 2, 3])
    with pytest.raises(QueueFull):
        qs.put_many("t", [4, 5, 6], timeout=0)
    assert qs.stats()["t"]["ready"] == 3
    assert [m.value for m in qs.messages("t")] == [1, 2, 3]
    assert qs.put_many("t", [4, 5], timeout=0) == [4, 5]  # the failed put used no ids


def test_a_full_put_waits_for_room_made_by_another_process(open_queues: Any) -> None:
    producer = open_queues(max_queue_size=1)
    consumer = open_queues(max_queue_size=1)
    producer.put("t", 1)

    def finish_later() -> None:
        time.sleep(0.3)
        task = consumer.take("t", timeout=1)
        assert task is not None and task.complete()

    thread = threading.Thread(target=finish_later)
    thread.start()
    started = time.monotonic()
    assert producer.put("t", 2, timeout=5) == 2
    assert 0.2 < time.monotonic() - started < 2
    thread.join()


def test_counters_stay_exact_under_concurrent_puts_and_takes(open_queues: Any) -> None:
    n_threads, per_thread = 4, 100
    errors: list[BaseException] = []

    def produce() -> None:
        q = open_queues()
        try:
            for i in range(per_thread):
                q.put("t", i)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=produce) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    qs = open_queues()
    done = 0
    while True:
        tasks = qs.take_many("t", 37, timeout=0)
        if not tasks:
            break
        for task in tasks:
            assert task.complete()
            done += 1
    stats = qs.stats()["t"]
    assert done == stats["enqueued"] == stats["completed"] == n_threads * per_thread
    assert stats["ready"] == stats["in_progress"] == 0
    assert qs.info("t")["bytes"] == 0


# -- bulk operations in batches ---------------------------------------------------------


def test_requeue_failed_and_purge_beyond_one_batch(qs: Queues) -> None:
    n = BATCH + 37
    qs.put_many("t", list(range(n)))
    for task in qs.take_many("t", n, timeout=0):
        assert task.fail("no")
    assert qs.stats()["t"]["failed"] == n
    assert qs.requeue_failed("t") == n
    assert qs.stats()["t"]["ready"] == n
    assert qs.purge("t") == n
    stats = qs.stats()["t"]
    assert stats["ready"] == stats["failed"] == 0 and stats["enqueued"] == n


# -- check ---------------------------------------------------------------------------


def test_check_finds_and_fixes_broken_indexes(qs: Queues, rclient: Any, prefix: str) -> None:
    qs.put_many("t", [1, 2, 3, 4])
    held = qs.take("t", timeout=0)
    assert held is not None and held.id == 1
    assert qs.check()["ok"]
    tag = f"{prefix}:{{t}}"
    # message 2 loses its index entry, message 3 its stream entry,
    # message 4's hash vanishes, a stray pending entry appears
    rclient.zrem(f"{tag}:ready", 2)
    sid3 = rclient.hget(f"{tag}:m:3", "sid")
    rclient.xdel(f"{tag}:stream", sid3)
    rclient.delete(f"{tag}:m:4")
    rclient.xadd(f"{tag}:stream", {"id": "99"})
    rclient.xreadgroup(GROUP, "ghost", {f"{tag}:stream": ">"})
    report = qs.check()
    assert not report["ok"]
    text = "\n".join(report["problems"])
    for needle in ("message 2", "message 3", "message 4", "belongs to no message"):
        assert needle in text
    fixed = qs.check(fix=True)
    assert fixed["fixed"] and not fixed["problems"]
    assert qs.check() == {"ok": True, "problems": [], "fixed": [], "topics": 1}
    taken = sorted(t.id for t in qs.take_many("t", 10, timeout=0))
    assert taken == [2, 3]
    assert held.complete()


def test_check_recreates_a_missing_consumer_group(qs: Queues, rclient: Any, prefix: str) -> None:
    qs.put("t", 1)
    rclient.xgroup_destroy(f"{prefix}:{{t}}:stream", GROUP)
    assert not qs.check()["ok"]
    assert qs.check(fix=True)["fixed"]
    assert qs.check()["ok"]
    task = qs.take("t", timeout=0)
    assert task is not None and task.value == 1


# -- connections, forks, heartbeats -----------------------------------------------------


def test_an_unreachable_server_raises_storage_error_without_the_password() -> None:
    with pytest.raises(StorageError) as info:
        Queues("redis://:s3cret@127.0.0.1:1/0")
    assert "s3cret" not in str(info.value)
    assert info.value.path == "redis://:***@127.0.0.1:1/0"


def test_dropped_connections_reconnect_transparently(qs: Queues) -> None:
    qs.put("t", 1)
    backend = qs.backend
    assert isinstance(backend, RedisBackend)
    backend._client.connection_pool.disconnect()
    task = qs.take("t", timeout=0)
    assert task is not None and task.complete()


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs the redis-server binary")
def test_a_server_that_dies_raises_storage_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        url = f"redis://127.0.0.1:{port}/0"
        for _ in range(100):
            try:
                qs = Queues(url)
                break
            except StorageError:
                time.sleep(0.05)
        else:
            pytest.fail("the private redis-server did not start")
        qs.put("t", 1)
        server.kill()
        server.wait()
        with pytest.raises(StorageError) as info:
            qs.put("t", 2)
        assert info.value.path == url
        with pytest.raises(StorageError):
            qs.take("t", timeout=0)
        qs.close()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_gets_its_own_connection_and_owner(qs: Queues) -> None:
    qs.put_many("t", [1, 2])
    backend = qs.backend
    assert isinstance(backend, RedisBackend)
    parent_owner = backend.owner
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            task = qs.take("t", timeout=1)
            ok = task is not None and backend.owner != parent_owner
            os.write(write, f"{int(ok)} {backend.owner}".encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    ok, child_owner = os.read(read, 200).decode().split()
    os.close(read)
    assert ok == "1" and f":{pid}:" in child_owner  # host:pid:random
    lease = qs.peek("t", 1).lease
    assert lease is not None and lease.owner == child_owner
    task = qs.take("t", timeout=0)
    assert task is not None and task.id == 2 and backend.owner == parent_owner


def test_heartbeats_live_under_the_prefix_with_a_ttl(qs: Queues, rclient: Any, prefix: str) -> None:
    backend = qs.backend
    backend.write_heartbeat("host:1", {"pid": 1, "topics": ["t"]})
    backend.write_heartbeat("host:2", {"pid": 2})
    assert sorted(h["pid"] for h in backend.heartbeats()) == [1, 2]
    key = f"{prefix}:heartbeat:{{hb}}:host:1"
    assert 0 < rclient.ttl(key) <= HEARTBEAT_TTL
    backend.remove_heartbeat("host:1")
    rclient.delete(f"{prefix}:heartbeat:{{hb}}:host:2")  # as if it expired
    assert backend.heartbeats() == []
    assert rclient.zcard(f"{prefix}:heartbeats:{{hb}}") == 0


# -- several consumer processes ---------------------------------------------------------


def _consumers(python: str, redis_url: str, prefix: str, n: int, vt: float = 300.0) -> list[Any]:
    return [
        subprocess.Popen(
            [python, WORKER, redis_url, prefix, "t", "consume", str(vt)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]


def _completed(procs: list[Any]) -> list[int]:
    ids: list[int] = []
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        ids.extend(int(line) for line in out.split())
    return ids


def test_several_consumer_processes_share_a_topic_and_lose_nothing(
    qs: Queues, python: str, redis_url: str, prefix: str
) -> None:
    n = 2000
    ids = qs.put_many("t", list(range(n // 2)))
    procs = _consumers(python, redis_url, prefix, 4)
    ids += [qs.put("t", i) for i in range(n // 2)]  # while they consume
    done = _completed(procs)
    assert sorted(done) == sorted(ids)  # every message exactly once
    stats = qs.stats()["t"]
    assert stats["completed"] == stats["enqueued"] == n
    assert stats["ready"] == stats["in_progress"] == stats["delayed"] == 0


def test_messages_held_by_a_killed_consumer_are_reclaimed(
    qs: Queues, python: str, redis_url: str, prefix: str
) -> None:
    ids = qs.put_many("t", list(range(300)))
    hog = subprocess.Popen(
        [python, WORKER, redis_url, prefix, "t", "hog", "1.0"], stdout=subprocess.PIPE, text=True
    )
    assert hog.stdout is not None
    held = [int(i) for i in hog.stdout.readline().split()[1:]]
    assert len(held) == 50
    hog.send_signal(signal.SIGKILL)
    hog.wait()
    done = _completed(_consumers(python, redis_url, prefix, 3, vt=1.0))
    assert sorted(done) == sorted(ids)
    stats = qs.stats()["t"]
    assert stats["completed"] == 300 and stats["in_progress"] == 0
    for mid in held:  # nothing of theirs lost
        assert mid in done
