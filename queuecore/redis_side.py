"""Parts of the Redis backend beside the topics' scripts, as mixins of
:class:`~queuecore.redis_backend.RedisBackend`:

- :class:`Liveness`: this process's liveness records (refreshed by a daemon
  thread), and who holds or lost leases, for the dashboard;
- :class:`SideRecords`: paused topics, requests to consumer processes and
  consumer heartbeats, keys of their own under the prefix.

Each uses only what the backend provides (the client, the scripts, the key
names); neither changes a message.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

from queuecore.errors import Closed, StorageError

# Seconds a heartbeat stays after its last write: a consumer killed without
# removing it is shown as gone by the dashboard, then forgotten.
HEARTBEAT_TTL = 600


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _Base:
    """What the mixins use of the backend (defined by RedisBackend)."""

    prefix: str
    owner_timeout: float
    _owner: str
    _owner_ms: int
    _closed: bool
    _lock: threading.Lock
    _taken_topics: set[str]
    _refresher: threading.Thread | None
    _stop_refresh: threading.Event
    _scripts: dict[str, Any]

    def _redis(self) -> Any:
        raise NotImplementedError

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def _run(self, script: str, topic: str, *args: Any) -> Any:
        raise NotImplementedError

    def _keys(self, topic: str) -> list[str]:
        raise NotImplementedError

    def _tag(self, topic: str) -> str:
        raise NotImplementedError


class Liveness(_Base):
    # -- owner liveness ------------------------------------------------------------
    # A process that has taken from a topic keeps a liveness record there
    # (the topic's "owners" zset: owner -> when it lapses, by the server's
    # clock), refreshed by each take and by a daemon thread every third of
    # owner_timeout. A record that lapses (a kill -9, or a process stopped or
    # stalled that long) makes the next script of the topic take back every
    # lease of that owner; a lapsed owner can settle nothing it held.
    def _hold(self, topic: str) -> None:
        # In a forked child, reconnect (a new owner, no topics, no refresher)
        # before noting the topic, or the reconnect would forget it.
        self._redis()
        if topic in self._taken_topics and self._refresher is not None and self._refresher.is_alive():
            return
        with self._lock:
            self._taken_topics.add(topic)
            if self._refresher is None or not self._refresher.is_alive():
                self._stop_refresh = threading.Event()
                self._refresher = threading.Thread(
                    target=self._refresh_loop, args=(self._stop_refresh,), name="dq-redis-liveness", daemon=True
                )
                self._refresher.start()

    def _refresh_loop(self, stop: threading.Event) -> None:
        period = max(0.05, self.owner_timeout / 3)
        pid = os.getpid()
        while not stop.wait(period):
            if self._closed or os.getpid() != pid:
                return
            try:
                self.refresh_liveness()
            except (StorageError, Closed):
                pass  # the next round (or a take) tries again; past owner_timeout the leases go

    def refresh_liveness(self) -> None:
        """Refresh this process's liveness record in every topic it took from
        (one round trip); the refresher thread calls it."""
        client = self._redis()
        script = self._scripts["alive"]
        topics = sorted(self._taken_topics)
        if not topics:
            return

        def run() -> None:
            pipe = client.pipeline(transaction=False)
            for topic in topics:
                script(keys=self._keys(topic), args=[self._tag(topic) + ":m:", self._owner, self._owner_ms],
                       client=pipe)
            pipe.execute()

        self._call(run)

    def owners(self, topic: str) -> dict[str, float]:
        """Owners with a liveness record in ``topic``: seconds until each
        lapses (negative: lapsed, its leases about to be taken back)."""
        flat = self._run("owners", topic)[0]
        return {_text(flat[i]): int(flat[i + 1]) / 1000 for i in range(0, len(flat), 2)}

    def lapsed_owners(self, topics: list[str]) -> set[str]:
        """Owners whose liveness record lapsed in any of ``topics`` within the
        last hour and did not come back (one round trip)."""
        if not topics:
            return set()
        client = self._redis()
        script = self._scripts["owners"]

        def run() -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for topic in topics:
                script(keys=self._keys(topic), args=[self._tag(topic) + ":m:"], client=pipe)
            return list(pipe.execute())

        found: set[str] = set()
        for live, lapsed in self._call(run):
            found.update(_text(o) for o in lapsed)
            found.update(_text(live[i]) for i in range(0, len(live), 2) if int(live[i + 1]) < 0)
        return found


class SideRecords(_Base):
    # -- paused topics, consumer controls ----------------------------------------
    def set_paused(self, topic: str, paused: bool) -> None:
        client = self._redis()
        key = f"{self.prefix}:paused"
        self._call(client.sadd if paused else client.srem, key, topic)

    def paused_topics(self) -> set[str]:
        client = self._redis()
        return {_text(t) for t in self._call(client.smembers, f"{self.prefix}:paused")}

    def write_control(self, key: str, record: dict[str, Any]) -> None:
        client = self._redis()
        self._call(client.hset, f"{self.prefix}:controls", key, json.dumps(record, default=str))

    def remove_control(self, key: str) -> None:
        client = self._redis()
        self._call(client.hdel, f"{self.prefix}:controls", key)

    def controls(self) -> dict[str, dict[str, Any]]:
        client = self._redis()
        out: dict[str, dict[str, Any]] = {}
        for key, value in self._call(client.hgetall, f"{self.prefix}:controls").items():
            try:
                out[_text(key)] = json.loads(value)
            except ValueError:
                continue
        return out

    # -- heartbeats ------------------------------------------------------------
    def _hb(self, key: str) -> str:
        return f"{self.prefix}:heartbeat:{{hb}}:{key}"

    def _hb_index(self) -> str:
        return f"{self.prefix}:heartbeats:{{hb}}"

    def write_heartbeat(self, key: str, record: dict[str, Any]) -> None:
        client = self._redis()
        data = json.dumps(record, default=str)

        def write() -> None:
            pipe = client.pipeline(transaction=True)
            pipe.set(self._hb(key), data, ex=HEARTBEAT_TTL)
            pipe.zadd(self._hb_index(), {key: time.time()})
            pipe.execute()

        self._call(write)

    def remove_heartbeat(self, key: str) -> None:
        client = self._redis()

        def remove() -> None:
            pipe = client.pipeline(transaction=True)
            pipe.delete(self._hb(key))
            pipe.zrem(self._hb_index(), key)
            pipe.execute()

        self._call(remove)

    def heartbeats(self) -> list[dict[str, Any]]:
        client = self._redis()
        keys = [_text(k) for k in self._call(client.zrange, self._hb_index(), 0, -1)]
        if not keys:
            return []
        values = self._call(client.mget, [self._hb(k) for k in keys])
        out: list[dict[str, Any]] = []
        gone = []
        for key, value in zip(keys, values, strict=True):
            if value is None:
                gone.append(key)  # expired: forget it
                continue
            try:
                out.append(json.loads(value))
            except ValueError:
                gone.append(key)
        if gone:
            self._call(client.zrem, self._hb_index(), *gone)
        return out
