"""Engine bugs the reliability campaign found, each kept as a minimal
reproduction now that it is fixed (B2 is in test_disk_faults.py, B4 in
test_fuzz.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

from queuecore import Queues

HOLDER = textwrap.dedent(
    """
    import sys
    from queuecore import MessageNotFound, Queues
    qs = Queues(sys.argv[1], fsync_put=False, slab_size=4096)
    print(qs.take("q", timeout=0).id, flush=True)
    sys.stdin.read()
    """
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
        task = qs.take("q", timeout=0)  # reclaims id 1 (it raised ValueError: B1)
        assert task is not None and task.id == 4
        assert sorted(m.id for m in qs.messages("q", state="ready")) == [1, 5, 6]


def test_b3_a_flipped_bit_in_a_slab_header_hides_no_message(tmp_path: Path) -> None:
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
        assert [qs.peek("q", mid).id for mid in ids] == ids  # so does peek
        problems = qs.check()["problems"]
        assert problems == ["q/m000000000001.slab: header says ids 5..3 (3 live), "
                            "the slab holds 1..3 (3 live)",
                            "q/m000000000001.slab: slab header: id range checksum mismatch"]
        assert qs.check(fix=True)["fixed"]
        assert not qs.check()["problems"]
        qs.requeue("q", ids[0])
        qs.delete("q", ids[1])
