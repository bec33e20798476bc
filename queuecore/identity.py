"""Who this process is, as a message's history names it: the producer of
a put (kept with the message) and the consumer of a delivery (kept with
each delivery that did not complete).

An origin is a small dict ``{"host", "pid", "cmd"}``; :func:`label` turns
one (or a lease owner's name) into what the dashboard shows. The dict is
read once per process and made again in a forked child, whose pid differs.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

# Longest command kept: the history of a message stays small.
MAX_CMD = 80
# Programs whose first argument says what they do (manage.py runconsumers).
_DISPATCHERS = {"manage.py", "django-admin", "django-admin.py", "dq", "python", "python3"}

_cached: tuple[int, dict[str, Any]] | None = None


def clean(text: str) -> str:
    r"""``text`` made encodable: a byte that is not UTF-8 (a surrogate, from
    a file name or an argument in another encoding) becomes ``\xNN``.

    >>> clean("caf\udce9.py"), clean("café")
    ('caf\\xe9.py', 'café')
    """
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate surrogateescape did not make
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _command(argv: list[str]) -> str:
    if not argv or not argv[0]:
        return "python"
    if argv[0] in ("-c", "-"):  # a program given on the command line or stdin
        return f"python {argv[0]}"
    prog = os.path.basename(argv[0])
    if prog == "__main__.py":  # python -m package: the package's folder names it
        prog = os.path.basename(os.path.dirname(argv[0])) or prog
    if prog in _DISPATCHERS and len(argv) > 1 and not argv[1].startswith("-"):
        prog = f"{prog} {os.path.basename(argv[1]) if prog.startswith('python') else argv[1]}"
    return clean(prog)[:MAX_CMD]


def current() -> dict[str, Any]:
    """This process: ``{"host": ..., "pid": ..., "cmd": ...}``.

    >>> me = current()
    >>> me["pid"] == os.getpid(), sorted(me)
    (True, ['cmd', 'host', 'pid'])
    """
    global _cached
    pid = os.getpid()
    if _cached is None or _cached[0] != pid:
        _cached = (pid, {"host": clean(socket.gethostname() or "localhost")[:64], "pid": pid,
                         "cmd": _command(list(sys.argv))})
    return _cached[1]


def label(origin: Any) -> str:
    """How people see an origin: ``pid 4242 on web1 (manage.py runconsumers)``;
    a string (a lease owner's name) as it is; "" for anything else.

    >>> label({"host": "web1", "pid": 4242, "cmd": "manage.py runconsumers"})
    'pid 4242 on web1 (manage.py runconsumers)'
    >>> label("pid 7 on db"), label(None)
    ('pid 7 on db', '')
    """
    if isinstance(origin, str):
        return clean(origin)[:200]
    if not isinstance(origin, dict):
        return ""
    text = f"pid {origin.get('pid', '?')} on {origin.get('host', '?')}"
    cmd = origin.get("cmd")
    return clean(f"{text} ({str(cmd)[:MAX_CMD]})" if cmd else text)
