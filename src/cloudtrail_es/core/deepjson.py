"""JSON text <-> values at any depth, without recursion: the fallback for what ``json`` cannot.

The standard library's parser and encoder recurse once per level and raise
``RecursionError`` near 1,000 levels (orjson stops at 1,024 and 254). CloudTrail's own
events are a few levels deep, but a valid file may nest deeper, so the decoder and the
transform fall back to these two functions when the fast ones give up. Both give exactly
what ``json.loads`` and ``json.dumps(value, ensure_ascii=False, separators=(",", ":"))``
give, only slower.
"""
from __future__ import annotations

import json
import re
from json.encoder import encode_basestring
from typing import Any

_WHITESPACE = re.compile(r"[ \t\n\r]*")
_NUMBER = re.compile(r"(-?(?:0|[1-9][0-9]*))(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_CONSTANTS = {"null": None, "true": True, "false": False, "NaN": float("nan"),
              "Infinity": float("inf"), "-Infinity": float("-inf")}
_END = object()
scanstring = json.decoder.scanstring  # type: ignore[attr-defined]  # C, exactly json's


def loads(text: str) -> Any:
    """``json.loads(text)`` at any depth (raises ``json.JSONDecodeError`` as it does)."""
    value, end = raw_decode(text, 0)
    end = _WHITESPACE.match(text, end).end()  # type: ignore[union-attr]
    if end != len(text):
        raise json.JSONDecodeError("Extra data", text, end)
    return value


def raw_decode(text: str, pos: int) -> tuple[Any, int]:  # noqa: C901 - one explicit-stack parser loop
    """One JSON value starting at ``pos`` (no leading whitespace skipped): (value, its end)."""
    ws = _WHITESPACE.match
    # Each frame: [container, key of the value being read (objects only)].
    stack: list[list[Any]] = []
    i = pos
    while True:
        char = text[i:i + 1]
        if char == "{":
            i = ws(text, i + 1).end()  # type: ignore[union-attr]
            if text[i:i + 1] == "}":
                value: Any = {}
                i += 1
            else:
                key, i = _key(text, i)
                stack.append([{}, key])
                continue
        elif char == "[":
            i = ws(text, i + 1).end()  # type: ignore[union-attr]
            if text[i:i + 1] == "]":
                value = []
                i += 1
            else:
                stack.append([[], None])
                continue
        elif char == '"':
            value, i = scanstring(text, i + 1)
        else:
            value, i = _scalar(text, i)
        while True:  # the value is complete: hand it to its container, close what ends here
            if not stack:
                return value, i
            frame = stack[-1]
            container = frame[0]
            if frame[1] is None:
                container.append(value)
            else:
                container[frame[1]] = value
            i = ws(text, i).end()  # type: ignore[union-attr]
            char = text[i:i + 1]
            if char == ",":
                i = ws(text, i + 1).end()  # type: ignore[union-attr]
                if frame[1] is not None:
                    frame[1], i = _key(text, i)
                break
            if char == ("]" if frame[1] is None else "}"):
                stack.pop()
                value, i = container, i + 1
                continue
            expected = "',' or ']'" if frame[1] is None else "',' or '}'"
            raise json.JSONDecodeError(f"Expecting {expected} delimiter", text, i)


def _key(text: str, i: int) -> tuple[str, int]:
    """An object's key and the position of its value (after the colon and whitespace)."""
    if text[i:i + 1] != '"':
        raise json.JSONDecodeError("Expecting property name enclosed in double quotes", text, i)
    key, i = scanstring(text, i + 1)
    i = _WHITESPACE.match(text, i).end()  # type: ignore[union-attr]
    if text[i:i + 1] != ":":
        raise json.JSONDecodeError("Expecting ':' delimiter", text, i)
    return key, _WHITESPACE.match(text, i + 1).end()  # type: ignore[union-attr]


def _scalar(text: str, i: int) -> tuple[Any, int]:
    number = _NUMBER.match(text, i)
    if number is not None and not text.startswith("-Infinity", i):
        integer, fraction, exponent = number.groups()
        if fraction or exponent:
            return float(integer + (fraction or "") + (exponent or "")), number.end()
        return int(integer), number.end()
    for word, value in _CONSTANTS.items():
        if text.startswith(word, i):
            return value, i + len(word)
    raise json.JSONDecodeError("Expecting value", text, i)


def dumps(value: Any) -> str:
    """``json.dumps(value, ensure_ascii=False, separators=(",", ":"))`` at any depth."""
    parts: list[str] = []
    # Each frame: [iterator over the container's items, is an object, nothing written yet].
    stack: list[list[Any]] = []
    while True:
        kind = type(value)
        if kind is dict or isinstance(value, dict):
            parts.append("{")
            stack.append([iter(value.items()), True, True])
        elif kind is list or isinstance(value, (list, tuple)):
            parts.append("[")
            stack.append([iter(value), False, True])
        else:
            parts.append(_encoded_scalar(value))
        while stack:
            frame = stack[-1]
            item: Any = next(frame[0], _END)
            if item is _END:
                parts.append("}" if frame[1] else "]")
                stack.pop()
                continue
            if frame[2]:
                frame[2] = False
            else:
                parts.append(",")
            if frame[1]:
                key, value = item
                parts.append(encode_basestring(key if type(key) is str else _key_text(key)) + ":")
            else:
                value = item
            break
        else:
            return "".join(parts)


def _key_text(key: Any) -> str:
    """A non-string key as ``json.dumps`` spells it."""
    if key is True or key is False or key is None:
        return json.dumps(key)
    if isinstance(key, (int, float)):
        return _encoded_scalar(key)
    if isinstance(key, str):
        return key
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")


def _encoded_scalar(value: Any) -> str:
    if isinstance(value, str):
        return encode_basestring(value)
    return json.dumps(value, ensure_ascii=False)


def scalar_text(value: Any) -> str:
    """A scalar as the string a JSON reader would recognise (``true``, ``1.5``)."""
    kind = type(value)
    if kind is str:
        return value
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    return json.dumps(value, ensure_ascii=False)
