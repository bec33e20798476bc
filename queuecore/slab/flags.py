"""Paused topics and requests to consumer processes, as small files beside
the topics: ``<root>/.paused/<topic>`` (an empty file: the topic is paused)
and ``<root>/.controls/<key>.json`` (a request for the consumer whose
heartbeat key is ``key``). Every process sharing the directory sees them,
and they survive restarts.

Knows nothing of topics' files, slabs or leases.
"""

from __future__ import annotations

import os
from typing import Any

from queuecore.slab import heartbeats
from queuecore.slab.slabfile import _disk_error, _fsync_dir


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
        _fsync_dir(folder)  # the new or removed name outlives a power loss, as a put does
    except OSError as exc:
        raise _disk_error(path, exc) from exc


def paused_topics(root: str) -> set[str]:
    try:
        return {n for n in os.listdir(os.path.join(root, ".paused")) if not n.startswith(".")}
    except FileNotFoundError:
        return set()


# Requests are JSON files written and read like heartbeats, in their own folder.
CONTROLS = ".controls"


def write_control(root: str, key: str, record: dict[str, Any]) -> None:
    heartbeats.write(root, key, {"key": key, "record": record}, folder=CONTROLS)


def remove_control(root: str, key: str) -> None:
    heartbeats.remove(root, key, folder=CONTROLS)


def controls(root: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for data in heartbeats.read_all(root, folder=CONTROLS):
        if isinstance(data.get("key"), str) and isinstance(data.get("record"), dict):
            out[data["key"]] = data["record"]
    return out


class SideFiles:
    """The heartbeats, paused topics and requests of a slab directory, as
    methods of :class:`~queuecore.slab.SlabBackend` (``root`` is its folder)."""

    root: str

    # -- heartbeats ---------------------------------------------------------------
    def write_heartbeat(self, key: str, record: dict[str, Any]) -> None:
        heartbeats.write(self.root, key, record)

    def remove_heartbeat(self, key: str) -> None:
        heartbeats.remove(self.root, key)

    def heartbeats(self) -> list[dict[str, Any]]:
        return heartbeats.read_all(self.root)

    # -- paused topics, consumer controls -----------------------------------------
    def set_paused(self, topic: str, paused: bool) -> None:
        set_paused(self.root, topic, paused)

    def paused_topics(self) -> set[str]:
        return paused_topics(self.root)

    def write_control(self, key: str, record: dict[str, Any]) -> None:
        write_control(self.root, key, record)

    def remove_control(self, key: str) -> None:
        remove_control(self.root, key)

    def controls(self) -> dict[str, dict[str, Any]]:
        return controls(self.root)
