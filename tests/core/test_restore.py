"""Backend.restore, which dqmigrate uses: messages keep their state,
attempts, due time and errors on the new backend (with new ids)."""

from __future__ import annotations

import io
import time
import uuid
from pathlib import Path

import pytest
from django.core.management import call_command

from queuecore import Queues
from queuecore.memory import MemoryBackend


def fill(qs: Queues) -> None:
    qs.put_many("orders", [{"n": i} for i in range(5)])
    t = qs.take("orders", timeout=0)
    assert t is not None and t.fail("card declined")
    t = qs.take("orders", timeout=0)
    assert t is not None and t.retry(delay=60, reason="later")


@pytest.mark.parametrize("dest", ["slab", "memory"])
def test_migrate_keeps_failed_and_delayed(tmp_path: Path, dest: str) -> None:
    name = f"restore-{uuid.uuid4().hex}"
    src_loc = f"memory://{name}"
    dst_loc = str(tmp_path / "queues") if dest == "slab" else f"memory://{name}-dst"
    src = Queues(src_loc)
    fill(src)
    out = io.StringIO()
    call_command("dqmigrate", "--from", src_loc, "--to", dst_loc, stdout=out)
    assert "Moved 5 message(s)" in out.getvalue()
    with Queues(dst_loc, fsync_put=False) as dst:
        s = dst.stats()["orders"]
        assert (s["ready"], s["delayed"], s["failed"]) == (3, 1, 1)
        failed = dst.messages("orders", state="failed")[0]
        assert failed.value == {"n": 0} and failed.attempts == 1
        assert failed.errors[0]["reason"] == "card declined"
        delayed = dst.messages("orders", state="delayed")[0]
        assert delayed.not_before is not None and delayed.not_before > time.time() + 30
        assert [m.value["n"] for m in dst.messages("orders", state="ready")] == [2, 3, 4]
    assert src.stats()["orders"]["ready"] == 0
    MemoryBackend.reset(name)
    MemoryBackend.reset(f"{name}-dst")
