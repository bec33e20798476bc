"""One adapter per library measured by ``bench/run.py``: dq and its peers.

Every adapter takes and returns the same Python value (a dict) so that every
library pays for msgpack encoding and decoding: dq through its own
serializer, persist-queue through its msgpack serializer, the others in the
adapter (they store bytes). ``take`` never blocks; ``None`` means empty.

Durability, as configured here (``fsync=False`` / ``fsync=True``):

- dq: ``fsync_put=False`` (no fsync; the data is in the page cache, safe
  from a process crash) / ``fsync_put=True`` (each put returns after
  ``fdatasync``; concurrent puts share one).
- SQLite-based peers: ``PRAGMA synchronous=NORMAL`` in WAL mode (no fsync
  per commit, the same promise as dq with ``fsync_put=False``) /
  ``synchronous=FULL`` (the WAL is fsynced at every commit). huey's own
  option ``fsync=False`` means ``synchronous=OFF``; it is used as huey
  offers it. The value each connection really runs with is read back and
  reported.
- queuelib and persist-queue's file queue have no fsync option.
"""

from __future__ import annotations

import importlib.metadata
import os
import sqlite3
from typing import Any

import msgpack

_SYNC_NAMES = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


def _pragma_sync(conn: sqlite3.Connection) -> str:
    return _SYNC_NAMES.get(conn.execute("PRAGMA synchronous").fetchone()[0], "?")


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


class Adapter:
    """The operations the bench needs; one instance is one open queue."""

    name = ""  # short name used in tables and on the command line
    dist = ""  # distribution name, for its version
    acks = True  # take and acknowledge are separate (an unacknowledged take is redelivered)
    multiprocess = True  # several processes may use one queue
    can_fsync = True  # has a fsync-per-put setting

    def __init__(self, path: str, fsync: bool = False) -> None:
        self.path = path
        self.fsync = fsync

    @classmethod
    def version(cls) -> str:
        return _version(cls.dist)

    def durability(self) -> str:
        raise NotImplementedError("an adapter says how its durability is configured")

    def put(self, value: Any) -> None:
        raise NotImplementedError("an adapter must implement put(value)")

    def take(self) -> tuple[Any, Any] | None:
        """(value, handle) of the next message, or None when empty."""
        raise NotImplementedError("an adapter must implement take()")

    def ack(self, handle: Any) -> None:
        raise NotImplementedError("an adapter must implement ack(handle)")

    def close(self) -> None:
        pass


class Dq(Adapter):
    name = "dq"
    dist = "dq"

    def __init__(self, path: str, fsync: bool = False, **options: Any) -> None:
        super().__init__(path, fsync)
        from queuecore import Queues

        self.options = {"fsync_put": fsync, **options}
        self.qs = Queues(path, **self.options)

    def durability(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.options.items())

    def put(self, value: Any) -> None:
        self.qs.put("bench", value)

    def put_many(self, values: list[Any]) -> None:
        self.qs.put_many("bench", values)

    def take(self) -> tuple[Any, Any] | None:
        task = self.qs.take("bench", timeout=0)
        return None if task is None else (task.value, task)

    def take_blocking(self, timeout: float) -> tuple[Any, Any] | None:
        task = self.qs.take("bench", timeout=timeout)
        return None if task is None else (task.value, task)

    def take_many(self, limit: int) -> list[Any]:
        return self.qs.take_many("bench", limit, timeout=0)

    def complete_many(self, tasks: list[Any]) -> None:
        self.qs.complete_many(tasks)

    def ack(self, handle: Any) -> None:
        handle.complete()

    def close(self) -> None:
        self.qs.close()


REDIS_URL = os.environ.get("DQ_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")


def redis_answers() -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except Exception:
        return False


def forget_redis(path: str) -> None:
    """Delete the Redis keys of the bench queue named after ``path``."""
    if not os.path.exists(os.path.join(path, ".redis")):
        return
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    prefix = _redis_prefix(path)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    for i in range(0, len(keys), 500):
        client.delete(*keys[i : i + 500])


def _redis_prefix(path: str) -> str:
    return "dqbench-" + os.path.basename(os.path.normpath(path))


class DqRedis(Dq):
    """dq's own API on its Redis Streams backend (the scale-out option), on
    the local server; the queue is named after the bench folder."""

    name = "dq-redis"
    dist = "redis"
    can_fsync = False  # durability is the server's (appendfsync), not the client's

    def __init__(self, path: str, fsync: bool = False, **options: Any) -> None:
        Adapter.__init__(self, path, fsync)
        from queuecore import Queues

        open(os.path.join(path, ".redis"), "w").close()  # forget_redis cleans up after it
        self.options = {"prefix": _redis_prefix(path), **options}
        self.qs = Queues(REDIS_URL, **self.options)

    def durability(self) -> str:
        raw = self.qs.backend._client.config_get("append*")  # type: ignore[attr-defined]
        conf = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
                for k, v in raw.items()}
        return (f"server's appendonly={conf.get('appendonly', '?')}, "
                f"appendfsync={conf.get('appendfsync', '?')}; {REDIS_URL}")


class PersistQueueAck(Adapter):
    """persist-queue's SQLiteAckQueue: get marks a row unack, ack marks it acked."""

    name = "pq-ack"
    dist = "persist-queue"

    def __init__(self, path: str, fsync: bool = False) -> None:
        super().__init__(path, fsync)
        import persistqueue
        import persistqueue.serializers.msgpack

        self.q = persistqueue.SQLiteAckQueue(
            path, auto_commit=True, multithreading=False, serializer=persistqueue.serializers.msgpack
        )
        # persist-queue has no synchronous option; set it on its connection.
        self.q._putter.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")

    def durability(self) -> str:
        return f"SQLiteAckQueue(auto_commit=True), WAL, synchronous={_pragma_sync(self.q._putter)}"

    def put(self, value: Any) -> None:
        self.q.put(value)

    def take(self) -> tuple[Any, Any] | None:
        import persistqueue

        try:
            item = self.q.get(block=False, raw=True)
        except persistqueue.Empty:
            return None
        return item["data"], item["pqid"]

    def ack(self, handle: Any) -> None:
        self.q.ack(id=handle)

    def close(self) -> None:
        self.q.close()


class PersistQueueFile(Adapter):
    """persist-queue's file Queue: a put rewrites an info file; get + task_done."""

    name = "pq-file"
    dist = "persist-queue"
    multiprocess = False
    can_fsync = False

    def __init__(self, path: str, fsync: bool = False) -> None:
        super().__init__(path, fsync)
        import persistqueue
        import persistqueue.serializers.msgpack

        self.q = persistqueue.Queue(
            path, serializer=persistqueue.serializers.msgpack, tempdir=path, autosave=False
        )

    def durability(self) -> str:
        return "Queue(autosave=False): info file renamed per put, fsync only per 100-item chunk"

    def put(self, value: Any) -> None:
        self.q.put(value)

    def take(self) -> tuple[Any, Any] | None:
        import persistqueue

        try:
            return self.q.get(block=False), None
        except persistqueue.Empty:
            return None

    def ack(self, handle: Any) -> None:
        self.q.task_done()


class LiteQueue(Adapter):
    """litequeue: pop locks a row, done(message_id) finishes it."""

    name = "litequeue"
    dist = "litequeue"

    def __init__(self, path: str, fsync: bool = False) -> None:
        super().__init__(path, fsync)
        from litequeue import LiteQueue as LQ

        os.makedirs(path, exist_ok=True)
        self.q = LQ(os.path.join(path, "queue.db"))
        if fsync:  # litequeue sets NORMAL itself and has no option for FULL
            self.q.conn.execute("PRAGMA synchronous = FULL")

    def durability(self) -> str:
        return f"LiteQueue, WAL, synchronous={_pragma_sync(self.q.conn)}"

    def put(self, value: Any) -> None:
        self.q.put(msgpack.packb(value))

    def take(self) -> tuple[Any, Any] | None:
        msg = self.q.pop()
        if msg is None:
            return None
        return msgpack.unpackb(msg.data), msg.message_id

    def ack(self, handle: Any) -> None:
        self.q.done(handle)

    def close(self) -> None:
        self.q.close()


class Huey(Adapter):
    """huey's SqliteStorage used as a queue: dequeue deletes the row (no ack)."""

    name = "huey"
    dist = "huey"
    acks = False

    def __init__(self, path: str, fsync: bool = False) -> None:
        super().__init__(path, fsync)
        from huey.storage import SqliteStorage

        os.makedirs(path, exist_ok=True)
        self.s = SqliteStorage("bench", filename=os.path.join(path, "huey.db"), fsync=fsync)

    def durability(self) -> str:
        return f"SqliteStorage(fsync={self.fsync}), WAL, synchronous={_pragma_sync(self.s.conn)}"

    def put(self, value: Any) -> None:
        self.s.enqueue(msgpack.packb(value))

    def take(self) -> tuple[Any, Any] | None:
        data = self.s.dequeue()
        return None if data is None else (msgpack.unpackb(data), None)

    def ack(self, handle: Any) -> None:
        pass

    def close(self) -> None:
        self.s.close()


class DiskcacheDeque(Adapter):
    """diskcache's Deque: popleft removes the item (no ack)."""

    name = "diskcache"
    dist = "diskcache"
    acks = False

    def __init__(self, path: str, fsync: bool = False) -> None:
        super().__init__(path, fsync)
        from diskcache import Cache, Deque

        # Values over min_file_size (32 KiB) go to files of their own, which
        # diskcache never fsyncs.
        cache = Cache(path, eviction_policy="none", sqlite_synchronous=2 if fsync else 1)
        self.q = Deque.fromcache(cache)

    def durability(self) -> str:
        return f"Deque on Cache(sqlite_synchronous={_pragma_sync(self.q._cache._con)}), WAL"

    def put(self, value: Any) -> None:
        self.q.append(msgpack.packb(value))

    def take(self) -> tuple[Any, Any] | None:
        try:
            data = self.q.popleft()
        except IndexError:
            return None
        return msgpack.unpackb(data), None

    def ack(self, handle: Any) -> None:
        pass

    def close(self) -> None:
        self.q._cache.close()


class Queuelib(Adapter):
    """queuelib's FifoDiskQueue: a bare append-only file, no ack, one process."""

    name = "queuelib"
    dist = "queuelib"
    acks = False
    multiprocess = False
    can_fsync = False

    def __init__(self, path: str, fsync: bool = False) -> None:
        super().__init__(path, fsync)
        from queuelib import FifoDiskQueue

        self.q = FifoDiskQueue(path)

    def durability(self) -> str:
        return "FifoDiskQueue: os.write per push, no fsync"

    def put(self, value: Any) -> None:
        self.q.push(msgpack.packb(value))

    def take(self) -> tuple[Any, Any] | None:
        data = self.q.pop()
        return None if data is None else (msgpack.unpackb(data), None)

    def ack(self, handle: Any) -> None:
        pass

    def close(self) -> None:
        self.q.close()


ADAPTERS: dict[str, type[Adapter]] = {
    a.name: a for a in (Dq, DqRedis, PersistQueueAck, PersistQueueFile, LiteQueue, Huey, DiskcacheDeque, Queuelib)
}
# The peers a user would pick instead of dq: they acknowledge or survive
# several processes (queuelib and the file queue do neither).
REAL_PEERS = ("pq-ack", "litequeue", "huey", "diskcache")
PIP_PACKAGES = ("persist-queue", "litequeue", "diskcache", "queuelib", "huey")
