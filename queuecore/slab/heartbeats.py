"""Consumer heartbeats: one JSON file per consumer in ``<root>/.consumers/``,
written by its runner and read by the dashboard (the requests to consumers
of :mod:`queuecore.slab.flags` are files of the same kind, in their own folder). Each write replaces the
file whole (a reader sees the old beat or the new one, never half).

Knows nothing of topics, slabs or leases.
"""

from __future__ import annotations

import json
import os
from typing import Any

from queuecore.slab.slabfile import _disk_error

FOLDER = ".consumers"


def _path(root: str, key: str, folder: str = FOLDER) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in key)[:200]
    return os.path.join(root, folder, f"{safe}.json")


def write(root: str, key: str, record: dict[str, Any], folder: str = FOLDER) -> None:
    path = _path(root, key, folder)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(tmp, "w") as fh:
            json.dump(record, fh)
        os.replace(tmp, path)  # readers see the old beat or the new one, never half
    except OSError as exc:
        raise _disk_error(path, exc) from exc


def remove(root: str, key: str, folder: str = FOLDER) -> None:
    try:
        os.unlink(_path(root, key, folder))
    except FileNotFoundError:
        pass


def read_all(root: str, folder: str = FOLDER) -> list[dict[str, Any]]:
    out = []
    folder = os.path.join(root, folder)
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    for name in names:
        if not name.endswith(".json"):
            continue
        try:
            with open(os.path.join(folder, name)) as fh:
                record = json.load(fh)
        except (OSError, ValueError):
            continue
        if isinstance(record, dict):
            out.append(record)
    return out
