"""dq against the Python disk queues a user would otherwise pick (issue 7).

    .venv/bin/python bench/run.py               # everything, writes bench/results.md
    .venv/bin/python bench/run.py --only dq     # dq alone (no peers installed or run)
    .venv/bin/python bench/run.py --quick       # a smoke run in seconds (writes nothing
                                                # unless --out is given)

Each figure is the median of several repetitions, each in a fresh
directory; the libraries take turns inside a repetition so that noise from
other work on the machine spreads over all of them. See bench/README.md for
what each workload measures.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import multiprocessing as mp
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from peers import (  # noqa: E402
    ADAPTERS,
    PIP_PACKAGES,
    REAL_PEERS,
    Adapter,
    Dq,
    _version,
    forget_redis,
    redis_answers,
)

SIZES = (200, 4096, 256 * 1024)
SIZE_NAMES = {200: "200 B", 4096: "4 KiB", 256 * 1024: "256 KiB"}
MiB = 1024 * 1024


@dataclass
class Profile:
    """How long and how big: the full run and the --quick smoke run."""

    reps: int
    budget: float  # seconds one measurement runs at most
    backlog: dict[int, int]  # messages waiting before a take measurement, per payload size
    fill_cap: float  # seconds a backlog fill may take at most
    xproc_budget: float
    latency_messages: int
    idle_seconds: float
    big_messages: int  # the backlog for RSS and open time
    stats_topics: int
    stats_messages: int
    group_budget: float


FULL = Profile(
    reps=3,
    budget=0.5,
    backlog={200: 20_000, 4096: 5_000, 256 * 1024: 400},
    fill_cap=3.0,
    xproc_budget=1.0,
    latency_messages=1000,
    idle_seconds=2.0,
    big_messages=1_000_000,
    stats_topics=50,
    stats_messages=1_000_000,
    group_budget=1.0,
)
QUICK = Profile(
    reps=1,
    budget=0.03,
    backlog={200: 300, 4096: 100, 256 * 1024: 10},
    fill_cap=0.3,
    xproc_budget=0.05,
    latency_messages=20,
    idle_seconds=0.2,
    big_messages=5_000,
    stats_topics=5,
    stats_messages=1_000,
    group_budget=0.05,
)


def make_value(size: int, **extra: Any) -> dict[str, Any]:
    """A dict whose msgpack encoding is ``size`` bytes (a typical small
    message: an id, a kind, a few fields, and a body to fill the rest)."""
    value: dict[str, Any] = {
        "uuid": "7d0f2f6e-8a4f-4d51-9a51-3c3ae1a1c0de",
        "kind": "order.created",
        "n": 12345,
        **extra,
        "body": b"",
    }
    base = len(msgpack.packb(value))
    body = size - base
    # The bin header grows from 2 to 3 to 5 bytes with the body's length.
    for header in (0, 1, 3):
        value["body"] = b"x" * max(0, body - header)
        if len(msgpack.packb(value)) == size:
            break
    return value


# -- results ----------------------------------------------------------------


@dataclass
class Cell:
    value: float | None  # messages per second (or the unit of its row)
    note: str = ""  # why there is no value, or a remark
    samples: list[float] = field(default_factory=list)


class Results:
    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Cell]] = {}
        self.facts: dict[str, Any] = {}

    def add(self, row: str, lib: str, value: float | None, note: str = "") -> None:
        cell = self.rows.setdefault(row, {}).setdefault(lib, Cell(None, note))
        if value is None:
            cell.note = note
            return
        cell.samples.append(value)
        cell.value = statistics.median(cell.samples)
        if note:
            cell.note = note

    def get(self, row: str, lib: str) -> float | None:
        cell = self.rows.get(row, {}).get(lib)
        return cell.value if cell else None


# -- helpers ------------------------------------------------------------------


def fresh_dir(root: str, name: str) -> str:
    os.makedirs(root, exist_ok=True)
    return tempfile.mkdtemp(prefix=f"{name}-", dir=root)


def rm(path: str) -> None:
    forget_redis(path)
    shutil.rmtree(path, ignore_errors=True)


def put_loop(put: Callable[[], Any], budget: float, max_ops: int) -> float:
    """Messages per second of ``put`` run until ``budget`` seconds or ``max_ops``."""
    n = 0
    t0 = time.perf_counter()
    while n < max_ops:
        put()
        n += 1
        if not n & 31 and time.perf_counter() - t0 >= budget:
            break
    return n / (time.perf_counter() - t0)


def fill(a: Adapter, value: Any, n: int, cap: float) -> int:
    """Put up to ``n`` messages in at most ``cap`` seconds; returns how many."""
    done = 0
    t0 = time.perf_counter()
    if isinstance(a, Dq):
        while done < n and time.perf_counter() - t0 < cap:
            k = min(1000, n - done)
            a.put_many([value] * k)
            done += k
        return done
    while done < n:
        a.put(value)
        done += 1
        if not done & 63 and time.perf_counter() - t0 >= cap:
            break
    return done


def drain_loop(a: Adapter, budget: float, max_ops: int) -> tuple[int, float]:
    n = 0
    t0 = time.perf_counter()
    while n < max_ops:
        r = a.take()
        if r is None:
            break
        a.ack(r[1])
        n += 1
        if not n & 31 and time.perf_counter() - t0 >= budget:
            break
    return n, time.perf_counter() - t0


def rss() -> dict[str, int]:
    """This process's resident memory from /proc: total, anonymous, file-backed (bytes)."""
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(rest.split()[0]) * 1024
    return out


# -- single-process workloads -------------------------------------------------


def w_put(cls: type[Adapter], root: str, size: int, p: Profile, fsync: bool = False) -> float:
    d = fresh_dir(root, cls.name)
    try:
        a = cls(d, fsync=fsync)
        value = make_value(size)
        rate = put_loop(lambda: a.put(value), p.budget, p.backlog[size] * (1 if not fsync else 10))
        a.close()
        return rate
    finally:
        rm(d)


def w_take(cls: type[Adapter], root: str, size: int, p: Profile) -> tuple[float, int]:
    """take+ack from a backlog filled beforehand (the queue is reopened, as a
    consumer process would). Returns (rate, backlog)."""
    d = fresh_dir(root, cls.name)
    try:
        a = cls(d)
        backlog = fill(a, make_value(size), p.backlog[size], p.fill_cap)
        a.close()
        a = cls(d)
        n, secs = drain_loop(a, p.budget, backlog)
        a.close()
        return n / secs, backlog
    finally:
        rm(d)


def w_cycle(cls: type[Adapter], root: str, p: Profile) -> float:
    d = fresh_dir(root, cls.name)
    try:
        a = cls(d)
        value = make_value(200)

        def one() -> None:
            a.put(value)
            _, h = a.take()  # type: ignore[misc]
            a.ack(h)

        rate = put_loop(one, p.budget, p.backlog[200])
        a.close()
        return rate
    finally:
        rm(d)


def w_dq_batch(root: str, p: Profile, kind: str, batch: int = 100, fsync_put: bool = False) -> float:
    d = fresh_dir(root, "dq-batch")
    try:
        a = Dq(d, fsync=fsync_put)
        value = make_value(200)
        values = [value] * batch
        max_ops = max(batch, p.backlog[200] * 2)
        if kind == "put_many":
            n = 0
            t0 = time.perf_counter()
            while n < max_ops and (time.perf_counter() - t0 < p.budget or n == 0):
                a.put_many(values)
                n += batch
        elif kind == "take_many":
            backlog = fill(a, value, max_ops, p.fill_cap * 2)
            a.close()
            a = Dq(d, fsync=False)
            n = 0
            t0 = time.perf_counter()
            while n < backlog and (time.perf_counter() - t0 < p.budget or n == 0):
                tasks = a.take_many(batch)
                if not tasks:
                    break
                a.complete_many(tasks)
                n += len(tasks)
        else:  # the cycle: put_many, take_many, complete_many
            n = 0
            t0 = time.perf_counter()
            while n < max_ops and (time.perf_counter() - t0 < p.budget or n == 0):
                a.put_many(values)
                tasks = a.take_many(batch)
                a.complete_many(tasks)
                n += len(tasks)
        secs = time.perf_counter() - t0
        a.close()
        return n / secs
    finally:
        rm(d)


def w_group_threads(root: str, p: Profile, threads: int, **options: Any) -> float:
    import threading

    d = fresh_dir(root, "dq-group")
    try:
        a = Dq(d, **options)
        value = make_value(200)
        a.put(value)  # create the topic first
        counts = [0] * threads
        stop = time.perf_counter() + p.group_budget
        start = threading.Barrier(threads + 1)

        def producer(i: int) -> None:
            start.wait()
            n = 0
            while time.perf_counter() < stop:
                a.put(value)
                n += 1
            counts[i] = n

        pool = [threading.Thread(target=producer, args=(i,)) for i in range(threads)]
        for t in pool:
            t.start()
        t0 = time.perf_counter()
        stop = t0 + p.group_budget
        start.wait()
        for t in pool:
            t.join()
        secs = time.perf_counter() - t0
        a.close()
        return sum(counts) / secs
    finally:
        rm(d)


# -- multi-process workloads (children are started with spawn) ----------------


def _child_putter(lib: str, path: str, budget: float, max_n: int, barrier: Any, out: Any,
                  options: dict[str, Any], sentinel: bool) -> None:
    cls = ADAPTERS[lib]
    a = cls(path, **options) if options else cls(path)
    value = make_value(200)
    barrier.wait()
    t0 = time.monotonic()
    n = 0
    while n < max_n:
        a.put(value)
        n += 1
        if not n & 15 and time.monotonic() - t0 >= budget:
            break
    if sentinel:
        a.put({"stop": n})
    out.put(("producer", n, time.monotonic()))
    a.close()


def _child_consumer(lib: str, path: str, barrier: Any, out: Any) -> None:
    a = ADAPTERS[lib](path)
    blocking = isinstance(a, Dq)
    barrier.wait()
    n = 0
    while True:
        r = a.take_blocking(1.0) if blocking else a.take()  # type: ignore[attr-defined]
        if r is None:
            if not blocking:
                time.sleep(0.001)  # the peers have no cross-process wake-up: poll
            continue
        value, handle = r
        a.ack(handle)
        if "stop" in value:
            break
        n += 1
    out.put(("consumer", n, time.monotonic()))
    a.close()


def w_xproc(lib: str, root: str, p: Profile) -> float:
    """One producer process and one consumer process, started together:
    messages the consumer completed per second, until it has them all."""
    ctx = mp.get_context("spawn")
    d = fresh_dir(root, lib)
    try:
        ADAPTERS[lib](d).close()  # create it before two processes race to
        barrier = ctx.Barrier(3)
        out = ctx.Queue()
        procs = [
            ctx.Process(target=_child_putter,
                        args=(lib, d, p.xproc_budget, p.backlog[200] * 4, barrier, out, {}, True)),
            ctx.Process(target=_child_consumer, args=(lib, d, barrier, out)),
        ]
        for proc in procs:
            proc.start()
        barrier.wait(timeout=60)
        t0 = time.monotonic()
        got = dict((role, (n, at)) for role, n, at in (out.get(timeout=120) for _ in procs))
        for proc in procs:
            proc.join(timeout=30)
        n, end = got["consumer"]
        return n / (end - t0)
    finally:
        rm(d)


def w_group_procs(root: str, p: Profile, procs_n: int, **options: Any) -> float:
    ctx = mp.get_context("spawn")
    d = fresh_dir(root, "dq-gproc")
    try:
        Dq(d, **options).close()
        barrier = ctx.Barrier(procs_n + 1)
        out = ctx.Queue()
        procs = [
            ctx.Process(target=_child_putter,
                        args=("dq", d, p.group_budget, 10**9, barrier, out, options, False))
            for _ in range(procs_n)
        ]
        for proc in procs:
            proc.start()
        barrier.wait(timeout=60)
        t0 = time.monotonic()
        results = [out.get(timeout=120) for _ in procs]
        for proc in procs:
            proc.join(timeout=30)
        total = sum(n for _, n, _ in results)
        end = max(at for _, _, at in results)
        return total / (end - t0)
    finally:
        rm(d)


def _child_latency_consumer(path: str, barrier: Any, out: Any, idle: float) -> None:
    a = Dq(path)
    a.qs.take("bench", timeout=0)  # open the topic before the clock starts
    barrier.wait()
    lats = []
    while True:
        task = a.qs.take("bench", timeout=5.0)
        if task is None:
            break
        now = time.monotonic()
        task.complete()
        if "stop" in task.value:
            break
        lats.append(now - task.value["t"])
    # Idle: block in take with nothing coming; what does waiting cost?
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    w0 = time.monotonic()
    a.qs.take("bench", timeout=idle)
    wall = time.monotonic() - w0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    wakes = r1.ru_nvcsw - r0.ru_nvcsw
    out.put((lats, cpu, wall, wakes))
    a.close()


def _child_latency_producer(path: str, barrier: Any, n: int, gap: float) -> None:
    a = Dq(path)
    barrier.wait()
    time.sleep(0.05)  # let the consumer block in take
    for _ in range(n):
        a.qs.put("bench", make_value(200, t=time.monotonic()))
        time.sleep(gap)
    a.qs.put("bench", {"stop": n})
    a.close()


def w_latency(root: str, p: Profile) -> tuple[list[float], float, float, int]:
    ctx = mp.get_context("spawn")
    d = fresh_dir(root, "dq-latency")
    try:
        Dq(d).close()
        barrier = ctx.Barrier(2)
        out = ctx.Queue()
        cons = ctx.Process(target=_child_latency_consumer, args=(d, barrier, out, p.idle_seconds))
        prod = ctx.Process(target=_child_latency_producer, args=(d, barrier, p.latency_messages, 0.001))
        cons.start()
        prod.start()
        lats, cpu, wall, wakes = out.get(timeout=120)
        prod.join(timeout=30)
        cons.join(timeout=30)
        return lats, cpu, wall, wakes
    finally:
        rm(d)


def _child_open_probe(path: str, topic: str, out: Any) -> None:
    from queuecore import Queues

    gc.collect()
    before = rss()
    t0 = time.perf_counter()
    qs = Queues(path, fsync_put=False)
    task = qs.take(topic, timeout=0)
    opened = time.perf_counter() - t0
    assert task is not None, "the topic should hold messages"
    task.complete()
    for task in qs.take_many(topic, 1000, timeout=0):
        task.complete()
    after = rss()
    out.put((opened, before, after))
    qs.close()


def _child_die_holding(path: str, topic: str) -> None:
    from queuecore import Queues

    qs = Queues(path, fsync_put=False)
    qs.take(topic, timeout=0)  # a lease this process never settles
    qs.put(topic, make_value(200))
    os.kill(os.getpid(), signal.SIGKILL)


def _spawn_get(target: Callable[..., None], *args: Any) -> Any:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, out))
    proc.start()
    result = out.get(timeout=600)
    proc.join(timeout=60)
    return result


def w_backlog(root: str, p: Profile) -> dict[str, Any]:
    """RSS of a consumer and the time to open a topic with a big backlog."""
    from queuecore import Queues

    d = fresh_dir(root, "dq-backlog")
    try:
        value = make_value(200)
        qs = Queues(d, fsync_put=False)
        t0 = time.perf_counter()
        left = p.big_messages
        while left:
            k = min(1000, left)
            qs.put_many("big", [value] * k)
            left -= k
        fill_secs = time.perf_counter() - t0
        qs.put_many("small", [value] * 2000)
        qs.close()
        small = _spawn_get(_child_open_probe, d, "small")
        big = _spawn_get(_child_open_probe, d, "big")
        ctx = mp.get_context("spawn")
        killer = ctx.Process(target=_child_die_holding, args=(d, "big"))
        killer.start()
        killer.join(timeout=60)
        crashed = _spawn_get(_child_open_probe, d, "big")
        # What a reboot after a power loss looks like to the next opener: the
        # topic was not closed, and the meta names another boot. It rebuilds
        # every counter from the slabs.
        from queuecore.slab import _Meta

        with open(os.path.join(d, "big", "meta"), "r+b") as fh:
            for name, value in (("clean", 0), ("boot_hi", 0), ("boot_lo", 0)):
                f = getattr(_Meta, name)
                fh.seek(f.offset)
                fh.write(value.to_bytes(f.size, "little"))
        rebuilt = _spawn_get(_child_open_probe, d, "big")
        return {
            "fill_rate": p.big_messages / fill_secs,
            "small": small,
            "big": big,
            "crashed": crashed,
            "rebuilt": rebuilt,
        }
    finally:
        rm(d)


def _child_stats_probe(path: str, out: Any) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "dqsite.settings"
    os.environ["DQ_LOCATION"] = path
    import django

    django.setup()
    from dqadmin.stats import build_stats
    from queuecore import Queues

    qs = Queues(path)
    t0 = time.perf_counter()
    stats = build_stats(qs)
    cold = time.perf_counter() - t0
    warm = []
    for _ in range(7):
        t0 = time.perf_counter()
        build_stats(qs)
        warm.append(time.perf_counter() - t0)
    plain = []
    for _ in range(7):
        t0 = time.perf_counter()
        qs.stats()
        plain.append(time.perf_counter() - t0)
    total = sum(int(row["ready"]) for row in stats["topics"].values())
    out.put((cold, statistics.median(warm), statistics.median(plain), len(stats["topics"]), total))
    qs.close()


def w_stats(root: str, p: Profile) -> tuple[float, float, float, int, int]:
    from queuecore import Queues

    d = fresh_dir(root, "dq-stats")
    try:
        value = make_value(200)
        per_topic = p.stats_messages // p.stats_topics
        qs = Queues(d, fsync_put=False)
        for i in range(p.stats_topics):
            left = per_topic
            while left:
                k = min(1000, left)
                qs.put_many(f"topic{i:02d}", [value] * k)
                left -= k
        qs.close()
        return _spawn_get(_child_stats_probe, d)
    finally:
        rm(d)


# -- the machine --------------------------------------------------------------


def raw_fsync_rates(root: str, budget: float) -> dict[str, float]:
    """The disk's own limit: write 200 B then fsync, in a loop."""
    d = fresh_dir(root, "fsync-probe")
    data = b"x" * 200
    out = {}
    try:
        for kind in ("append+fsync", "overwrite+fdatasync"):
            fd = os.open(os.path.join(d, kind), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                if kind.startswith("overwrite"):
                    os.write(fd, data)
                    os.fsync(fd)
                n = 0
                t0 = time.perf_counter()
                while time.perf_counter() - t0 < budget:
                    if kind.startswith("append"):
                        os.write(fd, data)
                        os.fsync(fd)
                    else:
                        os.pwrite(fd, data, 0)
                        os.fdatasync(fd)
                    n += 1
                out[kind] = n / (time.perf_counter() - t0)
            finally:
                os.close(fd)
    finally:
        rm(d)
    return out


def machine_facts(root: str) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    try:
        with open("/proc/cpuinfo") as fh:
            models = [line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")]
        facts["cpu"] = models[0] if models else platform.processor()
    except OSError:
        facts["cpu"] = platform.processor() or "?"
    facts["cores"] = os.cpu_count()
    try:
        with open("/proc/meminfo") as fh:
            mem = {line.split(":")[0]: line.split(":")[1].strip() for line in fh}
        facts["ram"] = f"{int(mem['MemTotal'].split()[0]) / 1024 / 1024:.1f} GiB"
    except (OSError, KeyError, ValueError):
        facts["ram"] = "?"
    real = os.path.realpath(root)
    best = ("", "?", "?", "")
    try:
        with open("/proc/self/mounts") as fh:
            for line in fh:
                dev, mnt, fstype, opts = line.split()[:4]
                if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best[0]):
                    best = (mnt, dev, fstype, opts)
    except OSError:
        pass
    mnt, dev, fstype, opts = best
    rotational = "?"
    name = os.path.basename(dev)
    for candidate in (name, name.rstrip("0123456789"), name.rstrip("0123456789").removesuffix("p")):
        path = f"/sys/block/{candidate}/queue/rotational"
        if os.path.exists(path):
            with open(path) as fh:
                rotational = f"rotational flag {fh.read().strip()} (a virtio disk: the flag says little)"
            break
    facts["disk"] = f"{dev} mounted at {mnt} ({fstype}, {opts.split(',')[0] if opts else '?'}), {rotational}"
    facts["bench_dir"] = real
    facts["kernel"] = platform.release()
    facts["python"] = sys.version.split()[0] + f" ({platform.python_implementation()})"
    try:
        facts["loadavg"] = " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        facts["loadavg"] = "?"
    return facts


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def install_peers(libs: list[str]) -> None:
    """pip-install the peers that are missing (bench-only, not in pyproject)."""
    wanted = {"pq-ack": "persistqueue", "pq-file": "persistqueue", "litequeue": "litequeue",
              "huey": "huey", "diskcache": "diskcache", "queuelib": "queuelib"}
    missing = [m for lib, m in wanted.items() if lib in libs and importlib.util.find_spec(m) is None]
    if not missing:
        return
    print(f"installing the peers into {sys.prefix}: {' '.join(PIP_PACKAGES)}", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *PIP_PACKAGES], check=True)
    importlib.invalidate_caches()


# -- the run ----------------------------------------------------------------


MAIN_ROWS = [
    ("put", "put"),
    ("take", "take+ack"),
    ("cycle", "put+take+ack cycle"),
    ("fsync", "put, fsync per put"),
    ("xproc", "1 producer + 1 consumer process"),
]


def run(libs: list[str], root: str, p: Profile, log: Callable[[str], None]) -> Results:
    res = Results()
    peers = [lib for lib in libs if lib != "dq"]
    for rep in range(p.reps):
        log(f"repetition {rep + 1}/{p.reps}")
        for lib in libs:
            cls = ADAPTERS[lib]
            res.add("put", lib, w_put(cls, root, 200, p))
            rate, backlog = w_take(cls, root, 200, p)
            res.add("take", lib, rate, f"backlog {backlog}")
            res.add("cycle", lib, w_cycle(cls, root, p))
            if cls.can_fsync:
                res.add("fsync", lib, w_put(cls, root, 200, p, fsync=True))
            else:
                res.add("fsync", lib, None, "n/a: no fsync option")
            if cls.multiprocess:
                res.add("xproc", lib, w_xproc(lib, root, p))
            else:
                res.add("xproc", lib, None, "n/a: not multi-process")
            for size in SIZES[1:]:
                res.add(f"put {size}", lib, w_put(cls, root, size, p))
                rate, backlog = w_take(cls, root, size, p)
                res.add(f"take {size}", lib, rate, f"backlog {backlog}")
            log(f"  {lib}: " + ", ".join(
                f"{row} {res.get(row, lib) or 0:,.0f}" for row, _ in MAIN_ROWS))
        if "dq" in libs:
            res.add("put_many", "dq", w_dq_batch(root, p, "put_many"))
            res.add("take_many", "dq", w_dq_batch(root, p, "take_many"))
            res.add("batch_cycle", "dq", w_dq_batch(root, p, "cycle"))
            res.add("gc_threads", "dq", w_group_threads(root, p, 4, fsync_put=True))
            res.add("gc_procs", "dq", w_group_procs(root, p, 4, fsync_put=True))
            res.add("gc_threads16", "dq", w_group_threads(root, p, 16, fsync_put=True))
            res.add("gc_put_many", "dq", w_dq_batch(root, p, "put_many", fsync_put=True))
            res.add("gc_threshold", "dq", w_group_threads(root, p, 1, fsync_put=False, fsync_threshold=10))
            res.add("gc_interval", "dq", w_group_threads(root, p, 1, fsync_put=False, fsync_interval=0.01))
            res.add("gc_threshold4", "dq", w_group_threads(root, p, 4, fsync_put=False, fsync_threshold=10))
            log("  dq batch and group commit: " + ", ".join(
                f"{row} {res.get(row, 'dq') or 0:,.0f}"
                for row in ("put_many", "take_many", "batch_cycle", "gc_threads", "gc_procs",
                            "gc_threshold", "gc_interval")))
    if "dq" in libs:
        log("latency between two processes")
        lats, cpu, wall, wakes = w_latency(root, p)
        lats.sort()
        res.facts["latency"] = {
            "n": len(lats),
            "p50": lats[len(lats) // 2] if lats else float("nan"),
            "p99": lats[min(len(lats) - 1, int(len(lats) * 0.99))] if lats else float("nan"),
            "max": lats[-1] if lats else float("nan"),
            "idle_cpu": cpu,
            "idle_wall": wall,
            "idle_wakes": wakes,
        }
        log(f"  p50 {res.facts['latency']['p50'] * 1e3:.3f} ms, p99 {res.facts['latency']['p99'] * 1e3:.3f} ms,"
            f" idle CPU {cpu * 1e3:.1f} ms in {wall:.2f} s")
        log(f"backlog of {p.big_messages:,} messages: RSS and open time")
        res.facts["backlog"] = w_backlog(root, p)
        b = res.facts["backlog"]
        log(f"  open {b['big'][0] * 1e3:.0f} ms (after kill -9: {b['crashed'][0] * 1e3:.0f} ms,"
            f" after a reboot: {b['rebuilt'][0] * 1e3:.0f} ms),"
            f" RSS {b['big'][2]['VmRSS'] / MiB:.1f} MiB vs {b['small'][2]['VmRSS'] / MiB:.1f} MiB")
        log(f"stats of {p.stats_topics} topics holding {p.stats_messages:,} messages")
        res.facts["stats"] = w_stats(root, p)
        cold, warm, plain, _, _ = res.facts["stats"]
        log(f"  build_stats cold {cold * 1e3:.1f} ms, warm {warm * 1e3:.1f} ms; Queues.stats() {plain * 1e3:.1f} ms")
    res.facts["peers"] = peers
    return res


# -- reporting ----------------------------------------------------------------


def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if v >= 1e6:
        return f"{v / 1e6:.2f}M"
    if v >= 1e4:
        return f"{v / 1e3:.0f}k"
    if v >= 1e3:
        return f"{v / 1e3:.1f}k"
    return f"{v:.0f}"


def cell_text(res: Results, row: str, lib: str) -> str:
    cell = res.rows.get(row, {}).get(lib)
    if cell is None:
        return "-"
    if cell.value is None:
        return cell.note or "-"
    if lib == "dq":
        return fmt(cell.value)
    dq = res.get(row, "dq")
    return f"{fmt(cell.value)} ({cell.value / dq:.2f}x)" if dq else fmt(cell.value)


def table(res: Results, libs: list[str], rows: list[tuple[str, str]]) -> list[str]:
    header = ["workload (messages/s; peer's ratio to dq)"] + libs
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, label in rows:
        if key not in res.rows:
            continue
        lines.append("| " + " | ".join([label] + [cell_text(res, key, lib) for lib in libs]) + " |")
    return lines


def size_rows() -> list[tuple[str, str]]:
    rows = []
    for size in SIZES[1:]:
        rows.append((f"put {size}", f"put, {SIZE_NAMES[size]}"))
        rows.append((f"take {size}", f"take+ack, {SIZE_NAMES[size]}"))
    return rows


def dq_rows(res: Results) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []

    def add(label: str, key: str) -> None:
        v = res.get(key, "dq")
        if v is not None:
            out.append((label, f"{v:,.0f} msg/s"))

    add("put_many (100 per call), fsync off", "put_many")
    add("take_many (100) + complete_many, fsync off", "take_many")
    add("put_many + take_many + complete_many cycle, fsync off", "batch_cycle")
    add("fsync per put, 1 thread (fsync_put=True)", "fsync")
    add("group commit: 4 threads, fsync_put=True", "gc_threads")
    add("group commit: 4 processes, fsync_put=True", "gc_procs")
    add("group commit: 16 threads, fsync_put=True", "gc_threads16")
    add("put_many (100 per call), fsync_put=True (one fsync per call)", "gc_put_many")
    add("fsync_put=False, fsync_threshold=10, 1 thread", "gc_threshold")
    add("fsync_put=False, fsync_threshold=10, 4 threads", "gc_threshold4")
    add("fsync_put=False, fsync_interval=0.01 s, 1 thread", "gc_interval")
    lat = res.facts.get("latency")
    if lat:
        out.append(("put-to-take latency across processes, p50 / p99 / max",
                    f"{lat['p50'] * 1e3:.3f} / {lat['p99'] * 1e3:.3f} / {lat['max'] * 1e3:.2f} ms"
                    f" ({lat['n']} messages, 1 ms apart)"))
        out.append(("waiting consumer's CPU while idle in take(timeout=...)",
                    f"{lat['idle_cpu'] * 1e3:.1f} ms CPU in {lat['idle_wall']:.2f} s"
                    f" ({100 * lat['idle_cpu'] / lat['idle_wall']:.2f}% of a core),"
                    f" {lat['idle_wakes']} voluntary context switches"))
    b = res.facts.get("backlog")
    if b:
        n = f"{b['big_n']:,}" if "big_n" in b else "the big backlog"
        out.append((f"fill {n} messages with put_many(1000), fsync off", f"{b['fill_rate']:,.0f} msg/s"))
        for key, label in (("small", "2,000 waiting"), ("big", f"{n} waiting"),
                           ("crashed", f"{n} waiting, after kill -9 of a consumer"),
                           ("rebuilt", f"{n} waiting, after a reboot (counters rebuilt from the slabs)")):
            if key not in b:
                continue
            opened, before, after = b[key]
            out.append((f"open + first take, {label}", f"{opened * 1e3:.0f} ms"))
            out.append((f"consumer RSS after taking 1,000, {label}",
                        f"{after['VmRSS'] / MiB:.1f} MiB (anon {after['RssAnon'] / MiB:.1f},"
                        f" file-backed {after['RssFile'] / MiB:.1f}; {before['VmRSS'] / MiB:.1f} before opening)"))
    s = res.facts.get("stats")
    if s:
        cold, warm, plain, topics, total = s
        out.append((f"dqadmin.stats.build_stats, {topics} topics, {total:,} messages: first call",
                    f"{cold * 1e3:.1f} ms"))
        out.append(("build_stats, later calls (median of 7)", f"{warm * 1e3:.1f} ms"))
        out.append(("Queues.stats() alone (median of 7)", f"{plain * 1e3:.1f} ms"))
    return out


@dataclass
class Target:
    name: str
    met: bool | None  # None: not measured
    detail: str


def targets(res: Results) -> list[Target]:
    out: list[Target] = []
    peers = [p for p in REAL_PEERS if p in res.facts.get("peers", [])]

    def best(row: str) -> tuple[str, float] | None:
        vals = [(p, res.get(row, p)) for p in peers if res.get(row, p)]
        return max(vals, key=lambda x: x[1]) if vals else None  # type: ignore[arg-type,return-value]

    def vs_peer(name: str, row: str, factor: float, dq_row: str | None = None) -> None:
        dq = res.get(dq_row or row, "dq")
        b = best(row)
        if dq is None or b is None:
            out.append(Target(name, None, "not measured (run with the peers)"))
            return
        ratio = dq / b[1]
        out.append(Target(name, ratio >= factor,
                          f"dq {fmt(dq)}/s vs best peer {b[0]} {fmt(b[1])}/s: {ratio:.2f}x (needs {factor:g}x)"))

    vs_peer("put: at least 5x the best acknowledging / multi-process peer", "put", 5)
    ql = res.get("put", "queuelib")
    dq_put = res.get("put", "dq")
    if ql and dq_put:
        out.append(Target("put: within 3x of queuelib's bare append", dq_put * 3 >= ql,
                          f"dq {fmt(dq_put)}/s vs queuelib {fmt(ql)}/s: queuelib is {ql / dq_put:.2f}x dq"
                          " (needs at most 3x)"))
    else:
        out.append(Target("put: within 3x of queuelib's bare append", None, "not measured"))
    vs_peer("take+complete: at least 5x the best peer", "take", 5)
    vs_peer("1 producer + 1 consumer process: at least 5x the best peer", "xproc", 5)
    vs_peer("fsync per put: at least the best peer", "fsync", 1)
    gc = max(filter(None, [res.get("gc_threads", "dq"), res.get("gc_procs", "dq")]), default=None)
    b = best("fsync")
    if gc and b:
        out.append(Target("group commit (fsync_put=True, 4 threads or processes): at least 10x the best"
                          " peer's fsync per put", gc >= 10 * b[1],
                          f"dq {fmt(gc)}/s vs {b[0]} {fmt(b[1])}/s: {gc / b[1]:.2f}x (needs 10x)"))
    else:
        out.append(Target("group commit: at least 10x the best peer's fsync per put", None, "not measured"))
    gcb = res.get("gc_put_many", "dq")
    if gcb and b:
        out.append(Target("... the same with put_many(100) and fsync_put=True (every message synced before"
                          " the call returns)", gcb >= 10 * b[1],
                          f"dq {fmt(gcb)}/s vs {b[0]} {fmt(b[1])}/s: {gcb / b[1]:.2f}x (needs 10x)"))
    bc = res.get("batch_cycle", "dq")
    out.append(Target("put_many+take_many+complete_many, fsync off: at least 100,000 msg/s",
                      None if bc is None else bc >= 100_000,
                      "not measured" if bc is None else f"{bc:,.0f} msg/s ({bc / 100_000:.2f}x the target)"))
    lat = res.facts.get("latency")
    if lat:
        out.append(Target("latency across processes: p50 at most 1 ms", lat["p50"] <= 0.001,
                          f"p50 {lat['p50'] * 1e3:.3f} ms"))
        out.append(Target("latency across processes: p99 at most 10 ms", lat["p99"] <= 0.010,
                          f"p99 {lat['p99'] * 1e3:.3f} ms"))
        pct = 100 * lat["idle_cpu"] / lat["idle_wall"]
        out.append(Target("waiting consumer: no busy loop (under 1% of a core while idle)", pct < 1.0,
                          f"{pct:.2f}% of a core, {lat['idle_wakes']} wake-ups in {lat['idle_wall']:.1f} s"))
    b2 = res.facts.get("backlog")
    if b2:
        grow = b2["big"][2]["VmRSS"] - b2["small"][2]["VmRSS"]
        out.append(Target("consumer memory flat whatever the backlog (RSS within 10 MiB of a small backlog)",
                          grow <= 10 * MiB,
                          f"{b2['big'][2]['VmRSS'] / MiB:.1f} MiB with the big backlog vs"
                          f" {b2['small'][2]['VmRSS'] / MiB:.1f} MiB with 2,000 ({grow / MiB:+.1f} MiB)"))
        for key, label in (("crashed", "... and after a kill -9"),
                           ("rebuilt", "... and after a reboot (counters rebuilt from the slabs)")):
            grow_c = b2[key][2]["VmRSS"] - b2["small"][2]["VmRSS"]
            out.append(Target(label, grow_c <= 10 * MiB,
                              f"{b2[key][2]['VmRSS'] / MiB:.1f} MiB ({grow_c / MiB:+.1f} MiB; file-backed"
                              f" {b2[key][2]['RssFile'] / MiB:.1f} MiB of it is page cache of the slabs)"))
        out.append(Target("open a topic with the big backlog in under 2 s", b2["big"][0] < 2.0,
                          f"{b2['big'][0] * 1e3:.0f} ms ({2.0 / max(b2['big'][0], 1e-9):.1f}x under)"))
        out.append(Target("... and after a kill -9 of a consumer holding messages", b2["crashed"][0] < 2.0,
                          f"{b2['crashed'][0] * 1e3:.0f} ms"))
        out.append(Target("... and after a reboot (every counter rebuilt from the slabs)", b2["rebuilt"][0] < 2.0,
                          f"{b2['rebuilt'][0] * 1e3:.0f} ms"))
    s = res.facts.get("stats")
    if s:
        cold, warm, _, topics, total = s
        out.append(Target(f"dashboard stats of {topics} topics / {total:,} messages under 50 ms"
                          " (build_stats, later calls)", warm < 0.050, f"{warm * 1e3:.1f} ms"))
        out.append(Target("... first call of a fresh process (opens every topic)", cold < 0.050,
                          f"{cold * 1e3:.1f} ms"))
    return out


def mark(t: Target) -> str:
    return "n/a" if t.met is None else ("met" if t.met else "NOT MET")


def report(res: Results, libs: list[str], p: Profile, quick: bool, durations: float) -> str:
    f = res.facts
    lines = [
        "# dq benchmark results",
        "",
        f"Written by `make bench` (`bench/run.py{' --quick' if quick else ''}`) on"
        f" {time.strftime('%Y-%m-%d %H:%M %Z')}, dq commit {git_commit()}, in {durations:.0f} s."
        " See bench/README.md for what each workload measures.",
        "",
        "**Noise.** Other engineers run test suites on this 2-core machine at the same time, so"
        " figures move by 10-30 % from run to run; each one is the median of"
        f" {p.reps} repetition(s), with the libraries taking turns inside each repetition.",
        "",
        "## Machine",
        "",
        f"- CPU: {f['machine']['cpu']}, {f['machine']['cores']} cores; RAM {f['machine']['ram']};"
        f" kernel {f['machine']['kernel']}; load average at the start {f['machine']['loadavg']}",
        f"- bench directory: {f['machine']['bench_dir']} on {f['machine']['disk']}",
        "- raw fsync rate of that disk (200 B per write): "
        + ", ".join(f"{k} {v:,.0f}/s" for k, v in f["fsync_raw"].items()),
        f"- Python {f['machine']['python']}",
        "",
        "## Versions and durability settings",
        "",
        "| library | version | fsync off (put, take, cycle, cross-process) | fsync per put |",
        "|---|---|---|---|",
    ]
    for lib in libs:
        cls = ADAPTERS[lib]
        d0, d1 = f["durability"][lib]
        lines.append(f"| {lib} | {cls.version()} | {d0} | {d1 if cls.can_fsync else 'n/a'} |")
    lines += [
        "",
        f"msgpack {_version('msgpack')}. Peers acknowledge: pq-ack (ack), pq-file (task_done),"
        " litequeue (done); huey and diskcache delete on take (an unfinished take is lost),"
        " queuelib has no acknowledgement and one process only.",
        "",
        "## 200 B msgpack payloads",
        "",
        *table(res, libs, MAIN_ROWS),
        "",
        "## Other payload sizes",
        "",
        *table(res, libs, size_rows()),
        "",
        "## dq only",
        "",
        "| measurement | dq |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in dq_rows(res)],
        "",
        "## Targets of issue 7",
        "",
        "| target | result | measured |",
        "|---|---|---|",
        *[f"| {t.name} | {mark(t)} | {t.detail} |" for t in targets(res)],
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repetition (a smoke run)")
    parser.add_argument("--only", default="", help="comma-separated libraries, e.g. dq or dq,huey"
                        f" (known: {', '.join(ADAPTERS)})")
    parser.add_argument("--dir", default=os.path.join(ROOT, "var", "bench"),
                        help="where the queues are created (default: var/bench)")
    parser.add_argument("--out", default=None,
                        help="results file (default bench/results.md; --quick writes none unless given)")
    parser.add_argument("--reps", type=int, default=None, help="repetitions per measurement")
    args = parser.parse_args(argv)
    p = QUICK if args.quick else FULL
    if args.reps:
        p = Profile(**{**p.__dict__, "reps": args.reps})
    libs = [x.strip() for x in args.only.split(",") if x.strip()] or list(ADAPTERS)
    unknown = [lib for lib in libs if lib not in ADAPTERS]
    if unknown:
        parser.error(f"unknown library {unknown[0]!r}; known: {', '.join(ADAPTERS)}")
    if "dq-redis" in libs and not redis_answers():
        print("no Redis server answers at DQ_BENCH_REDIS_URL: dq-redis is left out", file=sys.stderr)
        libs.remove("dq-redis")
    out_path = args.out if args.out is not None else (None if args.quick else os.path.join(HERE, "results.md"))

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    started = time.perf_counter()
    install_peers(libs)
    root = os.path.abspath(args.dir)
    os.makedirs(root, exist_ok=True)
    res_facts = {"machine": machine_facts(root)}
    log(f"bench directory {root}; measuring the disk's raw fsync rate")
    res_facts["fsync_raw"] = raw_fsync_rates(root, 0.05 if args.quick else 1.0)
    durability = {}
    for lib in libs:
        cells = []
        for fsync in (False, True):
            d = fresh_dir(root, lib)
            try:
                a = ADAPTERS[lib](d, fsync=fsync)
                cells.append(a.durability())
                a.close()
            finally:
                rm(d)
        durability[lib] = tuple(cells)
    res = run(libs, root, p, log)
    res.facts.update(res_facts)
    res.facts["durability"] = durability
    if "backlog" in res.facts:
        res.facts["backlog"]["big_n"] = p.big_messages
    text = report(res, libs, p, args.quick, time.perf_counter() - started)
    print(text)
    if out_path:
        with open(out_path, "w") as fh:
            fh.write(text)
        log(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
