"""Field-limit pressure: events degraded because their index hit ``index.mapping.total_fields.limit``.

Every new leaf key (``requestParameters_flattened.<key>``, ...) adds a field to the month's
mapping; once the index reaches its limit, every event bringing a key not yet mapped is
rejected and indexed in its degraded form for the rest of the month. Such events are
counted apart (``degraded_field_limit``) and each index is warned about once per process,
with what to do.
"""
from __future__ import annotations

import logging
import re
import threading
from typing import Any

from cloudtrail_es.write.indexes import TOTAL_FIELDS_LIMIT
from cloudtrail_es.core.names import segment
from cloudtrail_es.documents.transform import MAX_FLATTENED_KEYS

log = logging.getLogger(__name__)

#: OpenSearch and Elasticsearch: "Limit of total fields [N] has been exceeded[ while adding ...]".
_FIELD_LIMIT = re.compile(r"Limit of total fields \[(\d+)\]")

_lock = threading.Lock()
_warned: set[str] = set()


def limit_in(error: Any) -> int | None:
    """The limit named by a bulk item's error when it is the total-fields one, else None."""
    if not isinstance(error, dict) or error.get("type") != "illegal_argument_exception":
        return None
    match = _FIELD_LIMIT.search(str(error.get("reason", "")))
    return int(match[1]) if match else None


def is_field_limit(error: Any) -> bool:
    return limit_in(error) is not None


def advice(index: str, limit: int | None) -> str:
    return (f"index {index} has reached its total-fields limit ({limit}): every event with a leaf "
            "key not yet mapped is indexed in its degraded form (core fields and event_raw) until "
            f"the month ends. Raise the limit: PUT /{segment(index)}/_settings "
            '{"index.mapping.total_fields.limit": N} (new monthly indexes get '
            f"{TOTAL_FIELDS_LIMIT}), then reload the files (writes are idempotent) to index those events "
            "in full; meanwhile they are found by id, name, user and time. "
            f"The transform keeps at most {MAX_FLATTENED_KEYS} leaf keys per flattened object.")


def warn_once(index: str, error: Any) -> bool:
    """Log the advice the first time ``index`` is seen at its limit in this process."""
    with _lock:
        if index in _warned:
            return False
        _warned.add(index)
    log.warning("field limit reached", extra={
        "index": index, "limit": limit_in(error), "advice": advice(index, limit_in(error))})
    return True
