"""Monthly index names, the index body (settings and mapping), race-free creation, and the
declaration of the fields a chunk brings (``fields``)."""
from __future__ import annotations

import logging
from typing import Any, Mapping

from cloudtrail_es.documents import ecs
from cloudtrail_es.documents import transform
from cloudtrail_es.write.cluster import Cluster, request_retrying
from cloudtrail_es.write.engine import Engine
from cloudtrail_es.write.fields import Fields, KnownFields
from cloudtrail_es.core.errors import ClusterError
from cloudtrail_es.core.names import segment
from cloudtrail_es.core.retry import Backoff

log = logging.getLogger(__name__)

TOTAL_FIELDS_LIMIT = 8192
#: Lucene refuses terms over 32,766 bytes; a character is at most 4 UTF-8 bytes.
KEYWORD_IGNORE_ABOVE = 8191

# Storage choices, field by field. Each one is kept for a search users run or dropped for
# a cost nobody searches for; ``benchmarks/storage.py`` measures the whole (bytes per million
# events against the seed project's dynamic mapping) and tests/integration/test_searches.py
# proves every search below on the real cluster.
#
# * ``index.codec: best_compression`` (DEFLATE instead of LZ4 for stored fields): _source
#   is the largest part of the index and CloudTrail JSON is very repetitive; it costs a
#   little CPU when a hit's _source is read, nothing for filters and aggregations.
# * keyword fields index ``docs`` only (no frequencies, no positions, no norms): an exact
#   filter or a terms aggregation never scores by term frequency or field length.
# * doc values (column storage for aggregations and sorting) are kept on the top-level
#   keywords users chart in Dashboards (eventName, eventSource, awsRegion, errorCode,
#   sourceIPAddress, userAgent, userIdentity.arn / userName / type / accountId, the session
#   issuer, ...) and on eventTime (date histograms, sort); they are dropped where an
#   aggregation answers nothing: identifiers unique to a call or a session (eventID, whose
#   doc values were the largest such cost: page through everything with scroll or point in
#   time sorted by _doc, not by eventID), and every flattened leaf (thousands of
#   sparse fields). Those stay exact-searchable; ``exists`` still works (through
#   ``_field_names``) and the values stay in _source for Discover.
# * requestID is searched exactly but never aggregated (no doc values), as eventID: a Sigma
#   rule may name it. Indexes made before this kept it in _source only (reindex to search it).
# * ``requestParameters_raw`` and ``responseElements_raw`` are full-text with positions, so
#   match and phrase queries work (a quoted value in Dashboards becomes a phrase query, which
#   fails on a field without positions); norms are off (the length of the JSON text says
#   nothing about relevance). The other ``<name>_raw`` texts (resources, additionalEventData,
#   serviceEventDetails, extra userIdentity attributes, ...) are kept in _source only: their
#   values are searched exactly through ``<name>_flattened``.
#   errorMessage and a degraded event's event_raw use the same text mapping.
# * ``_source`` is kept whole (no excludes): Discover, reindex and update need it, and
#   excluding the ``_flattened`` copies made the stored fields 28% larger, not smaller
#   (the unfiltered source is kept as ``_recovery_source`` until merges past the
#   operation-history retention drop it).

#: Exact filters and aggregations.
KEYWORD = {"type": "keyword", "ignore_above": KEYWORD_IGNORE_ABOVE, "index_options": "docs"}
#: Exact filters only: no doc values (no aggregation, no sort).
KEYWORD_FILTER_ONLY = {**KEYWORD, "doc_values": False}
#: Kept in _source, neither searchable nor aggregatable.
SOURCE_ONLY = {"type": "keyword", "index": False, "doc_values": False}
#: Free text with positions (match and phrase queries), without norms.
TEXT = {"type": "text", "norms": False}
#: Kept in _source only (JSON text whose values are searched through ``_flattened``).
TEXT_SOURCE_ONLY = {"type": "text", "index": False}

#: Top-level fields searched but never aggregated: identifiers unique to a call.
FILTER_ONLY_FIELDS = ("eventID", "sharedEventID", "requestID")
#: Top-level fields kept in _source only.
SOURCE_ONLY_FIELDS: tuple[str, ...] = ()
#: Paths under the structured objects searched but never aggregated: values unique to a
#: session or repeating another field (userIdentity.arn names the same principal).
FILTER_ONLY_PATHS = frozenset({
    "userIdentity.principalId",
    "userIdentity.credentialId",
    "userIdentity.sessionContext.attributes.creationDate",
    "userIdentity.sessionContext.sessionIssuer.principalId",
    "addendum.originalRequestID",
    "addendum.originalEventID",
})
#: The ``<name>_raw`` texts searched as free text (the rest are kept in _source only).
FREE_TEXT_RAW = ("requestParameters", "responseElements")
#: Insights statistics are numbers (charted, compared with ranges); a malformed one is
#: kept in _source, never rejected.
NUMERIC_PATHS = {
    "insightDetails.insightContext.statistics.baseline.average": {
        "type": "double", "ignore_malformed": True},
    "insightDetails.insightContext.statistics.insight.average": {
        "type": "double", "ignore_malformed": True},
    "insightDetails.insightContext.statistics.insightDuration": {
        "type": "long", "ignore_malformed": True},
    "insightDetails.insightContext.statistics.baselineDuration": {
        "type": "long", "ignore_malformed": True},
}
#: Sigma's whole-section ``|contains`` (``requestParameters|contains: '0.0.0.0/0'``) must match
#: the JSON text exactly as a substring, which analysed text cannot: those sections' raw text
#: is also indexed whole as a keyword (``<name>_raw.keyword``; terms only, no doc values; a
#: text over ``KEYWORD_IGNORE_ABOVE`` characters is not in it). See ``sigma.py``.
#: The other sections' raw text is not free text (kept in _source) but has the same exact copy.
#: ``errorMessage`` (free text) has one too: a Sigma value is matched whole, not by words.
RAW_EXACT_SECTIONS = FREE_TEXT_RAW + (
    "additionalEventData", "resources", "serviceEventDetails", "edgeDeviceDetails")
RAW_EXACT_SUBFIELD = "keyword"
TEXT_WITH_EXACT = {**TEXT, "fields": {RAW_EXACT_SUBFIELD: KEYWORD_FILTER_ONLY}}
SOURCE_ONLY_WITH_EXACT = {**TEXT_SOURCE_ONLY, "fields": {RAW_EXACT_SUBFIELD: KEYWORD_FILTER_ONLY}}
#: Text fields and the exact (keyword) copy of each, for searches that match a whole value.
EXACT_SUBFIELDS = {name: f"{name}.{RAW_EXACT_SUBFIELD}" for name in (
    *transform.TEXT_FIELDS, *(section + transform.RAW_SUFFIX for section in RAW_EXACT_SECTIONS))}


def _object(schema: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for name, child in schema.items():
        path = prefix + name
        if child is not None:
            properties[name] = _object(child, path + ".")
        else:
            properties[name] = NUMERIC_PATHS.get(path) or (
                KEYWORD_FILTER_ONLY if path in FILTER_ONLY_PATHS else KEYWORD)
    return {"properties": properties}


def _top_level_keyword(name: str) -> dict[str, Any]:
    if name in SOURCE_ONLY_FIELDS:
        return SOURCE_ONLY
    return KEYWORD_FILTER_ONLY if name in FILTER_ONLY_FIELDS else KEYWORD


def mapping() -> dict[str, Any]:
    """The mapping that fits every document ``transform.document_for`` makes."""
    properties: dict[str, Any] = {
        name: _top_level_keyword(name) for name in transform.KEYWORD_FIELDS}
    properties.update({name: TEXT_WITH_EXACT for name in transform.TEXT_FIELDS})
    # A degraded event's only searchable copy of everything but its core fields.
    properties[transform.EVENT_RAW] = TEXT
    properties[transform.DEGRADED_REASON] = KEYWORD
    properties[transform.DATE_FIELD] = {
        "type": "date",
        "format": "strict_date_optional_time||epoch_millis",
        "ignore_malformed": True,
    }
    properties.update(
        {name: _object(schema, name + ".")
         for name, schema in transform.STRUCTURED_FIELDS.items()}
    )
    properties.update({name + transform.RAW_SUFFIX: TEXT_WITH_EXACT for name in FREE_TEXT_RAW})
    properties.update(added_properties())
    return {
        "date_detection": False,
        "numeric_detection": False,
        "dynamic_templates": [
            {"flattened_leaves": {
                "path_match": f"*{transform.FLATTENED_SUFFIX}.*",
                "mapping": KEYWORD_FILTER_ONLY,
            }},
            {"raw_json": {
                "match": f"*{transform.RAW_SUFFIX}",
                "match_mapping_type": "string",
                "mapping": TEXT_SOURCE_ONLY,
            }},
            {"other_strings": {"match_mapping_type": "string", "mapping": KEYWORD}},
        ],
        "properties": properties,
    }


def added_properties() -> dict[str, Any]:
    """What an index created by an earlier version lacks: added to it when first touched.

    Only new fields (a mapping update may add fields and sub-fields, never change one): the
    ECS aliases and typed fields, the Insights object, and the exact copies of ``errorMessage``
    and of the raw sections (which fill for documents written from then on).
    """
    properties = ecs.mapping_properties(KEYWORD)
    # When the document was written (the write path stamps it; the detector windows on it).
    properties.setdefault("event", {"properties": {}})["properties"]["ingested"] = {"type": "date"}
    return {**properties,
            "insightDetails": _object(dict(transform.STRUCTURED_FIELDS["insightDetails"]),
                                      "insightDetails."),
            **{name: TEXT_WITH_EXACT for name in transform.TEXT_FIELDS},
            **{section + transform.RAW_SUFFIX: SOURCE_ONLY_WITH_EXACT
               for section in RAW_EXACT_SECTIONS if section not in FREE_TEXT_RAW}}


def _leaves(properties: Mapping[str, Any], prefix: str = "") -> dict[str, Mapping[str, Any]]:
    found: dict[str, Mapping[str, Any]] = {}
    for name, field in properties.items():
        if "properties" in field:
            found.update(_leaves(field["properties"], f"{prefix}{name}."))
        else:
            found[prefix + name] = field
    return found


def conflicts(added: Mapping[str, Any], existing: Mapping[str, Any]) -> set[str]:
    """The leaf paths of ``added`` an index whose ``existing`` properties these are cannot take:
    a leaf of another type (an alias where a field is wanted), or a leaf where an object is."""
    found = set()
    for path, field in _leaves(added).items():
        level: Mapping[str, Any] | None = existing
        *parents, leaf = path.split(".")
        for parent in parents:
            node = level.get(parent) if level is not None else None
            if node is None:
                level = None
                break
            if "properties" not in node and node.get("type", "object") not in ("object", "nested"):
                found.add(path)
                break
            level = node.get("properties", {})
        else:
            node = level.get(leaf) if level is not None else None
            if node is not None and (node.get("type", "object") != field.get("type", "object")
                                     or node.get("path") != field.get("path")):
                found.add(path)
    return found


def without(properties: Mapping[str, Any], paths: set[str], prefix: str = "") -> dict[str, Any]:
    """``properties`` less the leaves at ``paths`` (and the objects left empty)."""
    kept: dict[str, Any] = {}
    for name, field in properties.items():
        path = prefix + name
        if "properties" in field:
            inner = without(field["properties"], paths, path + ".")
            if inner:
                kept[name] = {**field, "properties": inner}
        elif path not in paths:
            kept[name] = field
    return kept


def dynamic_properties(fields: Fields) -> dict[str, Any]:
    """The mapping the dynamic templates of ``mapping()`` give these fields (every value of
    ours is a string): a flattened leaf ``KEYWORD_FILTER_ONLY``, a ``*_raw`` text
    ``TEXT_SOURCE_ONLY``, any other string ``KEYWORD``; a dynamic object only its properties."""
    properties: dict[str, Any] = {}
    for name, leaves in fields.items():
        if leaves is not None:
            properties[name] = {"properties": dict.fromkeys(leaves, KEYWORD_FILTER_ONLY)}
        elif name.endswith(transform.RAW_SUFFIX):
            properties[name] = TEXT_SOURCE_ONLY
        else:
            properties[name] = KEYWORD
    return properties


def mapped_fields(properties: Mapping[str, Any]) -> Fields:
    """The top-level names of a mapping's properties, with the leaf keys of its flattened objects."""
    return {name: set(child.get("properties", {})) if name.endswith(transform.FLATTENED_SUFFIX)
            and isinstance(child, dict) and "type" not in child else None
            for name, child in properties.items()}


def index_body(shards: int, replicas: int) -> dict[str, Any]:
    return {
        "settings": {
            "index": {
                "number_of_shards": shards,
                "number_of_replicas": replicas,
                "codec": "best_compression",
                "mapping": {"total_fields": {"limit": TOTAL_FIELDS_LIMIT}},
            }
        },
        "mappings": mapping(),
    }


class IndexCreator:
    """Creates each monthly index once per process, before anything is written to it, and
    declares the fields each chunk brings that its index lacks (``fields``).

    Creation is race-free: every writer asks for the index with our settings and
    mapping before writing, the cluster creates it exactly once, and the losers
    of the race get ``resource_already_exists_exception``, which means the index
    is there with the same body. Nothing writes to an index it has not ensured.
    Declarations are too: a field declared twice with the same mapping (two workers, two
    Lambda executions, or a document that mapped it first) is the same field.
    """

    def __init__(self, cluster: Cluster, shards: int = 1, replicas: int = 1,
                 backoff: Backoff | None = None, engine: Engine | None = None) -> None:
        self._cluster = cluster
        self._base = index_body(shards, replicas)
        self._engine = engine
        doc_type = engine.doc_type if engine else None
        self._mapping_suffix = f"/_mapping/{doc_type}" if doc_type else "/_mapping"
        self._backoff = backoff or Backoff()
        self._known: set[str] = set()
        #: Indexes whose mapping refused a declaration for the total-fields limit: their new
        #: fields are left to the engine, document by document, which counts each one refused.
        self._full: set[str] = set()
        self.fields = KnownFields(self._base["mappings"]["properties"])
        #: Mapping updates sent (creation bodies with fields not counted).
        self.updates = 0
        self._withheld: dict[str, frozenset[str]] = {}

    def withheld(self, index: str) -> frozenset[str]:
        """The ECS fields ``index`` cannot take (it holds them otherwise): left out of its documents."""
        return self._withheld.get(index, frozenset())

    def ensure(self, index: str, deadline: float, fields: Fields | None = None) -> None:
        """The index exists; when this process creates it, with ``fields`` in its body."""
        if index in self._known:
            return
        fields = self.fields.missing(index, fields) if fields else {}
        body = self._base
        if fields:
            mappings = self._base["mappings"]
            body = {**body, "mappings": {**mappings, "properties": {
                **mappings["properties"], **dynamic_properties(fields)}}}
        response = self._create(index, body, deadline)
        if fields and response.status_code == 400 and not _already_exists(response):
            # Too many fields for the limit (or one the engine refuses): created without them,
            # they are left to the engine as if never declared.
            self._refused(index, response)
            fields = {}
            response = self._create(index, self._base, deadline)
        if response.status_code == 200:
            log.info("created index", extra={"index": index})
            self.fields.add(index, fields)
        elif _already_exists(response):
            self._add_fields(index, fields, deadline)
        else:
            raise ClusterError(f"cannot create index {index}", response)
        self._known.add(index)

    def _add_fields(self, index: str, fields: Fields, deadline: float) -> None:
        """Give an existing index the fields this version adds (a no-op when it has them), and
        the new fields of the chunk about to be written to it, in one update.

        An index that holds some of this version's names otherwise (``user.name`` as an alias,
        made by an earlier version; a top-level scalar ``user`` written before the ECS fields)
        gets the others; its documents go without those (``withheld``) until it is reindexed.
        """
        added = added_properties()
        response = self._put_mapping(index, {**added, **dynamic_properties(fields)}, deadline)
        if response.status_code == 200:
            self.fields.add(index, fields)
            return
        if fields:  # the chunk's fields may be what it refused
            self.declare(index, fields, deadline)
            response = self._put_mapping(index, added, deadline)
            if response.status_code == 200:
                return
        existing = self._properties(index, deadline)
        clashing = conflicts(added, existing) if existing is not None else set()
        self._withheld[index] = frozenset(path for path in clashing if path in ecs.FIELDS) if (
            existing is not None) else frozenset(ecs.FIELDS)
        second = self._put_mapping(index, without(added, clashing), deadline) if clashing else None
        if second is not None and second.status_code == 200 and clashing <= ecs.FORMER_ALIASES:
            log.warning("index made by an earlier version: new documents go without these ECS "
                        "fields until it is reindexed (docs/indexing.md)",
                        extra={"index": index, "fields": sorted(clashing)})
            return
        # An index whose mapping holds one of these names otherwise (an event with a top-level
        # scalar "event", "user"... loaded by an earlier version): its events still load.
        log.error("cannot add the ECS and Insights fields to an existing index",
                  extra={"index": index, "status": response.status_code,
                         "error": response.text[:1000], "fields": sorted(clashing),
                         "withheld": sorted(self._withheld[index])})

    def prepare(self, index: str, fields: Fields | None, deadline: float) -> None:
        """``index`` ready for a chunk bringing ``fields``: created with them, or given them."""
        if index not in self._known:
            self.ensure(index, deadline, fields)
        elif fields:
            self.declare(index, fields, deadline)

    def declare(self, index: str, fields: Fields, deadline: float) -> None:
        """Map the ``fields`` a chunk brings to ``index`` that it lacks, in one update."""
        if index in self._full:
            return
        fields = self.fields.missing(index, fields)
        if not fields:
            return
        response = self._put_mapping(index, dynamic_properties(fields), deadline)
        if response.status_code != 200 and not _field_limit(response):
            # A name mapped otherwise already (by an earlier version): learn the index's
            # mapping, and declare what it still lacks.
            self._learn(index, deadline)
            fields = self.fields.missing(index, fields)
            if not fields:
                return
            response = self._put_mapping(index, dynamic_properties(fields), deadline)
        if response.status_code == 200:
            self.fields.add(index, fields)
        else:
            self._refused(index, response)

    def _create(self, index: str, body: dict[str, Any], deadline: float) -> Any:
        body = self._engine.index_body(body) if self._engine else body
        return request_retrying(self._cluster, self._backoff, deadline, "PUT", f"/{segment(index)}",
                                body)

    def _put_mapping(self, index: str, properties: dict[str, Any], deadline: float) -> Any:
        self.updates += 1
        return request_retrying(self._cluster, self._backoff, deadline, "PUT",
                                f"/{segment(index)}{self._mapping_suffix}",
                                {"properties": properties})

    def _properties(self, index: str, deadline: float) -> dict[str, Any] | None:
        """The index's mapped properties (typed or not), or None when they cannot be read."""
        response = request_retrying(self._cluster, self._backoff, deadline, "GET",
                                    f"/{segment(index)}/_mapping")
        try:
            mappings = next(iter(response.json().values()))["mappings"]
            if "properties" not in mappings and len(mappings) == 1:  # typed (Elasticsearch 6)
                mappings = next(iter(mappings.values()))
            return dict(mappings.get("properties", {}))
        except (ValueError, KeyError, TypeError, AttributeError, StopIteration):
            return None

    def _learn(self, index: str, deadline: float) -> None:
        response = request_retrying(self._cluster, self._backoff, deadline, "GET",
                                    f"/{segment(index)}{self._mapping_suffix}")
        if response.status_code != 200:
            return
        try:
            for answer in response.json().values():
                mappings = answer.get("mappings", {})
                mappings = mappings.get(self._engine.doc_type, mappings) if (
                    self._engine and self._engine.doc_type) else mappings
                self.fields.add(index, mapped_fields(mappings.get("properties", {})))
        except (ValueError, AttributeError, TypeError):
            return

    def _refused(self, index: str, response: Any) -> None:
        """A declaration refused: its fields are left to the engine (each document bringing one
        is mapped, or refused and degraded and counted, as without declarations)."""
        if _field_limit(response):
            self._full.add(index)
        log.info("fields left to dynamic mapping", extra={
            "index": index, "status": response.status_code, "error": response.text[:500]})


def _field_limit(response: Any) -> bool:
    return response.status_code == 400 and "Limit of total fields" in response.text


def _already_exists(response: Any) -> bool:
    if response.status_code != 400:
        return False
    try:
        error_type = response.json()["error"]["type"]
    except (ValueError, KeyError, TypeError):
        return False
    return error_type in ("resource_already_exists_exception", "index_already_exists_exception")
