"""Index names we create or write to, and names and ids placed in a URL path.

``INDEX_PREFIX`` is checked against the engine's index-name rules once, when read, so
that every ``PREFIX-YYYY-MM`` built from it is a name the cluster accepts; whatever else
goes into a URL path (a name read back from the cluster, a saved object's id) is
percent-encoded as one path segment, so it can never reach another endpoint.
"""
from __future__ import annotations

import re
from urllib.parse import quote

from cloudtrail_es.core.errors import ConfigurationError

#: Characters the engines refuse in index names (and ``:``, reserved for remote clusters).
FORBIDDEN_CHARACTERS = frozenset('\\/*?"<>|,#: ')
FORBIDDEN_FIRST = frozenset("_-+.")
#: Index names are at most 255 bytes; ``-YYYY-MM`` takes 8 of them.
MAX_PREFIX_BYTES = 255 - len("-YYYY-MM")
PREFIX_RULE = (
    "INDEX_PREFIX must be lowercase, 1 to 247 bytes of UTF-8, without any of "
    '\\ / * ? " < > | , # : space or control characters, and not start with _ - + or .')


def validate_prefix(prefix: str) -> str:
    """``prefix`` if every ``prefix-YYYY-MM`` is a valid index name; else ConfigurationError."""
    problem = _prefix_problem(prefix)
    if problem:
        raise ConfigurationError(f"INDEX_PREFIX={prefix!r} {problem}: {PREFIX_RULE}")
    return prefix


def _prefix_problem(prefix: str) -> str | None:
    if not prefix:
        return "is empty"
    if prefix != prefix.lower():
        return "has upper case letters"
    bad = sorted({c for c in prefix if c in FORBIDDEN_CHARACTERS or not c.isprintable()})
    if bad:
        return f"contains {''.join(bad)!r}"
    if prefix[0] in FORBIDDEN_FIRST:
        return f"starts with {prefix[0]!r}"
    if len(prefix.encode("utf-8")) > MAX_PREFIX_BYTES:
        return f"is {len(prefix.encode('utf-8'))} bytes long"
    return None


def monthly_index_pattern(prefix: str) -> re.Pattern[str]:
    """``prefix-YYYY-MM`` with a real month."""
    return re.compile(re.escape(prefix) + r"-\d{4}-(?:0[1-9]|1[0-2])")


def is_monthly_index(name: object, prefix: str) -> bool:
    """Is ``name`` one of our monthly indexes (``prefix-YYYY-MM``)?"""
    return isinstance(name, str) and monthly_index_pattern(prefix).fullmatch(name) is not None


def segment(name: str, keep: str = "") -> str:
    """``name`` percent-encoded as one URL path segment (``keep``: characters left as they are)."""
    return quote(name, safe=keep)
