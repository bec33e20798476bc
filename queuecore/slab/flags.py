"""Paused topics and requests to consumer processes, as small files beside
the topics: ``<root>/.paused/<topic>`` (an empty file: the topic is paused)
and ``<root>/.controls/<key>.json`` (a request for the consumer whose
heartbeat key is ``key``). Every process sharing the directory sees them,
and they survive restarts.

Knows nothing of topics' files, slabs or leases.
"""

from __future__ import annotations

import json
import os
from typing import Any

from queuecore.slab.slabfile import _disk_error


def _fsync_dir(path: str) -> None:
    # The new or removed name must outlive a power loss like a put does.
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def set_paused(root: str, topic: str, paused: bool) -> None:
    folder = os.path.join(root, ".paused")
    path = os.path.join(folder, topic)
    try:
        if paused:
            os.makedirs(folder, exist_ok=True)
            with open(path, "a"):
                pass
        else:
            try:
                os.unlink(path)
            except FileNotFoundError:
                return
        _fsync_dir(folder)
    except OSError as exc:
        raise _disk_error(path, exc) from exc


def paused_topics(root: str) -> set[str]:
    try:
        return {n for n in os.listdir(os.path.join(root, ".paused")) if not n.startswith(".")}
    except FileNotFoundError:
        return set()


def _control_path(root: str, key: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in key)[:200]
    return os.path.join(root, ".controls", f"{safe}.json")


def write_control(root: str, key: str, record: dict[str, Any]) -> None:
    path = _control_path(root, key)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(tmp, "w") as fh:
            json.dump({"key": key, "record": record}, fh)
        os.replace(tmp, path)  # a reader sees the old request or the new one, never half
    except OSError as exc:
        raise _disk_error(path, exc) from exc


def remove_control(root: str, key: str) -> None:
    try:
        os.unlink(_control_path(root, key))
    except FileNotFoundError:
        pass


def controls(root: str) -> dict[str, dict[str, Any]]:
    folder = os.path.join(root, ".controls")
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        if not name.endswith(".json"):
            continue
        try:
            with open(os.path.join(folder, name)) as fh:
                data = json.load(fh)
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("key"), str) and isinstance(data.get("record"), dict):
            out[data["key"]] = data["record"]
    return out
