"""What the decoder hands on besides events: the trace of an event too large to hold."""
from __future__ import annotations

from dataclasses import dataclass

#: Characters of an oversized event's text kept for its dead-letter record.
HEAD_CHARS = 1024


@dataclass(frozen=True)
class OversizedEvent:
    """An element of ``Records`` larger than ``MAX_EVENT_BYTES``: skipped, never held whole.

    The processor dead-letters it with the reason "event too large"; ``head`` is the start
    of its JSON text (at most ``HEAD_CHARS``), ``event_id`` its ``eventID`` when the head
    shows one.
    """

    size: int
    head: str
    event_id: str | None = None
