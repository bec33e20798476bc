"""Engine bugs the campaign found, each as a minimal reproduction marked
``xfail(strict=True)``: when the engine is fixed the test passes, strict
xfail turns that into a failure, and the mark comes off."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from queuecore import MessageNotFound, Queues

HOLDER = textwrap.dedent(
    """
    import sys
    from queuecore import MessageNotFound, Queues
    qs = Queues(sys.argv[1], fsync_put=False, slab_size=4096)
    print(qs.take("q", timeout=0).id, flush=True)
    sys.stdin.read()
    """
)


@pytest.mark.xfail(
    strict=True,
    raises=ValueError,
    reason="B1: _reclaim moves the last live entry of a slab while iterating "
    "t.entries(); the move drops (closes) that slab and the generator then "
    "reads the released memoryview: the take raises ValueError",
)
def test_b1_reclaiming_the_last_live_entry_of_a_slab(tmp_path: Path) -> None:
    d = str(tmp_path / "queues")
    with Queues(d, fsync_put=False, slab_size=4096) as qs:
        qs.put_many("q", ["x" * 1000] * 6)  # three entries a slab: slab 1 holds ids 1-3
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLDER, d], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == "1"  # the holder leases id 1
            two, three = qs.take("q", timeout=0), qs.take("q", timeout=0)
        finally:
            holder.kill()  # kill -9 while it holds id 1
            holder.wait()
        assert two is not None and three is not None
        assert two.complete() and three.complete()  # id 1 is slab 1's last live entry
        time.sleep(0.6)  # RECLAIM_INTERVAL: the next take looks for dead owners
        task = qs.take("q", timeout=0)  # reclaims id 1 -> raises ValueError today
        assert task is not None and task.id == 4
        assert sorted(m.id for m in qs.messages("q", state="ready")) == [1, 5, 6]


@pytest.mark.xfail(
    strict=True,
    reason="B3: a slab header's min_id/max_id are covered by no check; one flipped "
    "bit makes _find skip the slab, so peek/requeue/delete of its messages raise "
    "MessageNotFound, while check() reports nothing",
    raises=MessageNotFound,
)
def test_b3_a_flipped_bit_in_a_slab_header_hides_messages_from_peek(tmp_path: Path) -> None:
    d = tmp_path / "queues"
    with Queues(str(d), fsync_put=False) as qs:
        ids = qs.put_many("q", ["a", "b", "c"])
    slab = d / "q" / "m000000000001.slab"
    with open(slab, "r+b") as fh:
        fh.seek(40)  # _SlabHeader.min_id, lowest byte
        b = fh.read(1)[0]
        fh.seek(40)
        fh.write(bytes([b ^ 4]))  # min_id 1 -> 5
    with Queues(str(d), fsync_put=False) as qs:
        assert [m.id for m in qs.messages("q")] == ids  # browsing sees them
        assert not qs.check()["problems"]  # nothing reported ...
        assert [qs.peek("q", mid).id for mid in ids] == ids  # ... MessageNotFound today
