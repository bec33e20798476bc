"""manage.py dqmigrate: slab/memory to Redis and back, nothing lost."""

from __future__ import annotations

import io
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from queuecore import Queues
from queuecore.memory import MemoryBackend

HAS_SLAB = (Path(__file__).resolve().parents[2] / "queuecore" / "slab" / "__init__.py").exists()


def fill(qs: Queues) -> dict[str, Any]:
    """Two topics with ready, delayed, failed and in-progress messages."""
    qs.put_many("orders", [{"n": i} for i in range(7)])
    qs.put_many("mail", ["a", "b"])
    failed = qs.take("orders", timeout=0)
    assert failed is not None and failed.fail("card declined")
    delayed = qs.take("orders", timeout=0)
    assert delayed is not None and delayed.retry(delay=60, reason="later")
    held = qs.take("mail", timeout=0)
    assert held is not None
    return {"failed": failed.value, "delayed": delayed.value, "held": held}


def migrate(source: str, destination: str, *extra: str) -> str:
    out = io.StringIO()
    call_command(
        "dqmigrate", "--from", source, "--to", destination, "--batch", "2", *extra, stdout=out
    )
    return out.getvalue()


def test_memory_to_redis_keeps_states_errors_and_values(
    open_queues: Any, redis_url: str, prefix: str
) -> None:
    name = f"migrate-{uuid.uuid4().hex}"
    src = Queues(f"memory://{name}")
    try:
        facts = fill(src)
        dst_location = redis_url
        with override_settings(DQ={"LOCATION": dst_location, "OPTIONS": {"prefix": prefix}}):
            output = migrate(f"memory://{name}", dst_location)
        assert "[" + "#" * 30 + "] 8/8 (100%)" in output
        assert "Moved 8 message(s)." in output
        assert "1 message(s) in progress stayed" in output
        dst = open_queues()
        stats = dst.stats()
        assert stats["orders"]["ready"] == 5 and stats["orders"]["failed"] == 1
        assert stats["orders"]["delayed"] == 1 and stats["mail"]["ready"] == 1
        failed = dst.messages("orders", state="failed")[0]
        assert failed.value == facts["failed"] and failed.errors[-1]["reason"] == "card declined"
        assert failed.attempts == 1
        delayed = dst.messages("orders", state="delayed")[0]
        assert delayed.value == facts["delayed"] and delayed.not_before is not None
        ready = [m.value for m in dst.messages("orders", state="ready")]
        assert ready == [{"n": i} for i in range(2, 7)]
        # the source keeps only the message still in progress
        left = src.stats()
        assert sum(left["orders"][s] for s in ("ready", "delayed", "failed", "in_progress")) == 0
        assert left["mail"]["in_progress"] == 1 and left["mail"]["ready"] == 0
        assert facts["held"].complete()
    finally:
        src.close()
        MemoryBackend.reset(name)


def test_redis_to_memory_keeps_failed_failed_unless_asked(
    open_queues: Any, redis_url: str, prefix: str
) -> None:
    src = open_queues()
    fill(src)
    name = f"migrate-{uuid.uuid4().hex}"
    try:
        with override_settings(DQ={"LOCATION": redis_url, "OPTIONS": {"prefix": prefix}}):
            migrate(redis_url, f"memory://{name}", "--topic", "mail")
            assert src.stats()["orders"]["failed"] == 1  # not moved yet
            migrate(redis_url, f"memory://{name}", "--topic", "orders", "--failed-as-ready")
        dst = Queues(f"memory://{name}")
        stats = dst.stats()
        assert stats["orders"]["failed"] == 0 and stats["orders"]["delayed"] == 1
        assert stats["orders"]["ready"] == 6 and stats["mail"]["ready"] == 1
        assert src.stats()["orders"]["failed"] == 0
        dst.close()
    finally:
        MemoryBackend.reset(name)


@pytest.mark.skipif(not HAS_SLAB, reason="needs the slab backend")
def test_slab_to_redis(tmp_path: Path, open_queues: Any, redis_url: str, prefix: str) -> None:
    location = str(tmp_path / "queues")
    with Queues(location, fsync_put=False) as src:
        ids = src.put_many("t", list(range(25)))
    with override_settings(DQ={"LOCATION": redis_url, "OPTIONS": {"prefix": prefix}}):
        migrate(location, redis_url, "--topic", "t")
    dst = open_queues()
    assert [m.value for m in dst.messages("t", limit=100)] == list(range(25))
    assert len(ids) == 25
    with Queues(location, fsync_put=False) as src:
        assert src.stats()["t"]["ready"] == 0


def test_bad_arguments() -> None:
    with pytest.raises(CommandError):
        migrate("memory://x", "memory://x")
    with pytest.raises(CommandError):
        call_command("dqmigrate", "--from", "memory://a", "--to", "memory://b", "--topic", "nope")
