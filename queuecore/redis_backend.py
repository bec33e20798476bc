"""The Redis backend: the same contract on Redis Streams, for several machines.

Select it with a location such as ``redis://127.0.0.1:6379/0`` (also
``rediss://`` and ``unix://``); the options are those of
``queuecore.defaults`` (``prefix`` namespaces every key, the fsync options
do not apply: durability is the server's ``appendonly``/``appendfsync``).

Keys (``p`` is the prefix, ``t`` the topic). Every key starts with the
prefix, so ``SCAN MATCH p:*`` and an ACL key pattern ``~p:*`` cover them all;
a topic's keys share the hash tag ``{t}``, so a topic lives in one Redis
Cluster slot and one Lua script can touch all of it::

    p:{t}:stream       stream of ready/in-progress deliveries; entry = {"id": dq id}
                       consumer group "dq"; a consumer per process (its owner id)
    p:{t}:meta         hash: last_id (the INCR counter of ids), enqueued,
                       completed, retried (totals), bytes (payload bytes stored)
    p:{t}:m:<id>       hash, one per message: p (payload), at (enqueued_at),
                       n (attempts), tok (lease counter), st (state), sid (its
                       current stream entry), own/dl (lease owner, deadline ms),
                       ext (last extended, ms), nb (delayed until, ms), ra (ready
                       since, when not its put), o (its producer's digest)
    p:{t}:m:<id>:e     list of the message's history (JSON): errors and leases
                       taken back, newest last, at most MAX_ERRORS_KEPT
    p:{t}:origins      hash: producer digest -> its origin JSON (host, pid,
                       command), at most MAX_ORIGINS; and consumer name -> its
                       origin (written by its first take of the topic)
    p:{t}:ready ...    zsets scored by id: ready, delayed, in_progress, failed
                       (browsing in id order with keyset paging; ZCARD = counts)
    p:{t}:due          zset of delayed ids scored by due time (ms)
    p:{t}:leases       zset of in-progress ids scored by lease deadline (ms)
    p:{t}:reclaim      zset of ready ids whose expired delivery is still pending
                       in the group: the next take XCLAIMs it instead of reading
    p:topics           set of topic names
    p:heartbeat:{hb}:<key>   a consumer heartbeat (JSON, expires after HEARTBEAT_TTL);
    p:heartbeats:{hb}        zset of heartbeat keys by time of last write

Every change of state is one Lua script (queuecore/lua/*.lua, run through
``register_script``): it reads the server's clock (``TIME``), so leases and
delays do not depend on the clocks of the machines running consumers, and
the counters stay exact whichever process, or machine, asks. The message hash is the truth; the zsets, the
stream and the group's pending list are indexes kept in step with it in the
same script, and ``check(fix=True)`` rebuilds them from it.

A lease is the group's pending entry plus ``own``/``dl`` in the hash: the
deadline is the delivery time plus ``visibility_timeout`` (the entry's idle
time in the group, reset by the delivery). A take first promotes due delayed
messages and turns expired leases back into ready ones (still pending in the
group, listed in ``reclaim``), XCLAIMs those, then reads new entries with
XREADGROUP. Each delivery bumps ``tok``; a settle must show the ``tok`` it
was given, so an old Task can never settle a newer delivery. Use the same
``visibility_timeout`` in every process sharing a topic.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
import threading
import time
from importlib import resources
from typing import Any

import redis
import redis.exceptions

from queuecore import identity
from queuecore.backend import (
    LEASE_EXPIRED,
    OWNER_CLOSED,
    OWNER_LAPSED,
    Backend,
    Delivery,
    Lease,
    Record,
    public_location,
)
from queuecore.defaults import DEFAULTS, MAX_ERRORS_KEPT, MAX_ORIGINS
from queuecore.errors import Closed, InvalidOption, MessageNotFound, QueueFull, StorageError
from queuecore.redis_side import HEARTBEAT_TTL, Liveness, SideRecords  # noqa: F401  (HEARTBEAT_TTL: importable from here too)

GROUP = "dq"
# Messages handled per script call by bulk operations (purge, requeue_failed,
# housekeeping), so no single script holds the server for long.
BATCH = 500
# Longest single blocking read while a take waits (the take re-checks
# delayed messages and leases between two reads).
MAX_BLOCK = 1.0
# Consumers with nothing pending and idle this long are removed by check(fix=True).
STALE_CONSUMER_MS = 3600 * 1000

_STATE_KEYS = ("ready", "delayed", "in_progress", "failed")
# KEYS of every topic script, in this order (see lua/prelude.lua).
_KEY_NAMES = ("stream", "meta", *_STATE_KEYS, "due", "leases", "reclaim", "owners", "lapsed", "origins")
# The zsets whose members are message ids (owners and lapsed hold owners).
_ID_INDEXES = (*_STATE_KEYS, "due", "leases", "reclaim")

# The Lua scripts, in queuecore/lua/ beside this module: each is the
# prelude (keys, clock, shared helpers) and then its own body. Read once,
# at import; registered per connection (redis-py runs them by SHA).
_SCRIPT_NAMES = ("put", "take", "settle", "stats", "info", "messages", "peek", "requeue",
                 "requeue_failed", "delete", "purge", "repair", "restore", "extend", "alive",
                 "gone", "owners")


def _read_scripts() -> dict[str, str]:
    folder = resources.files("queuecore") / "lua"
    prelude = (folder / "prelude.lua").read_text(encoding="utf-8")
    # Constants the scripts share with Python (a JSON string of ASCII text
    # is a Lua string; the reasons are ASCII, as Lua 5.1 has no \u escapes).
    for name, value in (("ERRORS_KEPT", MAX_ERRORS_KEPT), ("MAX_ORIGINS", MAX_ORIGINS),
                        ("LEASE_EXPIRED", LEASE_EXPIRED), ("OWNER_LAPSED", OWNER_LAPSED),
                        ("OWNER_CLOSED", OWNER_CLOSED)):
        prelude = prelude.replace(f"@{name}@", json.dumps(value))
    return {name: prelude + (folder / f"{name}.lua").read_text(encoding="utf-8") for name in _SCRIPT_NAMES}


_SCRIPTS = _read_scripts()


# -- the scripts' replies ------------------------------------------------------


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _fields(flat: list[Any]) -> dict[str, bytes]:
    return {_text(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}


def _errors(raw: list[Any]) -> tuple[dict[str, Any], ...]:
    out = []
    for item in raw:
        try:
            rec = json.loads(item)
        except ValueError:
            rec = {"reason": _text(item)}
        if isinstance(rec, dict) and "by_origin" in rec:
            # A lost lease: its holder named as every other delivery is.
            holder = _origin(rec.pop("by_origin"))
            if holder:
                rec["by"] = identity.label(holder)
        out.append(rec)
    return tuple(out)


_origin_cache: tuple[int, tuple[str, str]] = (0, ("", ""))


def _origin_ref(origin: dict[str, Any] | None) -> tuple[str, str]:
    """``(digest, JSON)`` of an origin: the message keeps the digest, the
    topic's ``origins`` hash the JSON; ``("", "")`` for none."""
    if not origin:
        return "", ""
    text = json.dumps(origin, separators=(",", ":"), default=str)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest(), text


def _my_origin() -> tuple[str, str]:
    """This process as the origin of its puts, encoded once (again in a fork)."""
    global _origin_cache
    pid = os.getpid()
    if _origin_cache[0] != pid:
        _origin_cache = (pid, _origin_ref(identity.current()))
    return _origin_cache[1]


def _origin(raw: Any) -> dict[str, Any] | None:
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _record(row: list[Any]) -> Record:
    """A message as the scripts return it: {id, HGETALL of its hash, its
    errors, its origin JSON}."""
    mid, flat, errors, origin = row
    f = _fields(flat)
    lease = None
    if "own" in f and "dl" in f:
        lease = Lease(_text(f["own"]), int(f["dl"]) / 1000,
                      extended_at=int(f["ext"]) / 1000 if "ext" in f else None)
    nb = f.get("nb")
    return Record(
        id=int(mid),
        payload=bytes(f.get("p", b"")),
        state=_text(f.get("st", b"ready")),
        attempts=int(f.get("n", 0)),
        enqueued_at=float(f.get("at", 0)),
        lease=lease,
        errors=_errors(errors),
        not_before=int(nb) / 1000 if nb is not None else None,
        origin=_origin(origin),
    )


class RedisBackend(Liveness, SideRecords, Backend):
    """Topics on a Redis server (7 or later), shared by every process and
    machine that names the same server, database and ``prefix``."""

    name = "redis"

    def __init__(self, location: str, **options: Any) -> None:
        opts = {**DEFAULTS, **options}
        self.location = location
        self._where = public_location(location)
        self.prefix = str(opts["prefix"])
        if not self.prefix or any(c in self.prefix for c in "{}"):
            raise InvalidOption("prefix", "must be a non-empty string without braces")
        limit = opts["max_queue_size"]
        self.max_queue_size: int | None = None if limit is None else int(limit)
        self.visibility_timeout = float(opts["visibility_timeout"])
        if self.visibility_timeout < 0:
            raise InvalidOption("visibility_timeout", "must be >= 0")
        self._vt_ms = math.ceil(self.visibility_timeout * 1000)
        self.owner_timeout = float(opts["owner_timeout"])
        self._owner_ms = math.ceil(self.owner_timeout * 1000)
        self._lock = threading.Lock()
        # Topics this process has taken from: its liveness is refreshed there.
        self._taken_topics: set[str] = set()
        self._refresher: threading.Thread | None = None
        self._stop_refresh = threading.Event()
        self._pid = -1
        self._closed = False
        self._known_topics: set[str] = set()
        self._connect()
        # Fail now, with a queuecore error, when the server does not answer.
        self._call(self._client.ping)

    # -- connection, fork safety ----------------------------------------------
    def _connect(self) -> None:
        try:
            client = redis.Redis.from_url(self.location)
        except ValueError as exc:
            raise InvalidOption("location", str(exc)) from exc
        self._client: Any = client
        self._pid = os.getpid()
        # host:pid and a random part: a later process that gets the same pid
        # (a restarted container is pid 1 again) must not inherit the leases
        # of the dead one, which are reclaimed under this name.
        self._owner = f"{os.uname().nodename}:{self._pid}:{secrets.token_hex(3)}"
        self._taken_topics = set()
        self._refresher = None
        self._stop_refresh = threading.Event()
        self._scripts: dict[str, Any] = {
            name: client.register_script(text) for name, text in _SCRIPTS.items()
        }
        self._known_topics = set()

    @property
    def owner(self) -> str:
        """This process's consumer name in each topic's group, and the lease
        owner that peek shows: ``host:pid:random``, renewed in a forked child."""
        self._redis()
        return self._owner

    def _redis(self) -> Any:
        # A forked child (gunicorn --preload) must not share its parent's
        # sockets nor its consumer name: reconnect under a new owner id.
        if self._closed:
            raise Closed("redis backend")
        if os.getpid() != self._pid:
            with self._lock:
                if os.getpid() != self._pid:
                    self._connect()
        return self._client

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)``, with Redis errors raised as StorageError."""
        try:
            return fn(*args, **kwargs)
        except redis.exceptions.ResponseError as exc:
            raise StorageError(self._where, f"redis refused: {exc}") from exc
        except redis.exceptions.RedisError as exc:
            raise StorageError(self._where, f"{type(exc).__name__}: {exc}") from exc

    def _tag(self, topic: str) -> str:
        # Every key starts with the prefix (SCAN patterns and ACL key patterns
        # such as ~dq:* cover them all); the topic is the Cluster hash tag.
        return f"{self.prefix}:{{{topic}}}"

    def _keys(self, topic: str) -> list[str]:
        tag = self._tag(topic)
        return [f"{tag}:{name}" for name in _KEY_NAMES]

    def _run(self, script: str, topic: str, *args: Any) -> Any:
        client = self._redis()
        keys = self._keys(topic)
        mpfx = self._tag(topic) + ":m:"
        return self._call(self._scripts[script], keys=keys, args=[mpfx, *args], client=client)

    def _note_topic(self, topic: str) -> None:
        if topic not in self._known_topics:
            client = self._redis()
            self._call(client.sadd, f"{self.prefix}:topics", topic)
            self._known_topics.add(topic)

    # -- the contract --------------------------------------------------------
    def put(self, topic: str, payloads: list[bytes], timeout: float | None) -> list[int]:
        """Append the payloads (one Lua call: all or none) and return their ids."""
        self._note_topic(topic)
        limit = -1 if self.max_queue_size is None else self.max_queue_size
        if self.max_queue_size is not None and len(payloads) > self.max_queue_size:
            raise QueueFull(topic, self.max_queue_size)
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.005
        while True:
            res = self._run("put", topic, limit, *_my_origin(), *payloads)
            if int(res[0]) == 1:
                return [int(i) for i in res[1:]]
            # Full: nothing was written. Room comes from another process's
            # complete/fail/delete, which sends no signal: poll with backoff.
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                assert self.max_queue_size is not None
                raise QueueFull(topic, self.max_queue_size)
            time.sleep(pause if left is None else min(pause, left))
            pause = min(pause * 2, 0.1)

    def take(self, topic: str, limit: int, timeout: float | None) -> list[Delivery]:
        """Lease up to ``limit`` messages; waits on a blocking XREAD of the
        topic's stream (woken by any put, retry or requeue), at most until the
        next delayed message or lease falls due."""
        self._note_topic(topic)
        deadline = None if timeout is None else time.monotonic() + timeout
        stream = self._keys(topic)[0]
        client = self._redis()  # first: a forked child reconnects as a new owner
        if topic not in self._taken_topics:
            # Its origin under its owner name, for the history of a lease it
            # loses (topic's origins hash; bounded with the producers').
            self._call(client.hset, self._tag(topic) + ":origins", self._owner, _my_origin()[1])
        self._hold(topic)
        while True:
            out, nxt, last_id = self._run("take", topic, self.owner, self._vt_ms, limit, self._owner_ms)
            if out:
                return [
                    Delivery(
                        id=int(mid),
                        payload=bytes(payload),
                        attempts=int(n),
                        enqueued_at=float(at),
                        token=(int(mid), int(tok)),
                        errors=_errors(errors),
                        ready_at=float(ra) if ra else None,
                    )
                    for mid, payload, n, at, tok, errors, ra in out
                ]
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return []
            wait = MAX_BLOCK if left is None else min(left, MAX_BLOCK)
            if int(nxt) >= 0:
                wait = min(wait, int(nxt) / 1000)
            if wait >= 0.001:
                client = self._redis()
                ms = max(1, int(wait * 1000))
                self._call(client.xread, {stream: last_id}, count=1, block=ms)

    def settle(
        self,
        topic: str,
        token: Any,
        outcome: str,
        delay: float = 0.0,
        error: dict[str, Any] | None = None,
    ) -> bool:
        if outcome not in ("complete", "retry", "fail"):
            raise ValueError(f"unknown outcome {outcome!r}")
        mid, tok = token
        err = json.dumps(error, default=str) if error is not None else ""
        delay_ms = math.ceil(delay * 1000) if delay > 0 else 0
        res = self._run("settle", topic, mid, tok, outcome, delay_ms, err, MAX_ERRORS_KEPT)
        return int(res) == 1

    def extend(self, topic: str, token: Any, seconds: float) -> bool:
        mid, tok = token
        return int(self._run("extend", topic, mid, tok, max(1, math.ceil(seconds * 1000)))) == 1

    def settle_many(self, topic: str, tokens: list[Any], outcome: str) -> list[bool]:
        """One round trip for the batch: the settle script once per lease,
        pipelined (each stays atomic on its own)."""
        if outcome not in ("complete", "retry", "fail"):
            raise ValueError(f"unknown outcome {outcome!r}")
        if not tokens:
            return []
        client = self._redis()
        keys = self._keys(topic)
        mpfx = self._tag(topic) + ":m:"
        script = self._scripts["settle"]

        def run() -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for mid, tok in tokens:
                script(keys=keys, args=[mpfx, mid, tok, outcome, 0, "", MAX_ERRORS_KEPT], client=pipe)
            return list(pipe.execute())

        return [int(r) == 1 for r in self._call(run)]

    def restore(self, topic: str, records: list[Record]) -> list[int]:
        """Store messages taken from another location as they were there:
        same payload, state (ready, delayed or failed), attempts, enqueue
        time, remaining delay and errors; new ids. Not limited by
        ``max_queue_size`` (used by ``manage.py dqmigrate``)."""
        self._note_topic(topic)
        args: list[Any] = []
        for r in records:
            nb = "" if r.not_before is None else str(math.ceil(r.not_before * 1000))
            args += [r.payload, repr(float(r.enqueued_at)), r.attempts, r.state, nb, *_origin_ref(r.origin),
                     len(r.errors)]
            args += [json.dumps(e, default=str) for e in r.errors]
        if not records:
            return []
        return [int(i) for i in self._run("restore", topic, *args)]

    def topics(self) -> list[str]:
        client = self._redis()
        names = self._call(client.smembers, f"{self.prefix}:topics")
        return sorted(_text(n) for n in names)

    def stats(self, topic: str) -> dict[str, int]:
        self._note_topic(topic)
        values = [int(v) for v in self._run("stats", topic)]
        keys = ("enqueued", "completed", "retried", "ready", "delayed", "in_progress", "failed")
        out = dict(zip(keys, values, strict=True))
        out["num_slabs"] = 0
        out["num_active_slabs"] = 0
        return out

    def info(self, topic: str) -> dict[str, Any]:
        size, at = self._run("info", topic)
        return {
            "bytes": int(size),
            "dropped": 0,
            "oldest_ready_at": float(at) if at is not None else None,
        }

    def messages(
        self, topic: str, state: str | None, after: int | None, limit: int
    ) -> list[Record]:
        if state == "completed":
            return []  # completed messages are not kept
        if state is not None and state not in _STATE_KEYS:
            raise ValueError(f"unknown state {state!r}")
        rows = self._run("messages", topic, state or "", after or 0, limit)
        return [_record(row) for row in rows]

    def peek(self, topic: str, id: int) -> Record:
        row = self._run("peek", topic, id)
        if row is None:
            raise MessageNotFound(topic, id)
        return _record(row)

    def requeue(self, topic: str, id: int) -> None:
        if int(self._run("requeue", topic, id)) == 0:
            raise MessageNotFound(topic, id)

    def requeue_failed(self, topic: str) -> int:
        total = 0
        while True:
            n = int(self._run("requeue_failed", topic, BATCH))
            total += n
            if n < BATCH:
                return total

    def delete(self, topic: str, id: int) -> None:
        if int(self._run("delete", topic, id)) == 0:
            raise MessageNotFound(topic, id)

    def purge(self, topic: str, state: str | None) -> int:
        states = ["ready", "delayed"] if state is None else [state]
        if any(s not in ("ready", "delayed", "failed") for s in states):
            raise ValueError(
                f"purge takes state None, 'ready', 'delayed' or 'failed', not {state!r}"
            )
        total = 0
        while True:
            n = int(self._run("purge", topic, BATCH, *states))
            total += n
            if n < BATCH:
                return total

    def check(self, fix: bool) -> dict[str, Any]:
        """Walk every topic's messages and indexes; with ``fix``, rebuild the
        indexes from the messages (each message in one atomic script), ack
        pending entries no message owns and drop long-idle empty consumers."""
        problems: list[str] = []
        fixed: list[str] = []
        topics = self.topics()
        for topic in topics:
            for msg, repaired in self._check_topic(topic, fix):
                (fixed if repaired else problems).append(f"{topic}: {msg}")
        return {"ok": not problems, "problems": problems, "fixed": fixed, "topics": len(topics)}

    def _check_topic(self, topic: str, fix: bool) -> list[tuple[str, bool]]:
        client = self._redis()
        call = self._call
        keys = self._keys(topic)
        stream, meta = keys[0], keys[1]
        mpfx = self._tag(topic) + ":m:"
        found: list[tuple[str, bool]] = []
        # The consumer group.
        groups = call(client.xinfo_groups, stream) if call(client.exists, stream) else []
        if not any(_text(g["name"]) == GROUP for g in groups):
            found.append(("consumer group missing", fix))
            if not fix:
                return found  # without the group, pending entries cannot be read
            call(client.xgroup_create, stream, GROUP, id="0", mkstream=True)
        # Every message id known to an index or with a hash of its own.
        ids: set[int] = set()
        for name, k in zip(_KEY_NAMES, keys, strict=True):
            if name in _ID_INDEXES:
                ids.update(int(m) for m in call(client.zrange, k, 0, -1))
        for key in call(lambda: list(client.scan_iter(match=mpfx + "*", count=1000))):
            tail = _text(key)[len(mpfx) :]
            if tail.isdigit():
                ids.add(int(tail))
        last_id = int(call(client.hget, meta, "last_id") or 0)
        if ids and max(ids) > last_id:
            found.append((f"id counter {last_id} is behind message {max(ids)}", fix))
            if fix:
                call(client.hset, meta, "last_id", max(ids))
        repair = self._scripts["repair"]
        for mid in sorted(ids):
            args = [mpfx, mid, "1" if fix else "0"]
            for problem in call(repair, keys=keys, args=args, client=client):
                found.append((f"message {mid}: {_text(problem)}", fix))
        # Pending entries that no message owns any more.
        for p in call(client.xpending_range, stream, GROUP, "-", "+", 1_000_000):
            sid = p["message_id"]
            entry = call(client.xrange, stream, sid, sid)
            owner_id = _text(entry[0][1].get(b"id", b"")) if entry else ""
            current = call(client.hget, mpfx + owner_id, "sid") if owner_id else None
            if current is None or _text(current) != _text(sid):
                found.append((f"pending entry {_text(sid)} belongs to no message", fix))
                if fix:
                    call(client.xack, stream, GROUP, sid)
                    call(client.xdel, stream, sid)
        if fix:
            for c in call(client.xinfo_consumers, stream, GROUP):
                if int(c["pending"]) == 0 and int(c["idle"]) > STALE_CONSUMER_MS:
                    call(client.xgroup_delconsumer, stream, GROUP, c["name"])
                    found.append((f"removed idle consumer {_text(c['name'])}", True))
        # The byte counter.
        total = sum(int(call(client.hstrlen, mpfx + str(mid), "p")) for mid in ids)
        stored = int(call(client.hget, meta, "bytes") or 0)
        if stored != total:
            found.append((f"byte counter {stored} should be {total}", fix))
            if fix:
                call(client.hset, meta, "bytes", total)
        return found

    def fsync(self) -> None:
        """Nothing to do here: durability is the server's appendfsync setting."""

    def close(self) -> None:
        if not self._closed:
            self._stop_refresh.set()
            refresher = self._refresher
            if refresher is not None and refresher is not threading.current_thread() and os.getpid() == self._pid:
                # A refresh in flight must not record this owner again after it is gone.
                refresher.join(timeout=2)
            # Leases this process still holds are given back at once, not
            # after owner_timeout (only in the process that took them).
            if self._taken_topics and os.getpid() == self._pid:
                try:
                    client = self._client
                    pipe = client.pipeline(transaction=False)
                    for topic in sorted(self._taken_topics):
                        self._scripts["gone"](keys=self._keys(topic),
                                              args=[self._tag(topic) + ":m:", self._owner], client=pipe)
                    pipe.execute()
                except redis.exceptions.RedisError:
                    pass  # unreachable: the record lapses and the leases come back anyway
            self._closed = True
            try:
                self._client.close()
            except redis.exceptions.RedisError:
                pass
