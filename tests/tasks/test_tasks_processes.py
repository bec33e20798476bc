"""Tasks across real processes: a worker process runs what this one
enqueued, another process reads the results, and a worker killed with
``kill -9`` in the middle of a task loses nothing (on slab files)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dqadmin.tasks.compat import TaskResultStatus
from tests.tasks import tasks
from tests.tasks.conftest import ROOT, Where, work_in_a_process

pytestmark = pytest.mark.django_db(databases=[])

READ_RESULT = """
import json, sys, django
django.setup()
from dqadmin.tasks.compat import task_backends
r = task_backends["default"].get_result(sys.argv[1])
print(json.dumps({"status": str(r.status), "value": r.return_value if r.is_finished and r.status == "SUCCESSFUL" else None,
                  "attempts": r.attempts, "workers": r.worker_ids}))
"""


def read_elsewhere(where: Where, result_id: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", READ_RESULT, result_id], env=where.env(), cwd=ROOT,
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_worker_process_runs_them_and_any_process_reads_the_results(slab: Where) -> None:
    results = [tasks.add.enqueue(i, i) for i in range(5)]
    assert read_elsewhere(slab, results[0].id)["status"] == "READY"
    done = work_in_a_process(slab)
    assert done.returncode == 0, done.stderr
    assert "5 completed" in done.stdout
    for i, result in enumerate(results):
        result.refresh()
        assert result.return_value == 2 * i
        assert result.worker_ids[0].endswith(":" + result.worker_ids[0].rsplit(":", 1)[1])
        assert read_elsewhere(slab, result.id) == {
            "status": "SUCCESSFUL", "value": 2 * i, "attempts": 1, "workers": result.worker_ids,
        }


def test_a_worker_killed_mid_task_loses_nothing(slab: Where, tmp_path: Path) -> None:
    pid_file, hold = tmp_path / "pid", tmp_path / "hold"
    hold.write_text("the first run waits")
    result = tasks.wait_for.enqueue(str(pid_file), str(hold))
    worker = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "runconsumers", "tasks.default"],
        env=slab.env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pid_file.exists(), "the task never started"
        result.refresh()
        assert result.status == TaskResultStatus.RUNNING and result.attempts == 1
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    # Its message is delivered again at once (the kernel dropped the dead
    # worker's lock); this run does not wait.
    hold.unlink()
    from dqadmin.queues import get_queues

    qs = get_queues()
    topic, mid, _ = result.id.split(":")
    assert qs.peek(topic, int(mid)).state in ("in_progress", "ready")
    done = work_in_a_process(slab, "tasks.default")
    assert done.returncode == 0, done.stderr
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == "woke"
    assert result.attempts == 2 and len(set(result.worker_ids)) == 2
