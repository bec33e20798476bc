"""The benchmark still runs: bench/run.py --quick --only dq, in a subprocess.

No timing is asserted (the numbers depend on the machine and its load);
only that the run ends well and prints its table.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_quick_run_prints_a_table(tmp_path: Path) -> None:
    out = tmp_path / "results.md"
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--only", "dq",
         "--dir", str(tmp_path / "queues"), "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "| workload (messages/s; peer's ratio to dq) | dq |" in proc.stdout
    assert "| put |" in proc.stdout
    assert "## Targets of issue 7" in proc.stdout
    assert out.read_text().startswith("# dq benchmark results")


def test_tasks_bench_quick_run_prints_a_table(tmp_path: Path) -> None:
    out = tmp_path / "tasks.md"
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "tasks.py"), "--quick", "--only", "dq", "--n", "50",
         "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "| dq (slab, fsync per put: its default) |" in proc.stdout
    assert out.read_text().startswith("# Django tasks backends, side by side")
