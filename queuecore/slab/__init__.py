"""The slab backend: a directory of preallocated, memory-mapped slab files.

Layout of a queue directory (see docs/queuecore.md for the byte formats)::

    <root>/<topic>/meta            counters, log positions, the undo record, the topic's mutex
    <root>/<topic>/lock            flock'ed by openers and closers (and around every change
                                   when the topic is locked with flock)
    <root>/<topic>/sync            flock'ed by the process whose fsync runs
    <root>/<topic>/users           flock'ed shared by every process that opened the topic
    <root>/<topic>/bell            written to wake takers waiting in other processes
    <root>/<topic>/m000000000001.slab   the main log: ready, in-progress and done entries
    <root>/<topic>/d000000000001.slab   the delayed log: retries waiting for their time
    <root>/<topic>/f000000000001.slab   the failed log: failed messages with their errors
    <root>/.owners/<owner>.lock    flock'ed by each taking process while it lives
    <root>/.owners/<owner>.dead    a gone owner's file, kept a day for its name
    <root>/.owners/gone            one byte per owner seen dead or closed
    <root>/.consumers/<key>.json   consumer heartbeats

The modules, from the bytes up (each says at its top what it owns and what
it must not do): ``format`` (layouts), ``slabfile`` (one mapped slab and its
entries), ``log`` (a topic's logs of slabs), ``lock``, ``change`` (one
change and its undo record), ``recovery``, ``topic`` (one topic's files),
``durability`` (group commit), ``operations`` (put, take, settle, move),
``owners`` (lease owners, reclaim), ``browse``, ``check``, and ``backend``
(``SlabBackend``, which ties them together). ``crashpoints`` holds the
named crash points of the reliability tests.

This package re-exports what tests and tools read: the backend, the topic
and slab classes, and the format's layouts and offsets. A module-level
setting is read in the module that uses it (``log.MAPPED_SLABS``,
``operations.PROMOTE_COST_FACTOR``, ``recovery._BOOT``): a patch must go
there, not here (``MAPPED_SLABS`` is re-exported for reading only).
"""

from __future__ import annotations

from queuecore.slab.backend import SlabBackend
from queuecore.slab.format import (
    DELAYED,
    DONE,
    ENTRY_MAGIC,
    FAILED,
    HEAD,
    HEADER_SIZE,
    LOCK_KIND_OFF,
    MAIN,
    META_SIZE,
    MOVED,
    MUT,
    MUT_OFF,
    MUTEX_OFF,
    READY,
    SLAB_HEADER_SIZE,
    TAKEN,
    _align,
    _Meta,
    _now,
)
from queuecore.slab.log import MAPPED_SLABS
from queuecore.slab.slabfile import _Entry, _Slab
from queuecore.slab.topic import _Topic

__all__ = [
    "DELAYED",
    "DONE",
    "ENTRY_MAGIC",
    "FAILED",
    "HEAD",
    "HEADER_SIZE",
    "LOCK_KIND_OFF",
    "MAIN",
    "MAPPED_SLABS",
    "META_SIZE",
    "MOVED",
    "MUT",
    "MUT_OFF",
    "MUTEX_OFF",
    "READY",
    "SLAB_HEADER_SIZE",
    "TAKEN",
    "SlabBackend",
    "_Entry",
    "_Meta",
    "_Slab",
    "_Topic",
    "_align",
    "_now",
]
