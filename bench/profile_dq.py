"""Where dq's time goes per message: put, take+complete and the batch calls.

    .venv/bin/python bench/profile_dq.py            # cProfile, top functions by own time
    .venv/bin/python bench/profile_dq.py --tree     # pyinstrument's call tree as well

Each workload runs once unprofiled (for the real cost per message) and once
under cProfile (which slows small functions down, so read its figures as
shares, not as absolute costs). 200 B msgpack payloads, fsync off unless
the workload says so.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shutil
import sys
import tempfile
import time
from collections.abc import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from run import make_value  # noqa: E402

from queuecore import Queues  # noqa: E402

N = 50_000


def setup_put(d: str) -> tuple[Queues, Callable[[], None]]:
    qs = Queues(d, fsync_put=False)
    value = make_value(200)
    qs.put("p", value)

    def work() -> None:
        for _ in range(N):
            qs.put("p", value)

    return qs, work


def setup_put_fsync(d: str) -> tuple[Queues, Callable[[], None]]:
    qs = Queues(d, fsync_put=True)
    value = make_value(200)
    qs.put("p", value)

    def work() -> None:
        for _ in range(N // 10):
            qs.put("p", value)

    return qs, work


def setup_take(d: str) -> tuple[Queues, Callable[[], None]]:
    qs = Queues(d, fsync_put=False)
    value = make_value(200)
    for _ in range(N // 1000):
        qs.put_many("p", [value] * 1000)
    qs.close()
    qs = Queues(d, fsync_put=False)
    qs.take("p", timeout=0).complete()  # type: ignore[union-attr]

    def work() -> None:
        for _ in range(N - 1):
            qs.take("p", timeout=0).complete()  # type: ignore[union-attr]

    return qs, work


def setup_batch(d: str) -> tuple[Queues, Callable[[], None]]:
    qs = Queues(d, fsync_put=False)
    values = [make_value(200)] * 100
    qs.put("p", values[0])
    qs.take("p", timeout=0).complete()  # type: ignore[union-attr]

    def work() -> None:
        for _ in range(N // 100):
            qs.put_many("p", values)
            qs.complete_many(qs.take_many("p", 100, timeout=0))

    return qs, work


WORKLOADS = {
    "put": (setup_put, N),
    "put fsync_put=True": (setup_put_fsync, N // 10),
    "take+complete": (setup_take, N - 1),
    "put_many+take_many+complete_many (100)": (setup_batch, N),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--top", type=int, default=18)
    parser.add_argument("--tree", action="store_true", help="also print pyinstrument's call tree")
    parser.add_argument("--dir", default=os.path.join(os.path.dirname(HERE), "var", "bench"))
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    for name, (setup, n) in WORKLOADS.items():
        d = tempfile.mkdtemp(prefix="profile-", dir=args.dir)
        try:
            qs, work = setup(d)
            t0 = time.perf_counter()
            work()
            plain = time.perf_counter() - t0
            qs.close()
        finally:
            shutil.rmtree(d, ignore_errors=True)
        d = tempfile.mkdtemp(prefix="profile-", dir=args.dir)
        try:
            qs, work = setup(d)
            prof = cProfile.Profile()
            prof.enable()
            work()
            prof.disable()
            qs.close()
            if args.tree:
                qs, work = setup(d + "-tree")
                from pyinstrument import Profiler

                p = Profiler(interval=0.0002)
                p.start()
                work()
                p.stop()
                qs.close()
        finally:
            shutil.rmtree(d, ignore_errors=True)
            shutil.rmtree(d + "-tree", ignore_errors=True)
        print(f"\n## {name}: {n / plain:,.0f} msg/s, {plain / n * 1e6:.2f} us per message (unprofiled)\n")
        buf = io.StringIO()
        stats = pstats.Stats(prof, stream=buf)
        total = stats.total_tt  # type: ignore[attr-defined]
        rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)  # type: ignore[attr-defined]
        print("| own time | share | calls per message | function |")
        print("|---|---|---|---|")
        for (file, line, func), (_cc, ncalls, tt, _ct, _callers) in rows[: args.top]:
            where = f"{os.path.relpath(file, os.path.dirname(HERE))}:{line}" if file.startswith("/") else file
            where = where.replace(".venv/lib/python3.11/site-packages/", "")
            print(f"| {tt / n * 1e6:.2f} us | {100 * tt / total:.1f}% | {ncalls / n:.2f} | `{func}` {where} |")
        if args.tree:
            print("\n```")
            print(p.output_text(unicode=False, color=False, show_all=False))
            print("```")
    return 0


if __name__ == "__main__":
    sys.exit(main())
