"""The seed's demo consumers: one per topic, each logging what it got."""

from __future__ import annotations

import logging
from typing import Any

from dqadmin.consumers import consumer

log = logging.getLogger("dq.demo")


@consumer("q1")
def got_message(value: Any) -> None:
    log.info("Got the message! - %s", value)


@consumer("q2")
def got_message_on_second_queue(value: Any) -> None:
    log.info("Got the message on second queue! - %s", value)
