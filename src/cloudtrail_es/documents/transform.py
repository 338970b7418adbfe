"""Turn one CloudTrail event into the document we index: pure functions, no I/O.

The shape of the document is fixed by this module so that no event can be
rejected by the index mapping (see ``indexes.py``) because of its own shape:

* CloudTrail's documented top-level scalar fields are kept under their own
  names, every value as a string (JSON spelling: ``true``, ``42``); an object
  where a scalar belongs is kept as its JSON text.
* ``eventTime`` stays as it is and is mapped as a date (malformed values are
  kept in ``_source`` but not indexed, never rejected).
* ``userIdentity``, ``tlsDetails``, ``addendum`` and ``insightDetails`` keep their documented
  sub-fields as nested objects of strings. Whatever else they carry (for
  example web-identity attributes whose keys contain dots) is flattened as below.
* Every other object or array - ``requestParameters``, ``responseElements``,
  ``resources``, ``additionalEventData``, ``serviceEventDetails`` and anything
  CloudTrail adds later - becomes ``<name>_flattened`` (leaf key -> distinct
  string values in first-seen order) plus ``<name>_raw`` (its JSON text).
"""
from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Iterator, Mapping

from cloudtrail_es.core import deepjson
from cloudtrail_es.core.deepjson import scalar_text

try:  # writes the raw JSON of objects without floats ~6x faster, the same text
    from orjson import dumps as _orjson_dumps
except ImportError:  # pragma: no cover - the standard library alone gives the same text
    _orjson_dumps = None  # type: ignore[assignment]
from cloudtrail_es.documents.ecs import ROOTS as ECS_ROOTS, Caller, add_ecs_fields, caller_of

FLATTENED_SUFFIX = "_flattened"
#: Distinct leaf keys kept per flattened object. An event with more (none seen
#: in real CloudTrail, whose largest has a few hundred) keeps the rest in
#: ``<name>_raw`` only, so it cannot push the index over its field limit.
MAX_FLATTENED_KEYS = 1000
RAW_SUFFIX = "_raw"

#: Top-level scalar fields from CloudTrail's record contents reference.
#: ``errorMessage`` is free text; the rest are exact values.
KEYWORD_FIELDS = (
    "eventVersion", "eventSource", "eventName", "awsRegion", "sourceIPAddress",
    "userAgent", "errorCode", "requestID", "eventID", "eventType", "apiVersion",
    "managementEvent", "readOnly", "recipientAccountId", "sharedEventID",
    "vpcEndpointId", "vpcEndpointAccountId", "eventCategory",
    "sessionCredentialFromConsole",
)
TEXT_FIELDS = ("errorMessage",)
DATE_FIELD = "eventTime"
_SCALAR_FIELDS = frozenset(KEYWORD_FIELDS + TEXT_FIELDS + (DATE_FIELD,))

#: Documented sub-fields of the structured top-level objects (leaf -> None).
STRUCTURED_FIELDS: Mapping[str, Mapping[str, Any]] = {
    "userIdentity": {
        "type": None, "principalId": None, "arn": None, "accountId": None,
        "accessKeyId": None, "userName": None, "invokedBy": None,
        "identityProvider": None, "credentialId": None,
        "sessionContext": {
            "sourceIdentity": None, "ec2RoleDelivery": None, "assumedRoot": None,
            "attributes": {"creationDate": None, "mfaAuthenticated": None},
            "sessionIssuer": {
                "type": None, "principalId": None, "arn": None,
                "accountId": None, "userName": None,
            },
            "webIdFederationData": {"federatedProvider": None},
        },
        "onBehalfOf": {"userId": None, "identityStoreArn": None},
        "inScopeOf": {
            "sourceArn": None, "sourceAccount": None, "issuerType": None,
            "credentialsIssuedTo": None,
        },
    },
    "tlsDetails": {"tlsVersion": None, "cipherSuite": None, "clientProvidedHostHeader": None},
    "addendum": {
        "reason": None, "updatedFields": None, "originalRequestID": None,
        "originalEventID": None,
    },
    # Insights events; ``attributions`` (a list) is searched through ``insightDetails_flattened``.
    "insightDetails": {
        "state": None, "eventSource": None, "eventName": None, "insightType": None,
        "errorCode": None,
        "insightContext": {"statistics": {
            "baseline": {"average": None}, "insight": {"average": None},
            "insightDuration": None, "baselineDuration": None,
        }},
    },
}


def json_text(value: Any) -> str:
    """Compact JSON text of any value at any depth, keeping non-ASCII characters as they are."""
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except RecursionError:
        return deepjson.dumps(value)


def _raw_text(value: Any, without_floats: bool) -> str:
    """``json_text(value)``, by orjson when it spells the value the same way.

    orjson writes strings, integers, booleans and null exactly as ``json_text`` does, but
    floats its own way (``1e-05`` as ``0.00001``); it refuses integers beyond 64 bits, lone
    surrogates and nesting past 254 levels, which the standard library then writes.
    """
    if without_floats and _orjson_dumps is not None:
        try:
            return _orjson_dumps(value).decode("utf-8")
        except TypeError:
            pass
    return json_text(value)


def field_name(key: str) -> str:
    """A key made safe as a field name, one-to-one.

    ``%`` and ``.`` are percent-escaped (a dot would be expanded into an object
    path by the engine); an empty or blank name, which the engine refuses, is
    spelled entirely in escapes (the empty name becomes ``%``).
    """
    if not key:
        return "%"
    if not key.strip():
        return "".join(f"%{ord(ch):02X}" for ch in key)
    return key.replace("%", "%25").replace(".", "%2E")


#: ``field_name`` of the keys seen so far: CloudTrail repeats a few thousand keys endlessly.
_FIELD_NAMES: dict[str, str] = {}
_FIELD_NAMES_KEPT = 20_000


def _cached_field_name(key: str) -> str:
    name = field_name(key)
    if len(_FIELD_NAMES) < _FIELD_NAMES_KEPT:
        _FIELD_NAMES[key] = name
    return name


def top_level_name(key: str) -> str:
    """A top-level field name: also keeps clear of metadata fields (``_id``...) and ECS roots."""
    name = _TOP_LEVEL_NAMES.get(key)
    if name is None:
        name = _cached_field_name(key)
        if name.startswith("_") or name in ECS_ROOTS:
            name = f"%{ord(name[0]):02X}{name[1:]}"
        if len(_TOP_LEVEL_NAMES) < _FIELD_NAMES_KEPT:
            _TOP_LEVEL_NAMES[key] = name
    return name


_TOP_LEVEL_NAMES: dict[str, str] = {}


#: Past this many values, a leaf's distinct values are also tracked in a set.
_LINEAR_SEARCH_VALUES = 16


def _flatten(value: Any, root_key: str) -> tuple[dict[str, list[str]], bool]:  # noqa: C901 - the hot loop, inlined for speed
    """(leaf name -> its distinct values in first-seen order; whether no float was seen).

    A leaf's key is the key of the object member holding it, or holding the array that
    holds it (at any depth); ``null`` is left out. Iterative: any depth.
    """
    flattened: dict[str, list[str]] = {}
    without_floats = True
    names = _FIELD_NAMES
    kind = type(value)
    if kind is dict:
        items: Iterator[Any] = iter(value.items())
        in_object = True
    elif kind is list:
        items = iter(value)
        in_object = False
    else:
        if value is not None:
            flattened[_cached_field_name(root_key)] = [scalar_text(value)]
        return flattened, type(value) is not float
    holder = root_key
    stack: list[tuple[Iterator[Any], bool, str]] = []
    many: dict[str, set[str]] = {}  # the values of leaves with many, as a set
    while True:
        for item in items:
            if in_object:
                key, child = item
            else:
                key, child = holder, item
            kind = type(child)
            if kind is str:
                text = child
            elif kind is dict:
                stack.append((items, in_object, holder))
                items, in_object = iter(child.items()), True
                break
            elif kind is list:
                stack.append((items, in_object, holder))
                items, in_object, holder = iter(child), False, key
                break
            elif child is None:
                continue
            else:
                if kind is float:
                    without_floats = False
                text = scalar_text(child)
            name = names.get(key) or _cached_field_name(key)
            values = flattened.get(name)
            if values is None:
                if len(flattened) < MAX_FLATTENED_KEYS:
                    flattened[name] = [text]
            elif len(values) < _LINEAR_SEARCH_VALUES:
                if text not in values:
                    values.append(text)
            else:
                seen = many.get(name)
                if seen is None:
                    seen = many[name] = set(values)
                if text not in seen:
                    seen.add(text)
                    values.append(text)
        else:
            if not stack:
                return flattened, without_floats
            items, in_object, holder = stack.pop()


def flatten_leaves(value: Any, root_key: str = "") -> dict[str, list[str]]:
    """Map each leaf key, at any depth, to its distinct values in first-seen order.

    Array elements count as values of the key that holds the array; ``null``
    carries nothing to search for and is left out. At most
    ``MAX_FLATTENED_KEYS`` keys are kept (the first seen).
    """
    return _flatten(value, root_key)[0]


def _keyword_value(value: Any) -> str | list[str]:
    if type(value) is str:
        return value
    if isinstance(value, list) and all(
        not isinstance(item, (dict, list)) for item in value
    ):
        return [scalar_text(item) for item in value if item is not None]
    if isinstance(value, (dict, list)):
        return json_text(value)
    return scalar_text(value)


_MISSING = object()


def _structured(value: Any, schema: Mapping[str, Any]) -> tuple[dict, dict]:
    """Split ``value`` into the part that fits ``schema`` and what is left over.

    Recurses only as deep as ``schema`` (three levels).
    """
    kept: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, child in value.items():
        if child is None:
            continue
        child_schema = schema.get(key, _MISSING)
        if child_schema is None:
            kept[key] = child if type(child) is str else _keyword_value(child)
        elif child_schema is _MISSING:
            extra[key] = child
        elif type(child) is dict:
            if not child:
                continue
            child_kept, child_extra = _structured(child, child_schema)
            if child_kept:
                kept[key] = child_kept
            if child_extra:
                extra[key] = child_extra
        else:
            extra[key] = child
    return kept, extra


def _add_flattened(document: dict, name: str, value: Any) -> None:
    for field, part in _flattened_parts(name, value, None):
        document[field] = part


def _flattened_parts(name: str, value: Any, text: bytes | None) -> tuple[tuple[str, Any], ...]:
    """The ``<name>_flattened`` (when not empty) and ``<name>_raw`` fields of ``value``.

    ``text`` is orjson's spelling of ``value`` when already known.
    """
    flattened, without_floats = _flatten(value, name)
    if without_floats and text is None and _orjson_dumps is not None:
        try:
            text = _orjson_dumps(value)
        except TypeError:
            pass
    raw = text.decode("utf-8") if without_floats and text is not None else json_text(value)
    if flattened:
        return (name + FLATTENED_SUFFIX, flattened), (name + RAW_SUFFIX, raw)
    return ((name + RAW_SUFFIX, raw),)


#: The document fields made from one top-level object, and for ``userIdentity`` its ECS
#: ``Caller``, by (its name, its orjson text): the same ``userIdentity``, ``tlsDetails`` or
#: ``requestParameters`` recurs across the events of an account. Equal texts mean equal
#: values, so equal fields (floats included: orjson spells distinct floats distinctly), except
#: for ``null``, which is also orjson's spelling of NaN and the infinities: texts holding it are
#: left out. Small objects only; emptied when full. The fields' values are shared between documents,
#: which nothing changes once built.
_Parts = tuple[tuple[str, Any], ...]
_PARTS: dict[tuple[str, bytes], tuple[_Parts, Caller | None]] = {}
_PARTS_KEPT = 4096
_PARTS_TEXT_BYTES = 2048
_IDENTITY = "userIdentity"


def _parts(key: str, value: Any) -> tuple[_Parts, Caller | None]:
    """The fields of the document made from the top-level member ``key``: ``value``, and the
    ``Caller`` of a ``userIdentity`` object."""
    text = None
    if _orjson_dumps is not None:
        try:
            text = _orjson_dumps(value)
        except TypeError:  # integers beyond 64 bits, lone surrogates, nesting past 254
            pass
        else:
            known = _PARTS.get((key, text))
            if known is not None:
                return known
    made = _made_parts(key, value, text)
    # orjson spells NaN and the infinities null: a text holding null is never kept, so that
    # {"x": NaN} and {"x": null} cannot give each other their fields (and, as only texts
    # without null are kept, a text with null finds nothing: checked on a miss only).
    if text is not None and len(text) <= _PARTS_TEXT_BYTES and b"null" not in text:
        if len(_PARTS) >= _PARTS_KEPT:
            _PARTS.clear()
        _PARTS[(key, text)] = made
    return made


def _made_parts(key: str, value: Any, text: bytes | None) -> tuple[_Parts, Caller | None]:
    """``_parts`` made anew (``text``: orjson's spelling of ``value``, when it has one)."""
    schema = STRUCTURED_FIELDS.get(key)
    if schema is None:
        return _flattened_parts(top_level_name(key), value, text), None
    if type(value) is not dict:
        return (_flattened_parts(key, value, text) if value else ()), None
    kept, extra = _structured(value, schema)
    parts: _Parts = ((key, kept),) if kept else ()
    if extra:
        parts += _flattened_parts(key, value, text)
    return parts, caller_of(value) if key == _IDENTITY and value else None


#: The longest ``_id`` the engines accept, in UTF-8 bytes.
MAX_ID_BYTES = 512
DIGEST_PREFIX = "sha256-"


def document_id(event: Mapping[str, Any]) -> str:
    """The ``eventID`` when the cluster accepts it as ``_id``; otherwise a digest, the same every time.

    An ``eventID`` longer than ``MAX_ID_BYTES`` in UTF-8, or not encodable (a lone
    surrogate), becomes ``sha256-`` + the digest of its own text; an event without a
    usable one (missing, empty, not a string) gets the digest of its whole content. The
    document keeps the original ``eventID`` either way.
    """
    event_id = event.get("eventID")
    if type(event_id) is str and event_id:
        if len(event_id) <= MAX_ID_BYTES // 4 and event_id.isascii():
            return event_id
        try:
            if len(event_id.encode("utf-8")) <= MAX_ID_BYTES:
                return event_id
        except UnicodeEncodeError:
            pass
        return _digest(event_id)
    return _digest(json_text(event))


def _digest(text: str) -> str:
    return DIGEST_PREFIX + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


_SCALAR, _DATE, _STRUCTURED = 1, 2, 3
_TOP_LEVEL_KIND = {**{key: _SCALAR for key in _SCALAR_FIELDS}, DATE_FIELD: _DATE,
                   **{key: _STRUCTURED for key in STRUCTURED_FIELDS}}


def document_for(event: Mapping[str, Any], ingested: str | None = None,  # noqa: C901 - on every event, inlined for speed
                 withheld: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The document indexed for one CloudTrail event.

    ``ingested``: its ``event.ingested`` (``ecs.ingested_text``), none when not given;
    ``withheld``: ECS fields left out (those the target index cannot take).
    """
    document: dict[str, Any] = {}
    verbatim = _VERBATIM
    caller = None
    for key, value in event.items():
        kind = type(value)
        if kind is str and key in verbatim:  # most fields of most events
            document[key] = value
        elif kind is bool and key in verbatim:  # readOnly, managementEvent
            document[key] = "true" if value else "false"
        elif (kind is dict or kind is list) and (top := _TOP_LEVEL_KIND.get(key)) is not _SCALAR \
                and top is not _DATE:  # the objects and arrays: their parts, cached
            parts, found = _parts(key, value)
            document.update(parts)
            if found is not None:
                caller = found
        elif value is not None:
            _add_field(document, key, value)
    add_ecs_fields(document, event, ingested, withheld, caller)
    return document


#: Top-level keys whose string value is kept as it is under their own name: the documented
#: scalar fields, ``eventTime``, and the other keys met so far that are safe names already.
_VERBATIM = set(_SCALAR_FIELDS)


def _add_field(document: dict[str, Any], key: str, value: Any) -> None:
    """``document_for`` of one top-level member other than a string kept verbatim, an object
    or an array."""
    kind = _TOP_LEVEL_KIND.get(key)
    if kind is _SCALAR:
        document[key] = _keyword_value(value)
    elif kind is _DATE:
        document[key] = json_text(value)
    elif kind is None and type(value) is str:
        name = top_level_name(key)
        document[name] = value
        if name == key and len(_VERBATIM) < _FIELD_NAMES_KEPT:
            _VERBATIM.add(key)
    elif kind is _STRUCTURED or isinstance(value, (dict, list)):  # a scalar where an object belongs
        document.update(_parts(key, value)[0])
    else:
        document[top_level_name(key)] = scalar_text(value)


#: Kept, as exact values, in the degraded form of an event the cluster rejected.
CORE_FIELDS = (
    "eventVersion", "eventTime", "eventSource", "eventName", "awsRegion", "sourceIPAddress",
    "userAgent", "errorCode", "requestID", "eventID", "eventType", "recipientAccountId",
    "readOnly", "managementEvent", "eventCategory",
)
EVENT_RAW = "event" + RAW_SUFFIX
DEGRADED_REASON = "degraded_reason"
#: Set in a document whose text had to be repaired to be sent (``bulk.dumps``), saying how.
REPAIRED_REASON = "repaired_reason"
SURROGATES_REPLACED = "lone surrogates (not encodable in UTF-8) replaced with U+FFFD"
LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def utf8_json(value: Mapping[str, Any]) -> tuple[bytes, bool]:
    """Compact UTF-8 JSON of a mapping at any depth, and whether it had to be repaired.

    Lone surrogates (not UTF-8) become U+FFFD, and the mapping's text then says so in
    ``REPAIRED_REASON``: what ``bulk.dumps`` sends and what a dead letter keeps.
    """
    text = json_text(value)
    try:
        return text.encode("utf-8"), False
    except UnicodeEncodeError:
        text = json_text({**value, REPAIRED_REASON: SURROGATES_REPLACED})
        return LONE_SURROGATE.sub("\ufffd", text).encode("utf-8"), True


def degraded_document_for(event: Mapping[str, Any], reason: str, ingested: str | None = None,
                          withheld: frozenset[str] = frozenset()) -> dict[str, Any]:
    """A form of the event the cluster accepts whatever broke the full one.

    The event stays findable by id, name, source, region, user and time; all of
    it is kept as JSON text in ``event_raw`` (searchable as free text), and
    ``degraded_reason`` says what the cluster objected to.
    """
    document: dict[str, Any] = {}
    for key in CORE_FIELDS:
        value = event.get(key)
        if value is None:
            continue
        if key == DATE_FIELD:
            document[key] = value if isinstance(value, str) else json_text(value)
        else:
            document[key] = _keyword_value(value)
    identity = event.get("userIdentity")
    if isinstance(identity, dict):
        kept, _ = _structured(identity, STRUCTURED_FIELDS["userIdentity"])
        if kept:
            document["userIdentity"] = kept
    document[EVENT_RAW] = json_text(event)
    document[DEGRADED_REASON] = reason
    add_ecs_fields(document, event, ingested, withheld)
    return document
