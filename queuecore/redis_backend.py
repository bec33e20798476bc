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
                       nb (delayed until, ms)
    p:{t}:m:<id>:e     list of the message's errors (JSON), newest last
    p:{t}:ready ...    zsets scored by id: ready, delayed, in_progress, failed
                       (browsing in id order with keyset paging; ZCARD = counts)
    p:{t}:due          zset of delayed ids scored by due time (ms)
    p:{t}:leases       zset of in-progress ids scored by lease deadline (ms)
    p:{t}:reclaim      zset of ready ids whose expired delivery is still pending
                       in the group: the next take XCLAIMs it instead of reading
    p:topics           set of topic names
    p:heartbeat:{hb}:<key>   a consumer heartbeat (JSON, expires after HEARTBEAT_TTL);
    p:heartbeats:{hb}        zset of heartbeat keys by time of last write

Every change of state is one Lua script (``register_script``): it reads the
server's clock (``TIME``), so leases and delays do not depend on the clocks
of the machines running consumers, and the counters stay exact whichever
process, or machine, asks. The message hash is the truth; the zsets, the
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

import json
import math
import os
import threading
import time
from typing import Any

import redis
import redis.exceptions

from queuecore.backend import Backend, Delivery, Lease, Record, public_location
from queuecore.defaults import DEFAULTS, MAX_ERRORS_KEPT
from queuecore.errors import Closed, InvalidOption, MessageNotFound, QueueFull, StorageError

GROUP = "dq"
# Messages handled per script call by bulk operations (purge, requeue_failed,
# housekeeping), so no single script holds the server for long.
BATCH = 500
# Seconds a heartbeat stays after its last write: a consumer killed without
# removing it is shown as gone by the dashboard, then forgotten.
HEARTBEAT_TTL = 600
# Longest single blocking read while a take waits (the take re-checks
# delayed messages and leases between two reads).
MAX_BLOCK = 1.0
# Consumers with nothing pending and idle this long are removed by check(fix=True).
STALE_CONSUMER_MS = 3600 * 1000

_STATE_KEYS = ("ready", "delayed", "in_progress", "failed")
# KEYS of every topic script, in this order (see _LUA_HEAD).
_KEY_NAMES = ("stream", "meta", *_STATE_KEYS, "due", "leases", "reclaim")

_LUA_HEAD = """
local K_STREAM, K_META = KEYS[1], KEYS[2]
local K_READY, K_DELAYED, K_INPROG, K_FAILED = KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local K_DUE, K_LEASES, K_RECLAIM = KEYS[7], KEYS[8], KEYS[9]
local STATE_KEY = {ready = K_READY, delayed = K_DELAYED, in_progress = K_INPROG, failed = K_FAILED}
local MPFX = ARGV[1]
local GROUP = 'dq'
local T = redis.call('TIME')
local NOW = tonumber(T[1]) * 1000 + math.floor(tonumber(T[2]) / 1000)
local NOW_S = T[1] .. '.' .. string.format('%06d', tonumber(T[2]))

local function mkey(id) return MPFX .. id end
local function ekey(id) return MPFX .. id .. ':e' end

local function ensure_group()
  if redis.call('EXISTS', K_STREAM) == 0 then
    redis.call('XGROUP', 'CREATE', K_STREAM, GROUP, '0', 'MKSTREAM')
  end
end

-- Ack and delete the message's stream entry, if it has one.
local function drop_entry(h)
  local sid = redis.call('HGET', h, 'sid')
  if sid then
    redis.call('XACK', K_STREAM, GROUP, sid)
    redis.call('XDEL', K_STREAM, sid)
    redis.call('HDEL', h, 'sid')
  end
end

local function unindex(id)
  for _, k in ipairs({K_READY, K_DELAYED, K_INPROG, K_FAILED, K_DUE, K_LEASES, K_RECLAIM}) do
    redis.call('ZREM', k, id)
  end
end

-- Ready at the back of the topic: a new stream entry (callers removed the old one).
local function enqueue(id, h)
  ensure_group()
  local sid = redis.call('XADD', K_STREAM, '*', 'id', id)
  redis.call('HSET', h, 'st', 'ready', 'sid', sid)
  redis.call('HDEL', h, 'own', 'dl', 'nb')
  redis.call('ZADD', K_READY, id, id)
end

-- An expired lease: ready again; its entry stays pending until a take XCLAIMs it.
local function expire(id, h)
  redis.call('ZREM', K_LEASES, id)
  redis.call('ZREM', K_INPROG, id)
  redis.call('HSET', h, 'st', 'ready')
  redis.call('HDEL', h, 'own', 'dl')
  redis.call('ZADD', K_READY, id, id)
  redis.call('ZADD', K_RECLAIM, id, id)
end

-- Promote due delayed messages and expire leases past their deadline.
local function housekeep()
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', K_DUE, '-inf', NOW, 'LIMIT', 0, 500)) do
    redis.call('ZREM', K_DUE, id)
    redis.call('ZREM', K_DELAYED, id)
    enqueue(id, mkey(id))
  end
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', K_LEASES, '-inf', NOW, 'LIMIT', 0, 500)) do
    expire(id, mkey(id))
  end
end

local function remove(id, h)
  drop_entry(h)
  unindex(id)
  redis.call('HINCRBY', K_META, 'bytes', -redis.call('HSTRLEN', h, 'p'))
  redis.call('DEL', h, ekey(id))
end

local function record(id)
  return {id, redis.call('HGETALL', mkey(id)), redis.call('LRANGE', ekey(id), 0, -1)}
end
"""

# ARGV: mpfx, max_queue_size (-1: none), payload...
_PUT = """
local n = #ARGV - 2
local limit = tonumber(ARGV[2])
if limit >= 0 then
  local size = redis.call('ZCARD', K_READY) + redis.call('ZCARD', K_DELAYED) + redis.call('ZCARD', K_INPROG)
  if size + n > limit then return {0} end
end
local out = {1}
local bytes = 0
for i = 3, #ARGV do
  local id = redis.call('HINCRBY', K_META, 'last_id', 1)
  local h = mkey(id)
  redis.call('HSET', h, 'p', ARGV[i], 'at', NOW_S, 'n', 0, 'tok', 0)
  enqueue(id, h)
  bytes = bytes + #ARGV[i]
  out[#out + 1] = id
end
redis.call('HINCRBY', K_META, 'enqueued', n)
redis.call('HINCRBY', K_META, 'bytes', bytes)
return out
"""

# ARGV: mpfx, then per message: payload, enqueued_at, attempts, state,
# not_before ms ('' for none), number of errors, error JSON...
_RESTORE = """
local out = {}
local i = 2
while i <= #ARGV do
  local payload, at, attempts, state, nb = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local nerr = tonumber(ARGV[i + 5])
  local id = redis.call('HINCRBY', K_META, 'last_id', 1)
  local h = mkey(id)
  redis.call('HSET', h, 'p', payload, 'at', at, 'n', attempts, 'tok', 0)
  for j = 1, nerr do redis.call('RPUSH', ekey(id), ARGV[i + 5 + j]) end
  if state == 'failed' then
    redis.call('HSET', h, 'st', 'failed')
    redis.call('ZADD', K_FAILED, id, id)
  elseif state == 'delayed' and nb ~= '' and tonumber(nb) > NOW then
    redis.call('HSET', h, 'st', 'delayed', 'nb', nb)
    redis.call('ZADD', K_DELAYED, id, id)
    redis.call('ZADD', K_DUE, tonumber(nb), id)
  else
    enqueue(id, h)
  end
  redis.call('HINCRBY', K_META, 'bytes', #payload)
  out[#out + 1] = id
  i = i + 6 + nerr
end
redis.call('HINCRBY', K_META, 'enqueued', #out)
return out
"""

# ARGV: mpfx, owner, visibility_timeout_ms, limit
# -> {deliveries, ms until something falls due (-1: nothing), last stream id}
_TAKE = """
local owner, vt, limit = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
housekeep()
ensure_group()
local out = {}
local function lease(id, h)
  local n = redis.call('HINCRBY', h, 'n', 1)
  local tok = redis.call('HINCRBY', h, 'tok', 1)
  local dl = NOW + vt
  redis.call('HSET', h, 'st', 'in_progress', 'own', owner, 'dl', dl)
  redis.call('ZREM', K_READY, id)
  redis.call('ZREM', K_RECLAIM, id)
  redis.call('ZADD', K_INPROG, id, id)
  redis.call('ZADD', K_LEASES, dl, id)
  out[#out + 1] = {tonumber(id), redis.call('HGET', h, 'p'), n, redis.call('HGET', h, 'at'), tok,
                   redis.call('LRANGE', ekey(id), 0, -1)}
end
-- Expired deliveries first: claim their pending entries for this consumer.
for _, id in ipairs(redis.call('ZRANGE', K_RECLAIM, 0, limit - 1)) do
  local h = mkey(id)
  local sid = redis.call('HGET', h, 'sid')
  if sid and redis.call('HGET', h, 'st') == 'ready' then
    local got = redis.call('XCLAIM', K_STREAM, GROUP, owner, 0, sid)
    if #got > 0 then
      lease(id, h)
    else
      -- no longer pending (acknowledged by hand?): give it a fresh entry
      redis.call('ZREM', K_RECLAIM, id)
      drop_entry(h)
      redis.call('ZREM', K_READY, id)
      enqueue(id, h)
    end
  else
    redis.call('ZREM', K_RECLAIM, id)
  end
end
local rounds = 0
while #out < limit and rounds < 10 do
  rounds = rounds + 1
  local res = redis.call('XREADGROUP', 'GROUP', GROUP, owner, 'COUNT', limit - #out, 'STREAMS', K_STREAM, '>')
  if not res then break end
  local entries = res[1][2]
  if #entries == 0 then break end
  for _, e in ipairs(entries) do
    local sid, fields = e[1], e[2]
    local id = nil
    for i = 1, #fields, 2 do
      if fields[i] == 'id' then id = fields[i + 1] end
    end
    local h = id and mkey(id)
    if h and redis.call('HGET', h, 'sid') == sid and redis.call('HGET', h, 'st') == 'ready' then
      lease(id, h)
    else
      -- an entry no message points at (deleted meanwhile): drop it
      redis.call('XACK', K_STREAM, GROUP, sid)
      redis.call('XDEL', K_STREAM, sid)
    end
  end
end
local nxt = -1
for _, k in ipairs({K_DUE, K_LEASES}) do
  local first = redis.call('ZRANGE', k, 0, 0, 'WITHSCORES')
  if #first > 0 then
    local wait = math.max(0, tonumber(first[2]) - NOW)
    if nxt < 0 or wait < nxt then nxt = wait end
  end
end
if #out == 0 and redis.call('ZCARD', K_RECLAIM) > 0 then nxt = 0 end
local last = redis.call('XREVRANGE', K_STREAM, '+', '-', 'COUNT', 1)
local last_id = '0-0'
if #last > 0 then last_id = last[1][1] end
return {out, nxt, last_id}
"""

# ARGV: mpfx, id, tok, outcome, delay_ms, error JSON ('' for none), errors kept
_SETTLE = """
local id, tok, outcome = ARGV[2], ARGV[3], ARGV[4]
local delay, err, kept = tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7])
local h = mkey(id)
if redis.call('HGET', h, 'st') ~= 'in_progress' or redis.call('HGET', h, 'tok') ~= tok then
  return 0
end
local dl = tonumber(redis.call('HGET', h, 'dl'))
if dl and dl <= NOW then
  expire(id, h)  -- it belongs to the next taker
  return 0
end
if err ~= '' then
  redis.call('RPUSH', ekey(id), err)
  redis.call('LTRIM', ekey(id), -kept, -1)
end
redis.call('ZREM', K_INPROG, id)
redis.call('ZREM', K_LEASES, id)
drop_entry(h)
if outcome == 'complete' then
  redis.call('HINCRBY', K_META, 'bytes', -redis.call('HSTRLEN', h, 'p'))
  redis.call('DEL', h, ekey(id))
  redis.call('HINCRBY', K_META, 'completed', 1)
elseif outcome == 'retry' then
  redis.call('HINCRBY', K_META, 'retried', 1)
  if delay > 0 then
    local nb = NOW + delay
    redis.call('HSET', h, 'st', 'delayed', 'nb', nb)
    redis.call('HDEL', h, 'own', 'dl')
    redis.call('ZADD', K_DELAYED, id, id)
    redis.call('ZADD', K_DUE, nb, id)
  else
    enqueue(id, h)
  end
else
  redis.call('HSET', h, 'st', 'failed')
  redis.call('HDEL', h, 'own', 'dl')
  redis.call('ZADD', K_FAILED, id, id)
end
return 1
"""

# ARGV: mpfx
_STATS = """
housekeep()
local out = {}
for _, f in ipairs({'enqueued', 'completed', 'retried'}) do
  out[#out + 1] = tonumber(redis.call('HGET', K_META, f) or '0')
end
for _, k in ipairs({K_READY, K_DELAYED, K_INPROG, K_FAILED}) do
  out[#out + 1] = redis.call('ZCARD', k)
end
return out
"""

# ARGV: mpfx
_INFO = """
local oldest = redis.call('ZRANGE', K_READY, 0, 0)
local at = false
if #oldest > 0 then at = redis.call('HGET', mkey(oldest[1]), 'at') end
return {tonumber(redis.call('HGET', K_META, 'bytes') or '0'), at}
"""

# ARGV: mpfx, state ('' for all but completed), after, limit
_MESSAGES = """
housekeep()
local state, after, limit = ARGV[2], ARGV[3], tonumber(ARGV[4])
local keys = {K_READY, K_DELAYED, K_INPROG, K_FAILED}
if state ~= '' then keys = {STATE_KEY[state]} end
local ids = {}
for _, k in ipairs(keys) do
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', k, '(' .. after, '+inf', 'LIMIT', 0, limit)) do
    ids[#ids + 1] = tonumber(id)
  end
end
table.sort(ids)
local out = {}
for i = 1, math.min(limit, #ids) do out[i] = record(ids[i]) end
return out
"""

# ARGV: mpfx, id
_PEEK = """
housekeep()
if redis.call('EXISTS', mkey(ARGV[2])) == 0 then return false end
return record(ARGV[2])
"""

# ARGV: mpfx, id
_REQUEUE = """
local id = ARGV[2]
local h = mkey(id)
local st = redis.call('HGET', h, 'st')
if not st then return 0 end
if st == 'ready' then return 1 end
drop_entry(h)
unindex(id)
enqueue(id, h)
return 1
"""

# ARGV: mpfx, batch
_REQUEUE_FAILED = """
local ids = redis.call('ZRANGE', K_FAILED, 0, tonumber(ARGV[2]) - 1)
for _, id in ipairs(ids) do
  redis.call('ZREM', K_FAILED, id)
  enqueue(id, mkey(id))
end
return #ids
"""

# ARGV: mpfx, id
_DELETE = """
local id = ARGV[2]
local h = mkey(id)
if redis.call('EXISTS', h) == 0 then return 0 end
remove(id, h)
return 1
"""

# ARGV: mpfx, batch, state...
_PURGE = """
local left = tonumber(ARGV[2])
local gone = 0
for i = 3, #ARGV do
  local ids = redis.call('ZRANGE', STATE_KEY[ARGV[i]], 0, left - 1)
  for _, id in ipairs(ids) do
    remove(id, mkey(id))
  end
  gone = gone + #ids
  left = left - #ids
  if left <= 0 then break end
end
return gone
"""

# ARGV: mpfx, id, fix ('1' or '0') -> list of problems found (and fixed, with fix)
# Re-derives the indexes of one message from its hash, the truth.
_REPAIR = """
local id, fix = ARGV[2], ARGV[3] == '1'
local h = mkey(id)
local problems = {}
local st = redis.call('HGET', h, 'st')
if not st then
  for name, k in pairs(STATE_KEY) do
    if redis.call('ZSCORE', k, id) then
      problems[#problems + 1] = 'listed as ' .. name .. ' but the message is gone'
    end
  end
  if #problems > 0 and fix then unindex(id) end
  return problems
end
if not STATE_KEY[st] then
  -- an unknown state reads as ready: a duplicate is acceptable, a loss is not
  problems[#problems + 1] = 'unknown state ' .. st
  if fix then drop_entry(h); unindex(id); enqueue(id, h) end
  return problems
end
for name, k in pairs(STATE_KEY) do
  local listed = redis.call('ZSCORE', k, id) ~= false
  if listed ~= (name == st) then
    problems[#problems + 1] = (listed and 'listed' or 'not listed') .. ' as ' .. name .. ' while ' .. st
  end
end
local sid = redis.call('HGET', h, 'sid')
local pending = false
if sid then pending = #redis.call('XPENDING', K_STREAM, GROUP, sid, sid, 1) > 0 end
local needs_entry = false
if st == 'ready' then
  if not sid or #redis.call('XRANGE', K_STREAM, sid, sid) == 0 then
    problems[#problems + 1] = 'ready without a stream entry'
    needs_entry = true
  end
elseif st == 'in_progress' then
  if not pending then
    problems[#problems + 1] = 'in progress but not pending in the group'
    needs_entry = true
  elseif not redis.call('ZSCORE', K_LEASES, id) then
    problems[#problems + 1] = 'in progress without a lease deadline'
  end
elseif st == 'delayed' and not redis.call('ZSCORE', K_DUE, id) then
  problems[#problems + 1] = 'delayed without a due time'
end
if #problems > 0 and fix then
  if needs_entry then
    drop_entry(h); unindex(id); enqueue(id, h)
  else
    unindex(id)
    redis.call('ZADD', STATE_KEY[st], id, id)
    if st == 'ready' and pending then redis.call('ZADD', K_RECLAIM, id, id) end
    if st == 'delayed' then redis.call('ZADD', K_DUE, tonumber(redis.call('HGET', h, 'nb') or NOW), id) end
    if st == 'in_progress' then
      local dl = tonumber(redis.call('HGET', h, 'dl') or NOW)
      redis.call('HSET', h, 'dl', dl)
      redis.call('ZADD', K_LEASES, dl, id)
    end
  end
end
return problems
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisBackend(Backend):
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
        self._lock = threading.Lock()
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
        self._owner = f"{os.uname().nodename}:{self._pid}"
        self._scripts: dict[str, Any] = {
            name: client.register_script(_LUA_HEAD + body)
            for name, body in (
                ("put", _PUT),
                ("take", _TAKE),
                ("settle", _SETTLE),
                ("stats", _STATS),
                ("info", _INFO),
                ("messages", _MESSAGES),
                ("peek", _PEEK),
                ("requeue", _REQUEUE),
                ("requeue_failed", _REQUEUE_FAILED),
                ("delete", _DELETE),
                ("purge", _PURGE),
                ("repair", _REPAIR),
                ("restore", _RESTORE),
            )
        }
        self._known_topics = set()

    @property
    def owner(self) -> str:
        """This process's consumer name in each topic's group, and the lease
        owner that peek shows: ``host:pid``, renewed in a forked child."""
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

    @staticmethod
    def _fields(flat: list[Any]) -> dict[str, bytes]:
        return {_text(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}

    @staticmethod
    def _errors(raw: list[Any]) -> tuple[dict[str, Any], ...]:
        out = []
        for item in raw:
            try:
                out.append(json.loads(item))
            except ValueError:
                out.append({"reason": _text(item)})
        return tuple(out)

    def _record(self, row: list[Any]) -> Record:
        mid, flat, errors = row
        f = self._fields(flat)
        lease = None
        if "own" in f and "dl" in f:
            lease = Lease(_text(f["own"]), int(f["dl"]) / 1000)
        nb = f.get("nb")
        return Record(
            id=int(mid),
            payload=bytes(f.get("p", b"")),
            state=_text(f.get("st", b"ready")),
            attempts=int(f.get("n", 0)),
            enqueued_at=float(f.get("at", 0)),
            lease=lease,
            errors=self._errors(errors),
            not_before=int(nb) / 1000 if nb is not None else None,
        )

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
            res = self._run("put", topic, limit, *payloads)
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
        while True:
            out, nxt, last_id = self._run("take", topic, self.owner, self._vt_ms, limit)
            if out:
                return [
                    Delivery(
                        id=int(mid),
                        payload=bytes(payload),
                        attempts=int(n),
                        enqueued_at=float(at),
                        token=(int(mid), int(tok)),
                        errors=self._errors(errors),
                    )
                    for mid, payload, n, at, tok, errors in out
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
            args += [r.payload, repr(float(r.enqueued_at)), r.attempts, r.state, nb, len(r.errors)]
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
        return [self._record(row) for row in rows]

    def peek(self, topic: str, id: int) -> Record:
        row = self._run("peek", topic, id)
        if row is None:
            raise MessageNotFound(topic, id)
        return self._record(row)

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
        for k in keys[2:]:
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
            self._closed = True
            try:
                self._client.close()
            except redis.exceptions.RedisError:
                pass

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
