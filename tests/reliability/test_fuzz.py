"""Fuzzing: the slab reader fed mutated slab (and meta) files, and the
management commands fed hostile ids, topic names and options.

- Slabs: Hypothesis mutates a real queue directory (bytes set, bits flipped,
  ranges zeroed or copied over, files cut short), then the queue is opened,
  browsed, peeked, drained, checked and repaired. Only ``QueueError``
  subclasses (``CorruptSlab`` among them) may come out; never another
  exception, never a hang (``signal.alarm``).
- Commands: ``call_command`` with hostile arguments raises ``CommandError``
  or succeeds, never another exception.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dqadmin.queues import close_queues
from queuecore import QueueError, Queues

STRESS = bool(os.environ.get("DQ_STRESS"))
OPTIONS = {"fsync_put": False, "slab_size": 4096}
CASE_SECONDS = 20  # a single example taking longer is a hang
SHORT = settings(max_examples=40, derandomize=True, deadline=None,
                 suppress_health_check=list(HealthCheck))
LONG = settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck))


class Hang(BaseException):
    """Raised by the alarm: not an Exception, so the engine cannot swallow it."""


def _alarm(signum: int, frame: Any) -> None:
    raise Hang()


def build(d: Path) -> None:
    with Queues(str(d), **OPTIONS) as qs:
        qs.put_many("q", [{"i": i, "pad": "z" * (i * 37 % 300)} for i in range(40)])
        for n in range(15):
            t = qs.take("q", timeout=0)
            assert t is not None
            [t.complete, lambda t=t: t.retry(delay=3600, reason="r"),
             lambda t=t: t.fail("f"), lambda: None][n % 4]()


@pytest.fixture(scope="module")
def pristine() -> Iterator[tuple[Path, list[str]]]:
    base = Path(tempfile.mkdtemp(prefix="dq-fuzz-"))
    build(base / "queues")
    files = sorted(p.name for p in (base / "queues" / "q").glob("*.slab"))
    yield base / "queues", files
    shutil.rmtree(base, ignore_errors=True)


mutation = st.one_of(
    st.tuples(st.just("set"), st.integers(0, 2**20), st.integers(0, 255)),
    st.tuples(st.just("flip"), st.integers(0, 2**20), st.integers(0, 7)),
    st.tuples(st.just("zero"), st.integers(0, 2**20), st.integers(1, 300)),
    st.tuples(st.just("copy"), st.integers(0, 2**20), st.integers(0, 2**20)),
    st.tuples(st.just("cut"), st.integers(0, 2**20), st.just(0)),
)


def mutate(path: Path, muts: list[tuple[str, int, int]]) -> None:
    data = bytearray(path.read_bytes())
    for kind, a, b in muts:
        if not data:
            break
        pos = a % len(data)
        if kind == "set":
            data[pos] = b
        elif kind == "flip":
            data[pos] ^= 1 << b
        elif kind == "zero":
            data[pos : pos + b] = bytes(len(data[pos : pos + b]))
        elif kind == "copy":  # an entry's bytes over another place
            src = b % len(data)
            chunk = data[src : src + 200]
            data[pos : pos + len(chunk)] = chunk
            del data[len(path.read_bytes()):]
        elif kind == "cut":
            del data[pos:]
    path.write_bytes(bytes(data))


def exercise(d: Path) -> None:
    """Everything a user does with a damaged directory; only QueueError may
    come out."""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(CASE_SECONDS)
    try:
        with Queues(str(d), **OPTIONS) as qs:
            for op in (
                lambda: qs.stats(),
                lambda: [qs.peek("q", m.id) for m in qs.messages("q", limit=500)],
                lambda: qs.messages("q", state="completed", limit=500),
                lambda: [t.complete() for t in qs.take_many("q", 500, timeout=0)],
                lambda: qs.requeue_failed("q"),
                lambda: qs.purge("q", state="failed"),
                lambda: qs.check(),
                lambda: qs.check(fix=True),
                lambda: qs.check(),
                lambda: qs.put("q", {"after": 1}),
                lambda: qs.take("q", timeout=0),
            ):
                try:
                    op()
                except QueueError:
                    pass
    except QueueError:
        pass
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def fuzz_case(pristine: tuple[Path, list[str]], which: int,
              muts: list[tuple[str, int, int]], meta: bool = False) -> None:
    src, files = pristine
    work = Path(tempfile.mkdtemp(prefix="dq-fuzz-case-"))
    try:
        d = work / "queues"
        shutil.copytree(src, d)
        name = "meta" if meta else files[which % len(files)]
        mutate(d / "q" / name, muts)
        exercise(d)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@SHORT
@given(which=st.integers(0, 100), muts=st.lists(mutation, min_size=1, max_size=6))
def test_fuzz_slab_files_short(pristine: tuple[Path, list[str]], which: int,
                               muts: list[tuple[str, int, int]]) -> None:
    fuzz_case(pristine, which, muts)


@pytest.mark.stress
@LONG
@given(which=st.integers(0, 100), muts=st.lists(mutation, min_size=1, max_size=12))
def test_fuzz_slab_files_long(pristine: tuple[Path, list[str]], which: int,
                              muts: list[tuple[str, int, int]]) -> None:
    fuzz_case(pristine, which, muts)


@SHORT
@given(muts=st.lists(mutation, min_size=1, max_size=4))
def test_fuzz_meta_file_short(pristine: tuple[Path, list[str]],
                              muts: list[tuple[str, int, int]]) -> None:
    fuzz_case(pristine, 0, muts, meta=True)


# -- management commands ------------------------------------------------------------

HOSTILE_TOPICS = ["", ".", "..", "../etc", "/etc/passwd", "a/b", ".hidden", "a" * 101,
                  "q\x00", "q\n", "tópico", "q q", "-q", "--", "%s", "{}", "q1;rm", "\u202e"]
HOSTILE_IDS = ["0", "-1", "1.5", "1e3", "0x10", "", " ", "\u0663", "\uff11", "abc",
               "9" * 30, "9" * 4300, "1 2", "+1"]  # 4301+ digits: test_b4 below


@pytest.fixture
def dq_dir(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "queues"
    with Queues(str(d), fsync_put=False) as qs:
        qs.put_many("known", [1, 2, 3])
        t = qs.take("known", timeout=0)
        assert t is not None and t.fail("x")
    with override_settings(DQ={"LOCATION": str(d), "OPTIONS": {"fsync_put": False}}):
        close_queues()
        yield d
        close_queues()


def command_outcome(*args: str, **options: Any) -> str:
    try:
        call_command(*args, stdout=open(os.devnull, "w"), stderr=open(os.devnull, "w"),
                     **options)
    except CommandError:
        return "refused"
    return "ok"


def hostile_calls(topic: str, mid: str) -> list[tuple[tuple[str, ...], dict[str, Any]]]:
    return [
        (("dqrequeue", topic, mid), {}),
        (("dqrequeue", "known", mid), {}),
        (("dqrequeue", topic), {"failed": True}),
        (("dqpurge", topic), {"yes": True}),
        (("dqpurge", "known", "--state", topic), {"yes": True}),
        (("dqproduce", mid), {}),
        (("dqproduce", "1", "--topics", topic), {}),
        (("dqproduce", "1", "--rate", mid), {}),
        # "--" first: the topic is never read as an option (a bare "--" would
        # run every registered consumer); never a registered topic: see below.
        (("runconsumers", "--", topic), {}),
        (("runconsumers", "--concurrency", mid), {}),
        (("dqstats",), {}),
        (("dqcheck",), {}),
    ]


def run_hostile(topic: str, mid: str) -> None:
    if topic in ("q1", "q2"):  # registered demo topics: runconsumers would run
        topic = topic + "/"
    try:
        valid_count = int(mid) >= 1
    except ValueError:
        valid_count = False
    for args, options in hostile_calls(topic, mid):
        # A valid concurrency would start the consumers; a valid count or rate
        # of dqproduce would put that many messages: those are not hostile.
        if valid_count and (args[1:2] == ("--concurrency",) or args[0] == "dqproduce"):
            continue
        try:
            command_outcome(*args, **options)
        except Exception as exc:  # anything but CommandError is a finding
            raise AssertionError(f"{args} {options} raised {type(exc).__name__}: {exc}") from exc


@pytest.mark.parametrize("topic", HOSTILE_TOPICS)
def test_commands_refuse_hostile_topics(dq_dir: Path, topic: str) -> None:
    run_hostile(topic, "1")
    assert not (dq_dir.parent / "etc").exists()


@pytest.mark.parametrize("mid", HOSTILE_IDS)
def test_commands_refuse_hostile_ids(dq_dir: Path, mid: str) -> None:
    run_hostile("known", mid)


@pytest.mark.parametrize("extent", [pytest.param(SHORT, id="short"),
                                    pytest.param(LONG, id="long", marks=pytest.mark.stress)])
def test_commands_fuzzed(dq_dir: Path, extent: Any) -> None:
    @extent
    @given(topic=st.text(max_size=120), mid=st.text(max_size=30))
    def inner(topic: str, mid: str) -> None:
        run_hostile(topic, mid)

    inner()


def test_b4_dqrequeue_refuses_an_id_of_5000_digits(dq_dir: Path) -> None:
    with pytest.raises(CommandError):
        call_command("dqrequeue", "known", "9" * 5000, stdout=open(os.devnull, "w"))
