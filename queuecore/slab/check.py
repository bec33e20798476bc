"""``check(fix)``: read every topic's slabs whole and compare what they hold
with what the topic records: damaged entries and statuses, the counters,
the slab headers (their id ranges and live counts, and the fields an open
tolerates), and the head and cursor (never past a live entry). Reports
each finding; with ``fix``, rewrites the headers and rebuilds the counters
and positions (recovery.recount), stepping over the damage.

Without ``fix`` it changes nothing; with it, nothing but what it reports.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from queuecore.errors import CorruptSlab
from queuecore.slab.browse import state_of
from queuecore.slab.format import DELAYED, FAILED, LOG_PREFIX, MAIN, READY, TAKEN
from queuecore.slab.slabfile import _Slab

if TYPE_CHECKING:
    from queuecore.slab.backend import SlabBackend
    from queuecore.slab.topic import _Topic


def check_topics(b: SlabBackend, fix: bool) -> dict[str, Any]:
    problems: list[str] = []
    fixed: list[str] = []
    per_topic: dict[str, Any] = {}
    for name in sorted(b.topics()):
        per_topic[name] = _check_topic(name, b._get(name), fix, problems, fixed)
    return {"ok": not problems or (fix and bool(fixed)), "problems": problems, "fixed": fixed,
            "topics": per_topic}


class _Survey:
    """What one topic's slabs hold, read whole (lock held)."""

    def __init__(self) -> None:
        self.counts = {"ready": 0, "in_progress": 0, "delayed": 0, "failed": 0}
        self.flips = 0  # entries whose status CRC fails
        self.damage: list[tuple[str, int, int]] = []  # (slab file, offset, next sound offset)
        # Per slab, by (log, seq): [lowest id, highest id, live entries]
        # (holding the slabs themselves would keep every one of them mapped).
        self.spans: dict[tuple[int, int], list[int]] = {}
        self.ends: dict[tuple[int, int], int] = {}  # where each slab's records stop
        self.first_live: dict[int, tuple[int, int]] = {}  # per log
        self.first_ready: tuple[int, int] | None = None

    def on_damage(self, slab: _Slab | None, off: int, nxt: int) -> None:
        self.damage.append((os.path.basename(slab.path) if slab else "slab header", off, nxt))

    def read(self, t: _Topic) -> None:
        spans, counts = self.spans, self.counts
        for log in (MAIN, DELAYED, FAILED):
            for seq in t.seqs(log):
                try:
                    slab = t.slab(log, seq)
                except CorruptSlab:
                    continue  # reported by the scan below
                if slab is not None:
                    spans[(log, seq)] = [0, 0, 0]
            for e in t.entries(log, None, self.on_damage, self.ends):
                span = spans.setdefault((log, e.slab.seq), [0, 0, 0])
                span[0] = e.id if not span[0] else min(span[0], e.id)
                span[1] = max(span[1], e.id)
                if e.status in (READY, TAKEN):
                    span[2] += 1
                    self.first_live.setdefault(log, (e.slab.seq, e.off))
                    if log == MAIN and e.status == READY and self.first_ready is None:
                        self.first_ready = (e.slab.seq, e.off)
                if not e.mut_ok:
                    self.flips += 1
                state = state_of(log, e.status)
                if state in counts:
                    counts[state] += 1


def _check_topic(name: str, t: _Topic, fix: bool, problems: list[str], fixed: list[str]) -> dict[str, Any]:
    s = _Survey()
    with t.locked():
        s.read(t)
        m = t.meta
        recorded = {"ready": int(m.ready), "in_progress": int(m.in_progress),
                    "delayed": int(m.delayed), "failed": int(m.failed)}
        for slab_name, off, nxt in s.damage:
            problems.append(f"{name}/{slab_name}: damaged entry at offset {off} ({nxt - off} bytes)")
        if s.flips:
            problems.append(f"{name}: {s.flips} entries with a damaged status (read as ready)")
        _check_hints(name, t, s, fix, problems, fixed)
        _check_headers(name, t, s, fix, problems, fixed)
        if s.counts != recorded:
            problems.append(f"{name}: counters {recorded} do not match the slabs {s.counts}")
        lost_from = _check_positions(name, t, s, problems)
        if fix and (s.damage or s.flips or s.counts != recorded or lost_from):
            m.needs_recount = 1  # a kill before the rebuild below is done
            for e_log in (MAIN, DELAYED, FAILED):
                for e in t.entries(e_log):
                    if not e.mut_ok:
                        e.set(READY if e_log != MAIN or e.status != TAKEN else e.status,
                              e.attempts, e.owner, e.token, e.deadline)
            t._recount()
            fixed.append(f"{name}: stepped over {len(s.damage)} damaged entries and rebuilt the counters")
        return {"counts": s.counts, "damaged": len(s.damage), "dropped": int(m.dropped)}


def _check_hints(name: str, t: _Topic, s: _Survey, fix: bool, problems: list[str], fixed: list[str]) -> None:
    # The header's id range and live count are hints no checksum covers:
    # compare them with what the slab holds.
    bad_spans = 0
    for key, (lo, hi, live) in s.spans.items():
        slab = t.slab(*key)
        if slab is None or (slab.hdr.min_id, slab.hdr.max_id, slab.hdr.live) == (lo, hi, live):
            continue
        bad_spans += 1
        problems.append(
            f"{name}/{os.path.basename(slab.path)}: header says ids "
            f"{slab.hdr.min_id}..{slab.hdr.max_id} ({slab.hdr.live} live), "
            f"the slab holds {lo}..{hi} ({live} live)")
        if fix:
            slab.set_hints(lo, hi)
            slab.hdr.live = live
    if fix and bad_spans:
        fixed.append(f"{name}: corrected the header hints of {bad_spans} slabs")


def _check_headers(name: str, t: _Topic, s: _Survey, fix: bool, problems: list[str], fixed: list[str]) -> None:
    # Every other header field: what the open tolerated, and the end a
    # sealed slab was given (where its records stop).
    headers_fixed = 0
    for key in s.spans:
        slab = t.slab(*key)
        if slab is None:
            continue
        sealed_end = None if slab.seq == t.lms[slab.log].tail_seq else s.ends.get(key)
        if sealed_end is None and slab.seq != t.lms[slab.log].tail_seq:
            continue  # not scanned (damaged beyond reading): reported above
        for what in slab.header_problems(sealed_end):
            problems.append(f"{name}/{os.path.basename(slab.path)}: slab header: {what}")
            if fix:
                slab.fix_header(sealed_end)
                headers_fixed += 1
    if headers_fixed:
        fixed.append(f"{name}: rewrote {headers_fixed} damaged slab header fields")


def _check_positions(name: str, t: _Topic, s: _Survey, problems: list[str]) -> bool:
    """Whether a scan's start is past an entry it must see. Scans start at a
    log's head (reclaim) and the main log's cursor (take): past a live
    entry, that entry is never seen."""
    lost_from = False
    for log, pos in s.first_live.items():
        lm = t.lms[log]
        if (lm.head_seq, lm.head_off) > pos:
            problems.append(f"{name}: the head of log {LOG_PREFIX[log]} is past a live entry")
            lost_from = True
    cursor = (t.lms[MAIN].cursor_seq, t.lms[MAIN].cursor_off)
    if s.first_ready is not None and cursor > s.first_ready:
        problems.append(f"{name}: the take cursor is past a ready entry")
        lost_from = True
    return lost_from
