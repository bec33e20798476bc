"""Where the results of Django tasks live: with the queues, never in Django's
database.

A result is a small JSON record (status, times, arguments, return value,
errors, worker ids) under its result id, written by the worker when a task
starts and when it ends, and removed ``RESULT_TTL`` seconds after its last
write. A task that waits has no record yet: its message is its state.

- A directory of slab files: an SQLite file ``.tasks/results.sqlite3`` in
  it (a name no topic can have), in WAL mode, so every process on the
  machine reads and writes it safely and a ``kill -9`` loses nothing
  written before it; an OS crash may lose the last writes (synchronous
  NORMAL), as it may lose a put made with ``fsync_put=False``.
- Redis: one string key per result with the TTL as its expiry, and a sorted
  set of ids by time of last write for the dashboard's list.
- ``memory://``: a dict in this process, for tests.

This module knows nothing of the tasks framework: it stores dicts.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from typing import Any

from queuecore import Queues, StorageError

# Most results a listing returns.
MAX_LISTED = 500
# Seconds between two sweeps of expired results by one process.
SWEEP_EVERY = 60.0


class ResultStore:
    """Result records by id. Methods subclasses implement."""

    def __init__(self, ttl: float) -> None:
        self.ttl = float(ttl)

    def save(self, record: dict[str, Any]) -> None:
        """Write ``record`` (its ``"id"`` names it) over any earlier one."""
        raise NotImplementedError("ResultStore.save(record)")

    def get(self, result_id: str) -> dict[str, Any] | None:
        """The record of ``result_id``, or None (never written, or expired)."""
        raise NotImplementedError("ResultStore.get(result_id) -> dict | None")

    def recent(
        self, limit: int = 50, status: str | None = None, before: float | None = None
    ) -> list[dict[str, Any]]:
        """Records by time of last write, newest first: at most ``limit``,
        of ``status`` only if given, written before ``before`` (paging)."""
        raise NotImplementedError("ResultStore.recent(limit, status, before) -> list[dict]")

    def delete(self, result_id: str) -> None:
        raise NotImplementedError("ResultStore.delete(result_id)")

    def close(self) -> None:
        """Let go of connections (tests, shutdown)."""


class _MemoryRecords:
    """The records of one memory:// location: id -> (written, expires, JSON)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rows: dict[str, tuple[float, float, str]] = {}


class MemoryResultStore(ResultStore):
    def __init__(self, ttl: float, records: _MemoryRecords | None = None) -> None:
        super().__init__(ttl)
        shared = records or _MemoryRecords()
        self._lock = shared.lock
        self._shared = shared

    @property
    def _records(self) -> dict[str, tuple[float, str]]:
        return {k: (at, text) for k, (at, _, text) in self._shared.rows.items()}

    def _alive(self, now: float) -> None:
        rows = self._shared.rows
        for key in [k for k, (_, expires, _) in rows.items() if expires < now]:
            del rows[key]

    def save(self, record: dict[str, Any]) -> None:
        text = json.dumps(record)
        now = time.time()
        with self._lock:
            self._shared.rows.pop(record["id"], None)  # re-inserted last: the newest
            self._shared.rows[record["id"]] = (now, now + self.ttl, text)

    def get(self, result_id: str) -> dict[str, Any] | None:
        with self._lock:
            self._alive(time.time())
            found = self._records.get(result_id)
        return json.loads(found[1]) if found else None

    def recent(
        self, limit: int = 50, status: str | None = None, before: float | None = None
    ) -> list[dict[str, Any]]:
        with self._lock:
            self._alive(time.time())
            rows = list(self._records.values())
        out = []
        for at, text in reversed(rows):
            if before is not None and at >= before:
                continue
            record = json.loads(text)
            if status is None or record.get("status") == status:
                record["_written"] = at
                out.append(record)
                if len(out) >= limit:
                    break
        return out

    def delete(self, result_id: str) -> None:
        with self._lock:
            self._shared.rows.pop(result_id, None)


class SqliteResultStore(ResultStore):
    """One SQLite file shared by every process of the machine."""

    # WITHOUT ROWID: the id is the table's own key, so a write changes the
    # table and the index by time, not a third b-tree. Each row carries its
    # own expiry: backends with different RESULT_TTLs may share the file.
    SCHEMA = (
        "CREATE TABLE IF NOT EXISTS results ("
        " id TEXT PRIMARY KEY, status TEXT NOT NULL, written REAL NOT NULL, expires REAL NOT NULL,"
        " data TEXT NOT NULL) WITHOUT ROWID",
        "CREATE INDEX IF NOT EXISTS results_written ON results (written)",
    )

    def __init__(self, path: str, ttl: float) -> None:
        super().__init__(ttl)
        self.path = path
        self._local = threading.local()
        self._swept = 0.0

    def _db(self) -> sqlite3.Connection:
        # One connection per thread and per process: a forked child must not
        # use its parent's (SQLite forbids it).
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is not None and getattr(self._local, "pid", None) == os.getpid():
            return db
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            # WAL: readers never wait for a writer, and a write is one append
            # to the log. NORMAL: no fsync per commit (the log is synced at
            # checkpoints); a killed process loses nothing it committed.
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            for statement in self.SCHEMA:
                db.execute(statement)
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"task results at {self.path}: {exc}") from exc
        self._local.db, self._local.pid = db, os.getpid()
        return db

    def _run(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        try:
            return self._db().execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"task results at {self.path}: {exc}") from exc

    def save(self, record: dict[str, Any]) -> None:
        now = time.time()
        self._run(
            "INSERT OR REPLACE INTO results (id, status, written, expires, data) VALUES (?, ?, ?, ?, ?)",
            (record["id"], str(record.get("status", "")), now, now + self.ttl, json.dumps(record)),
        )
        if now - self._swept >= SWEEP_EVERY:
            self._swept = now
            self._run("DELETE FROM results WHERE expires < ?", (now,))

    def get(self, result_id: str) -> dict[str, Any] | None:
        rows = self._run("SELECT data FROM results WHERE id = ? AND expires >= ?", (result_id, time.time()))
        return json.loads(rows[0][0]) if rows else None

    def recent(
        self, limit: int = 50, status: str | None = None, before: float | None = None
    ) -> list[dict[str, Any]]:
        sql = "SELECT written, data FROM results WHERE expires >= ?"
        args: list[Any] = [time.time()]
        if status is not None:
            sql += " AND status = ?"
            args.append(status)
        if before is not None:
            sql += " AND written < ?"
            args.append(before)
        sql += " ORDER BY written DESC LIMIT ?"
        args.append(min(limit, MAX_LISTED))
        out = []
        for written, data in self._run(sql, tuple(args)):
            record = json.loads(data)
            record["_written"] = written
            out.append(record)
        return out

    def delete(self, result_id: str) -> None:
        self._run("DELETE FROM results WHERE id = ?", (result_id,))

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None and getattr(self._local, "pid", None) == os.getpid():
            db.close()
        self._local = threading.local()


class RedisResultStore(ResultStore):
    """Results in the Redis server of the queues, under their prefix."""

    def __init__(self, url: str, prefix: str, ttl: float) -> None:
        super().__init__(ttl)
        import redis

        self._redis = redis
        self.url = url
        self.prefix = prefix
        self._client: Any = None
        self._pid = 0

    def _conn(self) -> Any:
        if self._client is None or self._pid != os.getpid():
            self._client = self._redis.Redis.from_url(self.url)
            self._pid = os.getpid()
        return self._client

    # One hash tag for every result key and the index: MGET of a page of
    # results stays on one Redis Cluster slot.
    def _key(self, result_id: str) -> str:
        return f"{self.prefix}:{{taskresults}}:{result_id}"

    @property
    def _index(self) -> str:
        return f"{self.prefix}:{{taskresults}}"

    def _call(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except self._redis.exceptions.RedisError as exc:
            raise StorageError(f"task results on Redis: {exc}") from exc

    def save(self, record: dict[str, Any]) -> None:
        now = time.time()
        pipe = self._conn().pipeline(transaction=False)
        # Expiry of the key is the TTL; the index forgets ids as old.
        pipe.set(self._key(record["id"]), json.dumps(record), ex=max(1, int(self.ttl)))
        pipe.zadd(self._index, {record["id"]: now})
        pipe.zremrangebyscore(self._index, "-inf", now - self.ttl)
        self._call(pipe.execute)

    def get(self, result_id: str) -> dict[str, Any] | None:
        data = self._call(self._conn().get, self._key(result_id))
        return json.loads(data) if data else None

    def recent(
        self, limit: int = 50, status: str | None = None, before: float | None = None
    ) -> list[dict[str, Any]]:
        top = f"({before}" if before is not None else "+inf"
        out: list[dict[str, Any]] = []
        offset = 0
        # Filtering by status happens here: read pages until enough match.
        while len(out) < limit:
            page = self._call(
                self._conn().zrevrangebyscore, self._index, top, time.time() - self.ttl,
                offset, 200, True,
            )
            if not page:
                break
            offset += len(page)
            ids = [member.decode() if isinstance(member, bytes) else member for member, _ in page]
            datas = self._call(self._conn().mget, [self._key(i) for i in ids])
            for (_, written), data in zip(page, datas, strict=True):
                if not data:
                    continue
                record = json.loads(data)
                if status is None or record.get("status") == status:
                    record["_written"] = float(written)
                    out.append(record)
                    if len(out) >= limit:
                        break
        return out

    def delete(self, result_id: str) -> None:
        self._call(self._conn().delete, self._key(result_id))
        self._call(self._conn().zrem, self._index, result_id)

    def close(self) -> None:
        if self._client is not None and self._pid == os.getpid():
            self._client.close()
        self._client = None


_stores: dict[tuple[str, str, float], ResultStore] = {}
# The records of each memory:// location, shared by its stores of any TTL.
_memory: dict[tuple[str, str], _MemoryRecords] = {}
_lock = threading.Lock()


def store_for(queues: Queues, ttl: float) -> ResultStore:
    """The result store of ``queues``' location (see the module docstring),
    one per location and process, its connections kept open."""
    location = queues.location
    prefix = str(queues.options.get("prefix", "dq"))
    key = (location, prefix, float(ttl))
    with _lock:
        found = _stores.get(key)
        if found is None:
            if location.startswith("memory://"):
                records = _memory.setdefault((location, prefix), _MemoryRecords())
                found = MemoryResultStore(ttl, records)
            elif location.startswith(("redis://", "rediss://", "unix://")):
                found = RedisResultStore(location, prefix, ttl)
            else:
                root = location.removeprefix("file://")
                found = SqliteResultStore(os.path.join(root, ".tasks", "results.sqlite3"), ttl)
            _stores[key] = found
        return found


def close_stores() -> None:
    """Close every store's connections and forget the stores (tests,
    shutdown). Memory stores stay: like ``memory://`` queues, they live as
    long as the process."""
    with _lock:
        for key, store in list(_stores.items()):
            if not isinstance(store, MemoryResultStore):
                store.close()
                del _stores[key]
