"""Monthly index names, the index body (settings and mapping), and race-free creation."""
from __future__ import annotations

import logging
from typing import Any

from . import transform
from .cluster import Cluster, request_retrying
from .engine import Engine
from .errors import ClusterError
from .retry import Backoff

log = logging.getLogger(__name__)

TOTAL_FIELDS_LIMIT = 8192
#: Lucene refuses terms over 32,766 bytes; a character is at most 4 UTF-8 bytes.
KEYWORD_IGNORE_ABOVE = 8191

KEYWORD = {"type": "keyword", "ignore_above": KEYWORD_IGNORE_ABOVE}
TEXT = {"type": "text"}


def _object(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "properties": {
            name: KEYWORD if child is None else _object(child)
            for name, child in schema.items()
        }
    }


def mapping() -> dict[str, Any]:
    """The mapping that fits every document ``transform.document_for`` makes."""
    properties: dict[str, Any] = {name: KEYWORD for name in transform.KEYWORD_FIELDS}
    properties.update({name: TEXT for name in transform.TEXT_FIELDS})
    properties[transform.EVENT_RAW] = TEXT
    properties[transform.DEGRADED_REASON] = KEYWORD
    properties[transform.DATE_FIELD] = {
        "type": "date",
        "format": "strict_date_optional_time||epoch_millis",
        "ignore_malformed": True,
    }
    properties.update(
        {name: _object(schema) for name, schema in transform.STRUCTURED_FIELDS.items()}
    )
    return {
        "date_detection": False,
        "numeric_detection": False,
        "dynamic_templates": [
            {"flattened_leaves": {
                "path_match": f"*{transform.FLATTENED_SUFFIX}.*",
                "mapping": KEYWORD,
            }},
            {"raw_json": {
                "match": f"*{transform.RAW_SUFFIX}",
                "match_mapping_type": "string",
                "mapping": TEXT,
            }},
            {"other_strings": {"match_mapping_type": "string", "mapping": KEYWORD}},
        ],
        "properties": properties,
    }


def index_body(shards: int, replicas: int) -> dict[str, Any]:
    return {
        "settings": {
            "index": {
                "number_of_shards": shards,
                "number_of_replicas": replicas,
                "mapping": {"total_fields": {"limit": TOTAL_FIELDS_LIMIT}},
            }
        },
        "mappings": mapping(),
    }


class IndexCreator:
    """Creates each monthly index once per process, before anything is written to it.

    Creation is race-free: every writer asks for the index with our settings and
    mapping before writing, the cluster creates it exactly once, and the losers
    of the race get ``resource_already_exists_exception``, which means the index
    is there with the same body. Nothing writes to an index it has not ensured.
    """

    def __init__(self, cluster: Cluster, shards: int = 1, replicas: int = 1,
                 backoff: Backoff | None = None, engine: Engine | None = None) -> None:
        self._cluster = cluster
        body = index_body(shards, replicas)
        self._body = engine.index_body(body) if engine else body
        self._backoff = backoff or Backoff()
        self._known: set[str] = set()

    def ensure(self, index: str, deadline: float) -> None:
        if index in self._known:
            return
        response = request_retrying(self._cluster, self._backoff, deadline, "PUT", f"/{index}",
                                    self._body)
        if response.status_code == 200:
            log.info("created index", extra={"index": index})
        elif not _already_exists(response):
            raise ClusterError(f"cannot create index {index}", response)
        self._known.add(index)


def _already_exists(response: Any) -> bool:
    if response.status_code != 400:
        return False
    try:
        error_type = response.json()["error"]["type"]
    except (ValueError, KeyError, TypeError):
        return False
    return error_type in ("resource_already_exists_exception", "index_already_exists_exception")
