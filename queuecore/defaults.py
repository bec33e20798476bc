"""Every default of queuecore, in one place, each with what it means."""

from __future__ import annotations

from typing import Any

MiB = 1024 * 1024

DEFAULTS: dict[str, Any] = {
    # Size of one slab file. A message larger than a slab gets a slab of its own size.
    "slab_size": 64 * MiB,
    # Each put returns only once its message is on disk (concurrent puts share one fsync).
    "fsync_put": True,
    # Each take, complete, retry and fail is on disk before it returns.
    "fsync_take": False,
    # With fsync_put off: fsync at most this many seconds after a write (None: never by time).
    "fsync_interval": None,
    # With fsync_put off: fsync after this many writes (None: never by count).
    "fsync_threshold": None,
    # Most messages a topic holds (ready + delayed + in progress); None: no limit.
    "max_queue_size": None,
    # Largest encoded message in bytes.
    "max_message_size": 16 * MiB,
    # Seconds a take's lease lasts before the message is handed to another taker.
    "visibility_timeout": 300.0,
    # How values are encoded: "msgpack", "json", "raw" (bytes only) or a Serializer.
    "serializer": "msgpack",
    # Redis backend: prefix of every key it writes.
    "prefix": "dq",
    # Redis backend: seconds a process holding leases stays alive without
    # refreshing its liveness record (it refreshes every third of this);
    # past it, its messages are delivered again. Slab files need none: the
    # kernel tells when an owner dies.
    "owner_timeout": 5.0,
}

OPTION_NAMES = frozenset(DEFAULTS)

# Topic names: 1 to 100 of these characters, not starting with a dot.
TOPIC_MAX_LENGTH = 100

# States a message can be in, as shown by Message.state and messages(state=...).
STATES = ("ready", "delayed", "in_progress", "completed", "failed")

# Keys of each topic's entry in Queues.stats().
STATS_KEYS = (
    "enqueued",
    "ready",
    "delayed",
    "in_progress",
    "completed",
    "retried",
    "failed",
    "num_slabs",
    "num_active_slabs",
)

# The longest a lease may be extended at once (a year): backends keep
# deadlines as numbers that must stay exact.
MAX_LEASE_SECONDS = 365 * 24 * 3600.0

# Seconds a Queues trusts its last read of the paused topics: a pause (or a
# resume) reaches every take within this.
PAUSE_CHECK_INTERVAL = 0.5

# Errors kept with a message (the newest ones); older ones are dropped.
MAX_ERRORS_KEPT = 10
# Producers the Redis backend remembers per topic (a message names its own
# by a digest; see queuecore/lua/prelude.lua). Each is about 100 bytes.
MAX_ORIGINS = 10_000
# Longest reason kept per error, in characters (tracebacks are cut from the middle).
MAX_ERROR_LENGTH = 16 * 1024
