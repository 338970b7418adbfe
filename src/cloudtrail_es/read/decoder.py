"""Bytes of a CloudTrail log file -> its events, streamed, with memory bounded by the settings.

A CloudTrail log file is ``{"Records":[event,event,...]}``, gzipped. Small files (the
common case) are inflated and parsed whole with orjson when it is sure to give what the
standard library gives; every other file is streamed: inflated ``READ_SIZE`` at a time
and decoded an event at a time from a window that holds the unread text. Memory is
bounded by the settings, not by the file: an event longer than ``max_event_bytes`` is
scanned past without being held (``OversizedEvent``) and a file inflating to more than
``max_file_bytes`` fails (``FileTooLarge``). Each character is scanned a bounded number
of times, so time is linear in the file. JSON nested deeper than the standard library
can parse is parsed by ``deepjson``.
"""
from __future__ import annotations

import codecs
import itertools
import json
import re
from dataclasses import dataclass
from typing import Any, Iterator, Union

from cloudtrail_es.core import deepjson, gzipped
from cloudtrail_es.core.deepjson import scanstring
from cloudtrail_es.core.errors import BadLogFile, FileTooLarge

__all__ = ["FileTooLarge", "OversizedEvent", "events_in", "iter_events"]

try:  # parses a whole small file in about half the standard library's time
    from orjson import loads as _orjson_loads
except ImportError:  # pragma: no cover - the standard library alone gives the same events
    _orjson_loads = None  # type: ignore[assignment]

GZIP_MAGIC = b"\x1f\x8b"

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


READ_SIZE = 1 << 20
#: A file inflating to at most this many bytes (and to at most ``max_event_bytes``) is parsed
#: whole: orjson on a whole small file costs about half of the standard library's parse.
WHOLE_FILE_BYTES = 4 << 20
#: Defaults of ``Settings.max_event_bytes`` / ``max_file_bytes`` (MAX_EVENT_BYTES,
#: MAX_FILE_BYTES): CloudTrail's own events are a few KB, its files rarely above 100 MB inflated.
DEFAULT_MAX_EVENT_BYTES = 8 << 20
DEFAULT_MAX_FILE_BYTES = 2 << 30

_JSON_WHITESPACE = re.compile(r"[ \t\n\r]*")
_RECORDS_START = re.compile(r'\{[ \t\n\r]*"Records"[ \t\n\r]*:[ \t\n\r]*\[')
_RECORDS_START_BYTES = re.compile(rb'[ \t\n\r]*\{[ \t\n\r]*"Records"[ \t\n\r]*:[ \t\n\r]*\[')
#: Characters that can start a JSON value other than an object.
_VALUE_START = frozenset('["-0123456789tfnNI')
#: Outside strings, only these matter for finding where an element ends; inside, these.
_STRUCTURE = re.compile(r'["{}\[\]]')
_STRING_STOP = re.compile(r'["\\]')
_EVENT_ID = re.compile(r'"eventID"[ \t\n\r]*:[ \t\n\r]*"')
#: orjson reads integers of 19 digits or more as floats; a file holding one is left to the
#: standard library. A number follows ``:``, ``,`` or ``[`` (then whitespace, maybe ``-``):
#: with digits and ``-`` made ``0``, those three and whitespace ``:``, every long one reads
#: ``:`` + 19 zeros (so may some strings: a file holding one only takes the slower path).
_NUMBERS_MARKED = bytes.maketrans(b"123456789-,[ \t\n\r", b"0000000000::::::")
_LONG_NUMBER = b":" + b"0" * 19

Decoded = Union[dict[str, Any], OversizedEvent]


def events_in(data: bytes, *, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
              max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> list[Decoded]:
    """All the ``Records`` of a CloudTrail log file (see ``iter_events``)."""
    return list(iter_events(data, max_event_bytes=max_event_bytes, max_file_bytes=max_file_bytes))


def iter_events(data: bytes, *, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
                max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> Iterator[Decoded]:
    """The events of a CloudTrail log file, gzipped or not (told by its magic bytes), one by one.

    Each is a dict, or an ``OversizedEvent`` for an element whose JSON text is longer than
    ``max_event_bytes`` characters (skipped, never held whole; decoding goes on after it).
    A file shaped as CloudTrail writes it (``{"Records":[...]}``) is parsed whole when it
    is small and streamed otherwise; anything else is parsed whole when it is at most
    ``max_event_bytes`` long, and refused otherwise. Errors raise BadLogFile (FileTooLarge
    past ``max_file_bytes`` inflated), possibly after some events were yielded.
    """
    pieces = _inflated(data, max_file_bytes)
    head: list[bytes] = []
    size = 0
    whole_limit = min(WHOLE_FILE_BYTES, max_event_bytes)
    for piece in pieces:
        head.append(piece)
        size += len(piece)
        if size > whole_limit:
            yield from _stream(_text_chunks(itertools.chain(head, pieces)), max_event_bytes)
            return
    whole = b"".join(head)
    records = _records_of_small_file(whole)
    if records is None:
        yield from _stream(_text_chunks(iter([whole])), max_event_bytes)
    else:
        yield from records


def _records_of_small_file(whole: bytes) -> list[dict[str, Any]] | None:
    """The events by orjson, when it is certain to agree with the streaming decoder; else None.

    orjson refuses what it cannot read as the standard library does (NaN, lone surrogate
    escapes, nesting past 1,024 levels, numbers beyond a double) and reads integers of 19
    digits or more as floats: those files, and any whose shape is not exactly
    ``{"Records":[{...},...]}``, go through the streaming decoder instead.
    """
    if _orjson_loads is None or not _RECORDS_START_BYTES.match(whole) \
            or whole.count(b'"Records"') > 1 \
            or whole.translate(_NUMBERS_MARKED).find(_LONG_NUMBER) >= 0:
        return None
    try:
        content = _orjson_loads(whole)
    except ValueError:
        return None
    records = content.get("Records") if type(content) is dict and len(content) == 1 else None
    if type(records) is not list or not all(type(record) is dict for record in records):
        return None
    return records


def _inflated(data: bytes, max_file_bytes: int) -> Iterator[bytes]:
    """The file's bytes, gunzipped (every member) when it starts with gzip's magic bytes."""
    if data[:2] != GZIP_MAGIC:
        if len(data) > max_file_bytes:
            raise _too_large(max_file_bytes)
        for start in range(0, len(data), READ_SIZE):
            yield data[start:start + READ_SIZE]
        return
    total = 0
    rest: bytes = data
    while rest:
        inflater = gzipped.inflater()
        pending = rest
        while True:
            try:
                piece = inflater.decompress(pending, READ_SIZE)
            except gzipped.Error as exc:
                raise BadLogFile(f"corrupt gzip data: {exc}") from exc
            pending = inflater.unconsumed_tail
            total += len(piece)
            if total > max_file_bytes:
                raise _too_large(max_file_bytes)
            if piece:
                yield piece
            if inflater.eof:
                rest = inflater.unused_data.lstrip(b"\x00")  # gzip allows zero padding
                break
            if not piece and not pending:
                raise BadLogFile("corrupt gzip data: the file ends inside its compressed stream")


def _too_large(max_file_bytes: int) -> FileTooLarge:
    return FileTooLarge(f"the file inflates to more than {max_file_bytes:,} bytes "
                        f"(MAX_FILE_BYTES)")


def _text_chunks(pieces: Iterator[bytes]) -> Iterator[str]:
    """UTF-8 text of the pieces (a character split between two pieces is kept whole)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        for piece in pieces:
            text = decoder.decode(piece)
            if text:
                yield text
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise BadLogFile(f"not valid JSON: {exc}") from exc


class _Window:
    """The unread text: ``text[pos:]``, refilled from the chunks, the read part dropped."""

    def __init__(self, chunks: Iterator[str]) -> None:
        self.chunks = chunks
        self.text = ""
        self.pos = 0
        self.dropped = 0        # characters before text[0]
        self.exhausted = False

    def fill(self, keep_from: int | None = None) -> int:
        """Append the next chunk, dropping what lies before ``keep_from`` (default: ``pos``).

        Returns how far positions moved (subtract it from any position held), or -1 at the end.
        """
        more = next(self.chunks, None)
        if more is None:
            self.exhausted = True
            return -1
        cut = self.pos if keep_from is None else keep_from
        self.text = self.text[cut:] + more
        self.pos -= cut
        self.dropped += cut
        return cut

    def next_char(self) -> str:
        """The next character that is not JSON whitespace (not consumed); "" at the end."""
        while True:
            self.pos = _JSON_WHITESPACE.match(self.text, self.pos).end()  # type: ignore[union-attr]
            if self.pos < len(self.text):
                return self.text[self.pos]
            if self.fill() < 0:
                return ""

    def ensure(self, count: int) -> None:
        """At least ``count`` characters after ``pos``, unless the file ends first."""
        while len(self.text) - self.pos < count and self.fill() >= 0:
            pass

    def offset(self) -> int:
        return self.dropped + self.pos


def _stream(chunks: Iterator[str], max_event_bytes: int) -> Iterator[Decoded]:
    window = _Window(chunks)
    if window.next_char() == "":
        raise BadLogFile("not valid JSON: the file is empty")
    window.ensure(256)
    start = _RECORDS_START.match(window.text, window.pos)
    if start is None:
        yield from _parse_whole(_rest_of(window, max_event_bytes))
        return
    window.pos = start.end()
    first = True
    while True:
        char = window.next_char()
        if char == "]":
            window.pos += 1
            if window.next_char() != "}":
                raise BadLogFile("not a CloudTrail log file: unexpected content after \"Records\"")
            window.pos += 1
            if window.next_char() != "":
                raise BadLogFile("not a CloudTrail log file: unexpected content after \"Records\"")
            return
        if not first:
            if char == "":
                raise BadLogFile("not valid JSON: the file ends inside \"Records\"")
            if char != ",":
                raise BadLogFile(f"not valid JSON: expected ',' or ']' at character {window.offset()}")
            window.pos += 1
            char = window.next_char()
        if char == "":
            raise BadLogFile("not valid JSON: the file ends inside \"Records\"")
        if char != "{":
            if char in _VALUE_START:
                raise BadLogFile("not a CloudTrail log file: a \"Records\" element is not an object")
            raise BadLogFile(f"not valid JSON: expected a value at character {window.offset()}")
        first = False
        yield _element(window, max_event_bytes)


def _element(window: _Window, limit: int) -> Decoded:
    """The object starting at ``window.pos``, which is left just past it."""
    start = window.pos
    try:
        event, end = _RAW_DECODE(window.text, start)
    except (ValueError, RecursionError):
        pass  # incomplete in the window, too deep, or invalid: find its end first
    else:
        if end - start > limit:
            window.pos = end
            return _oversized(window.text[start:end], end - start)
        window.pos = end
        return event
    end = _scan_to_end(window, limit)
    if end < 0:  # too large: scanned past, not held
        return window.oversized  # type: ignore[attr-defined, no-any-return]
    start = window.pos
    window.pos = end
    try:
        event, parsed_end = _RAW_DECODE(window.text, start)
    except RecursionError:
        event, parsed_end = _deep_decode(window, start)
    except ValueError as exc:
        raise BadLogFile(f"not valid JSON: {exc}") from exc
    if parsed_end != end:  # pragma: no cover - the scanner and the parser disagree on the end
        raise BadLogFile(f"not valid JSON: unexpected end of an event at character {window.offset()}")
    return event


def _deep_decode(window: _Window, start: int) -> tuple[Any, int]:
    try:
        return deepjson.raw_decode(window.text, start)
    except ValueError as exc:
        raise BadLogFile(f"not valid JSON: {exc}") from exc


def _scan_to_end(window: _Window, limit: int) -> int:
    """Where the object at ``window.pos`` ends, reading on as needed; -1 if it is too large.

    Strings and nesting are followed without parsing (one regular-expression search per
    string or bracket). Past ``limit`` characters the object is no longer held: the window
    keeps only what is left to scan, and ``window.oversized`` is its trace.
    """
    text = window.text
    i = window.pos
    start_offset = window.offset()
    head: str | None = None
    depth = 0
    in_string = False
    while True:
        match = (_STRING_STOP if in_string else _STRUCTURE).search(text, i)
        if match is not None:
            char = match.group()
            if char == "\\":
                if match.end() < len(text):
                    i = match.end() + 1
                    continue
                i = match.start()  # the escaped character is in the next chunk
            else:
                i = match.end()
                if char == '"':
                    in_string = not in_string
                elif char in "{[":
                    depth += 1
                else:
                    depth -= 1
                    if depth == 0:
                        size = window.dropped + i - start_offset
                        if head is None and size <= limit:
                            return i
                        if head is None:
                            head = text[window.pos:min(i, window.pos + HEAD_CHARS)]
                        window.pos = i
                        window.oversized = _oversized(head, size)  # type: ignore[attr-defined]
                        return -1
                continue
        else:
            i = len(text)
        # Need more text.
        if head is None and window.dropped + len(text) - start_offset > limit:
            head = text[window.pos:window.pos + HEAD_CHARS]
        if head is not None:
            window.pos = i  # not held: drop everything scanned
        moved = window.fill()
        if moved < 0:
            raise BadLogFile("not valid JSON: the file ends inside an event")
        i -= moved
        text = window.text


def _oversized(head_text: str, size: int) -> OversizedEvent:
    head = head_text[:HEAD_CHARS]
    event_id = None
    found = _EVENT_ID.search(head)
    if found is not None:
        try:
            event_id = scanstring(head, found.end())[0]
        except ValueError:
            event_id = None
    return OversizedEvent(size, head, event_id)


def _rest_of(window: _Window, limit: int) -> str:
    """The unread text, for a file not shaped as CloudTrail writes it (at most ``limit`` long)."""
    parts = [window.text[window.pos:]]
    size = len(parts[0])
    for more in window.chunks:
        if size > limit:
            break
        size += len(more)
        parts.append(more)
    if size > limit:
        raise BadLogFile("not a CloudTrail log file: it does not start with {\"Records\":[ "
                         f"and is larger than {limit:,} characters (MAX_EVENT_BYTES)")
    return "".join(parts)


def _parse_whole(text: str) -> list[dict[str, Any]]:
    try:
        try:
            content = json.loads(text)
        except RecursionError:
            content = deepjson.loads(text)
    except ValueError as exc:
        raise BadLogFile(f"not valid JSON: {exc}") from exc
    records = content.get("Records") if isinstance(content, dict) else None
    if not isinstance(records, list):
        raise BadLogFile("not a CloudTrail log file: no top-level \"Records\" array")
    if not all(isinstance(record, dict) for record in records):
        raise BadLogFile("not a CloudTrail log file: a \"Records\" element is not an object")
    return records


_RAW_DECODE = json.JSONDecoder().raw_decode
