"""The ``dq`` console script, run as a user runs it: a real process on a real
slab directory (and on Redis for what reads a location), reading its exit
code, stdout and stderr."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from queuecore import Queues
from tests.core.conftest import REDIS_URL, skip_or_fail_without_redis

# The console script of the environment running the tests (an editable
# install puts it beside the interpreter).
DQ = Path(sys.executable).with_name("dq")


def dq(*args: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    return subprocess.run(
        [str(DQ), *args], input=stdin, text=True, capture_output=True, timeout=timeout, env=env
    )


def one_error_line(done: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert text in done.stderr, done.stderr


@pytest.fixture
def location(qdir: Path) -> str:
    with Queues(str(qdir), fsync_put=False) as qs:
        qs.put_many("q1", [{"n": 1}, {"n": 2}, {"n": 3}])
    return str(qdir)


def test_help_lists_every_command_and_the_exit_codes() -> None:
    done = dq("--help")
    assert done.returncode == 0
    for command in ("stats", "put", "peek", "requeue", "check", "tail"):
        assert command in done.stdout
    assert "exit codes" in done.stdout
    assert dq("tail", "--help").returncode == 0


def test_stats_table_and_json(location: str) -> None:
    table = dq("stats", location)
    assert table.returncode == 0, table.stderr
    assert f"{location} (slab)" in table.stdout
    row = next(line for line in table.stdout.splitlines() if line.startswith("q1 "))
    assert row.split()[:2] == ["q1", "3"]
    data = json.loads(dq("stats", location, "--json").stdout)
    assert data["topics"]["q1"]["ready"] == 3 and data["backend"] == "slab"


def test_stats_is_the_dqstats_builder(location: str) -> None:
    # One builder: dq stats and the dashboard's JSON have the same keys.
    from queuecore.stats import build_stats

    with Queues(location, fsync_put=False) as qs:
        expected = build_stats(qs)
    data = json.loads(dq("stats", location, "--json").stdout)
    assert set(data) == set(expected)
    assert set(data["topics"]["q1"]) == set(expected["topics"]["q1"])


def test_put_arguments_and_stdin(location: str) -> None:
    done = dq("put", location, "q2", '{"to": "a"}', "[1, 2]")
    assert (done.returncode, done.stdout.split()) == (0, ["1", "2"])
    done = dq("put", location, "q2", stdin='"three"\n\n{"four": 4}\n')
    assert (done.returncode, done.stdout.split()) == (0, ["3", "4"])
    with Queues(location, fsync_put=False) as qs:
        values = [m.value for m in qs.messages("q2")]
    assert values == [{"to": "a"}, [1, 2], "three", {"four": 4}]


def test_put_refuses_bad_json_and_puts_nothing(location: str) -> None:
    done = dq("put", location, "q1", stdin='{"ok": 1}\n{"broken": \n')
    one_error_line(done, 2, "Line 2: invalid JSON")
    with Queues(location, fsync_put=False) as qs:
        assert qs.stats()["q1"]["enqueued"] == 3


def test_put_needs_create_for_a_new_location(tmp_path: Path) -> None:
    where = str(tmp_path / "new")
    one_error_line(dq("put", where, "q1", "1"), 3, "No queue at")
    assert not os.path.exists(where)
    assert dq("put", "--create", where, "q1", "1").stdout.strip() == "1"


def test_peek(location: str) -> None:
    done = dq("peek", location, "q1", "2")
    assert done.returncode == 0
    message = json.loads(done.stdout)
    assert (message["id"], message["value"], message["state"]) == (2, {"n": 2}, "ready")


def test_peek_names_the_process_that_put_it(qdir: Path) -> None:
    Queues(str(qdir)).close()
    assert dq("put", str(qdir), "q1", '"from the shell"').returncode == 0
    origin = json.loads(dq("peek", str(qdir), "q1", "1").stdout)["origin"]
    assert origin["cmd"] == "dq put" and origin["host"] == socket.gethostname()
    assert isinstance(origin["pid"], int) and origin["pid"] != os.getpid()


def test_peek_of_an_undecodable_payload_shows_the_bytes(qdir: Path) -> None:
    with Queues(str(qdir), fsync_put=False, serializer="raw") as qs:
        qs.put("q1", b"\xc1not msgpack")
    message = json.loads(dq("peek", str(qdir), "q1", "1").stdout)
    assert message["value"] is None and message["decode_error"]
    assert message["raw"] == b"\xc1not msgpack".hex()


def test_requeue_ids_and_failed(location: str) -> None:
    with Queues(location, fsync_put=False) as qs:
        for _ in range(2):
            task = qs.take("q1", timeout=0)
            assert task is not None
            task.fail("boom")
    done = dq("requeue", location, "q1", "1")
    assert (done.returncode, done.stdout.strip()) == (0, "Requeued q1#1.")
    done = dq("requeue", location, "q1", "--failed")
    assert (done.returncode, done.stdout.strip()) == (0, "Requeued 1 failed messages of q1.")
    with Queues(location, fsync_put=False) as qs:
        assert qs.stats()["q1"]["failed"] == 0 and qs.stats()["q1"]["ready"] == 3


def test_requeue_reports_missing_ids_after_doing_the_others(location: str) -> None:
    done = dq("requeue", location, "q1", "77", "2")
    one_error_line(done, 3, "No message 77 in topic 'q1'")
    assert "Requeued q1#2." in done.stdout


def test_check_finds_repairs_and_exits_by_what_remains(location: str) -> None:
    assert dq("check", location).returncode == 0
    slab = next(Path(location, "q1").glob("m*.slab"))
    with open(slab, "r+b") as f:  # a flipped bit in the first message's payload
        f.seek(128 + 80 + 2)
        byte = f.read(1)
        f.seek(128 + 80 + 2)
        f.write(bytes([byte[0] ^ 0x40]))
    found = dq("check", location)
    assert found.returncode == 1
    assert "problem: q1/" in found.stdout and "--fix" in found.stdout
    fixed = dq("check", location, "--fix")
    assert fixed.returncode == 0 and "fixed: " in fixed.stdout and fixed.stdout.rstrip().endswith("OK.")
    assert dq("check", location).returncode == 0


def test_tail_follows_new_messages_without_taking_them(location: str) -> None:
    tail = subprocess.Popen(
        [str(DQ), "tail", location, "q1", "--count", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Wait until tail has looked once (it starts after the newest message).
        deadline = time.monotonic() + 10
        with Queues(location, fsync_put=False) as qs:
            while time.monotonic() < deadline:
                time.sleep(0.3)
                qs.put("q1", {"n": "new"})
                if tail.poll() is not None:
                    break
            out, err = tail.communicate(timeout=10)
            assert tail.returncode == 0, err
            seen = [json.loads(line) for line in out.splitlines()]
            assert len(seen) == 2 and all(m["value"] == {"n": "new"} for m in seen)
            assert seen[0]["id"] > 3 and seen[1]["id"] == seen[0]["id"] + 1
            assert qs.stats()["q1"]["in_progress"] == 0  # nothing was taken
    finally:
        tail.kill()
        tail.wait()


def test_tail_all_starts_at_the_oldest(location: str) -> None:
    done = dq("tail", location, "q1", "--all", "-n", "3")
    assert [json.loads(line)["id"] for line in done.stdout.splitlines()] == [1, 2, 3]
    done = dq("tail", location, "q1", "--after", "2", "-n", "1")
    assert [json.loads(line)["id"] for line in done.stdout.splitlines()] == [3]


def test_tail_sees_completed_messages_still_stored(location: str) -> None:
    with Queues(location, fsync_put=False) as qs:
        task = qs.take("q1", timeout=0)
        assert task is not None and task.complete()
    done = dq("tail", location, "q1", "--all", "-n", "3")
    states = [json.loads(line)["state"] for line in done.stdout.splitlines()]
    assert states == ["completed", "ready", "ready"]


@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        (["stats", "{missing}"], 3, "No queue at"),
        (["stats", "{file}"], 3, "it is not a directory"),
        (["put", "{loc}", "../etc", "1"], 2, "invalid topic name"),
        (["put", "{loc}", "q1", "{nope"], 2, "invalid JSON"),
        (["peek", "{loc}", "q1", "abc"], 2, "Invalid message id 'abc'"),
        (["peek", "{loc}", "q1", "0"], 2, "Invalid message id '0'"),
        (["peek", "{loc}", "q1", "9" * 30], 2, "Invalid message id"),
        (["peek", "{loc}", "q1", "99"], 3, "No message 99"),
        (["peek", "{loc}", "nope", "1"], 3, "No topic named 'nope'"),
        (["requeue", "{loc}", "q1"], 2, "either message ids or --failed"),
        (["tail", "{loc}", "q1", "--count", "0"], 2, "--count must be at least 1"),
        (["stats", "{loc}", "-o", "fsync_put"], 2, "expected NAME=VALUE"),
        (["stats", "{loc}", "-o", "frobnicate=1"], 2, "unknown option"),
        (["stats", "{loc}", "-o", "visibility_timeout=-1"], 2, "visibility_timeout"),
        (["stats"], 2, "required: LOCATION"),
        (["frob", "x"], 2, "invalid choice"),
        ([], 2, "required: COMMAND"),
        (["stats", "redis://127.0.0.1:1/0"], 1, "Could not open redis://127.0.0.1:1/0"),
    ],
)
def test_bad_input_is_one_line_and_an_exit_code(
    location: str, tmp_path: Path, args: list[str], code: int, text: str
) -> None:
    (tmp_path / "a-file").write_text("x")
    values = {"loc": location, "missing": str(tmp_path / "missing"), "file": str(tmp_path / "a-file")}
    one_error_line(dq(*[a.format(**values) if a.startswith("{") and a.endswith("}") and a[1:-1] in values
                        else a for a in args]), code, text)


def test_a_closed_pipe_is_not_an_error(location: str) -> None:
    with Queues(location, fsync_put=False) as qs:
        qs.put_many("q1", list(range(5000)))
    done = subprocess.run(
        f"'{DQ}' tail '{location}' q1 --all -n 5000 | head -n 1", shell=True, capture_output=True, text=True,
        timeout=60,
    )
    assert done.stdout.count("\n") == 1 and done.stderr == ""


@pytest.mark.redis
def test_stats_put_and_peek_on_redis() -> None:
    skip_or_fail_without_redis()
    import redis

    prefix = f"dqcli-{uuid.uuid4().hex[:8]}"
    try:
        put = dq("put", REDIS_URL, "-o", f"prefix={prefix}", "q1", '{"a": 1}')
        assert (put.returncode, put.stdout.strip()) == (0, "1")
        data = json.loads(dq("stats", REDIS_URL, "-o", f"prefix={prefix}", "--json").stdout)
        assert data["backend"] == "redis" and data["topics"]["q1"]["ready"] == 1
        peeked = json.loads(dq("peek", REDIS_URL, "-o", f"prefix={prefix}", "q1", "1").stdout)
        assert peeked["value"] == {"a": 1}
        assert peeked["origin"]["cmd"] == "dq put" and peeked["origin"]["pid"] != os.getpid()
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)


def test_pause_and_resume(location: str) -> None:
    done = dq("pause", location, "q1")
    assert done.returncode == 0 and "Paused q1" in done.stdout
    with Queues(location, fsync_put=False) as qs:
        assert qs.paused() == ["q1"] and qs.take("q1", timeout=0) is None
    assert dq("resume", location, "q1").returncode == 0
    with Queues(location, fsync_put=False) as qs:
        assert qs.paused() == []
    one_error_line(dq("pause", location, "nope"), 3, "No topic named 'nope'")
