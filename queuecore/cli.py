"""The ``dq`` command: read and operate a queue location without Django.

    dq stats var/queues
    dq put var/queues emails '{"to": "a@example.com"}'
    dq tail var/queues emails
    dq pause var/queues emails

Each subcommand parses its arguments and calls :mod:`queuecore.ops` (the
functions behind the Django management commands too), then prints. Errors
are one line on stderr and an exit code from :mod:`queuecore.ops`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any, NoReturn

from queuecore import __version__, ops
from queuecore.errors import QueueError
from queuecore.queues import Queues
from queuecore.stats import build_stats, stats_lines

EPILOG = """\
exit codes: 0 done; 1 failed (check: problems remain); 2 bad input (arguments,
topic name, message id, JSON); 3 no such location, topic or message.
A LOCATION is a directory of slab files, memory://NAME or redis://HOST:PORT/DB."""


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(ops.EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _option(text: str) -> tuple[str, Any]:
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, not {text!r}")
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw  # a bare word: prefix=myapp, serializer=json
    return name, value


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="dq",
        description="Read and operate a dq queue location (slab directory, memory:// or redis://).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"dq {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text, epilog=EPILOG,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        sub.add_argument("location", metavar="LOCATION")
        sub.add_argument(
            "-o", "--option", action="append", type=_option, default=[], metavar="NAME=VALUE",
            help="a queuecore option, as for Queues(); VALUE is JSON or a word "
                 "(e.g. -o serializer=json, -o prefix=myapp); repeatable",
        )
        return sub

    sub = command("stats", "Show every topic's counters, the storage and the consumers.")
    sub.add_argument("--json", action="store_true", help="print the statistics as JSON")

    sub = command("put", "Put messages on TOPIC: each JSON argument, or each line of stdin.")
    sub.add_argument("topic", metavar="TOPIC")
    sub.add_argument("values", nargs="*", metavar="JSON", help="message values as JSON (none: read stdin)")
    sub.add_argument("--create", action="store_true", help="create LOCATION if it does not exist")

    sub = command("peek", "Show one message of TOPIC, whatever its state, as JSON.")
    sub.add_argument("topic", metavar="TOPIC")
    sub.add_argument("id", metavar="ID")

    sub = command("requeue", "Make messages of TOPIC ready again: the ids given, or every failed one.")
    sub.add_argument("topic", metavar="TOPIC")
    sub.add_argument("ids", nargs="*", metavar="ID")
    sub.add_argument("--failed", action="store_true", help="requeue every failed message of TOPIC")

    for name, text in (("pause", "Pause TOPIC: it still accepts puts; takes deliver nothing until resumed."),
                       ("resume", "Resume a paused TOPIC.")):
        sub = command(name, text)
        sub.add_argument("topic", metavar="TOPIC")

    sub = command("check", "Check the consistency of the stored files; exit 1 while problems remain.")
    sub.add_argument("--fix", action="store_true", help="repair what can be repaired")
    sub.add_argument("-v", "--verbose", action="store_true", help="also print what the check counted")

    sub = command("tail", "Print new messages of TOPIC as they arrive (one JSON line each), without taking them.")
    sub.add_argument("topic", metavar="TOPIC")
    start = sub.add_mutually_exclusive_group()
    start.add_argument("--all", action="store_true", help="start with the oldest stored message")
    start.add_argument("--after", metavar="ID", help="start after this message id")
    sub.add_argument("-n", "--count", type=int, metavar="N", help="stop after N messages")
    return parser


def _out(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def _stats(qs: Queues, args: argparse.Namespace) -> int:
    stats = build_stats(qs)
    if args.json:
        _out(json.dumps(stats, indent=2, sort_keys=True, default=str))
    else:
        for line in stats_lines(stats):
            _out(line)
    return ops.EXIT_OK


def _put(qs: Queues, args: argparse.Namespace) -> int:
    ops.valid_topic(args.topic)
    if args.values:
        values = ops.parse_json_values(args.values, "argument")
    else:
        values = ops.parse_json_values(sys.stdin, "line")
    for mid in ops.put_values(qs, args.topic, values):
        _out(str(mid))
    return ops.EXIT_OK


def _peek(qs: Queues, args: argparse.Namespace) -> int:
    _out(ops.to_json(ops.message_dict(ops.peek(qs, args.topic, args.id)), indent=2))
    return ops.EXIT_OK


def _requeue(qs: Queues, args: argparse.Namespace) -> int:
    for line in ops.requeue(qs, args.topic, args.ids, args.failed):
        _out(line)
    return ops.EXIT_OK


def _pause(qs: Queues, args: argparse.Namespace) -> int:
    _out(ops.set_paused(qs, args.topic, args.command == "pause"))
    return ops.EXIT_OK


def _check(qs: Queues, args: argparse.Namespace) -> int:
    report = ops.check(qs, fix=args.fix, verbose=args.verbose)
    for line in report.lines:
        _out(line)
    return ops.EXIT_OK if report.ok else ops.EXIT_FAILED


def _tail(qs: Queues, args: argparse.Namespace) -> int:
    if args.count is not None and args.count < 1:
        raise ops.CommandFailed("--count must be at least 1.", ops.EXIT_USAGE)
    after = ops.parse_id(args.after) if args.after is not None else None
    ops.existing_topic(qs, args.topic)
    if after is None:
        after = 0 if args.all else ops.newest_id(qs, args.topic)
    shown = 0
    for message in ops.follow(qs, args.topic, after):
        _out(ops.to_json(ops.message_dict(message)))
        sys.stdout.flush()
        shown += 1
        if args.count is not None and shown >= args.count:
            break
    return ops.EXIT_OK


_COMMANDS = {
    "stats": _stats,
    "put": _put,
    "peek": _peek,
    "requeue": _requeue,
    "check": _check,
    "pause": _pause,
    "resume": _pause,
    "tail": _tail,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``dq`` with ``argv`` (default: the command line); the exit code."""
    args = _parser().parse_args(argv)
    qs: Queues | None = None
    try:
        qs = ops.open_location(args.location, create=getattr(args, "create", False), **dict(args.option))
        return _COMMANDS[args.command](qs, args)
    except ops.CommandFailed as exc:
        for line in exc.lines:
            _out(line)
        sys.stderr.write(f"dq {args.command}: {exc}\n")
        return exc.exit_code
    except QueueError as exc:
        sys.stderr.write(f"dq {args.command}: {exc}\n")
        return ops.EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (dq tail ... | head): not an error of ours.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return ops.EXIT_OK
    except Exception as exc:  # one line, never a traceback, unless asked for
        if os.environ.get("DQ_TRACEBACK"):
            traceback.print_exc()
        sys.stderr.write(f"dq {args.command}: unexpected error: {type(exc).__name__}: {exc}\n")
        return ops.EXIT_FAILED
    finally:
        if qs is not None:
            try:
                qs.close()
            except Exception:
                pass


if __name__ == "__main__":
    sys.exit(main())
