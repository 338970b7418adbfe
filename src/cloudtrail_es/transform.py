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
from typing import Any, Iterator, Mapping

from .ecs import ROOTS as ECS_ROOTS, ecs_fields

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


def json_text(value: Any) -> str:
    """Compact JSON text of any value, keeping non-ASCII characters as they are."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


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


def top_level_name(key: str) -> str:
    """A top-level field name: also keeps clear of metadata fields (``_id``...) and ECS roots."""
    name = field_name(key)
    if name.startswith("_") or name in ECS_ROOTS:
        return f"%{ord(name[0]):02X}{name[1:]}"
    return name


def _leaves(value: Any, key: str) -> Iterator[tuple[str, Any]]:
    kind = type(value)
    if kind is dict:
        for child_key, child in value.items():
            if type(child) is str:
                yield child_key, child
            elif child is not None:
                yield from _leaves(child, child_key)
    elif kind is list:
        for child in value:
            yield from _leaves(child, key)
    elif value is not None:
        yield key, value


def flatten_leaves(value: Any, root_key: str = "") -> dict[str, list[str]]:
    """Map each leaf key, at any depth, to its distinct values in first-seen order.

    Array elements count as values of the key that holds the array; ``null``
    carries nothing to search for and is left out. At most
    ``MAX_FLATTENED_KEYS`` keys are kept (the first seen).
    """
    flattened: dict[str, dict[str, None]] = {}
    for key, leaf in _leaves(value, root_key):
        name = field_name(key)
        if name in flattened:
            flattened[name][scalar_text(leaf)] = None
        elif len(flattened) < MAX_FLATTENED_KEYS:
            flattened[name] = {scalar_text(leaf): None}
    return {key: list(values) for key, values in flattened.items()}


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
    """Split ``value`` into the part that fits ``schema`` and what is left over."""
    kept: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, child in value.items():
        if child is None:
            continue
        child_schema = schema.get(key, _MISSING)
        if child_schema is _MISSING:
            extra[key] = child
        elif child_schema is None:
            kept[key] = child if type(child) is str else _keyword_value(child)
        elif isinstance(child, dict):
            child_kept, child_extra = _structured(child, child_schema)
            if child_kept:
                kept[key] = child_kept
            if child_extra:
                extra[key] = child_extra
        else:
            extra[key] = child
    return kept, extra


def _add_flattened(document: dict, name: str, value: Any) -> None:
    flattened = flatten_leaves(value, name)
    if flattened:
        document[name + FLATTENED_SUFFIX] = flattened
    document[name + RAW_SUFFIX] = json_text(value)


def document_id(event: Mapping[str, Any]) -> str:
    """The ``eventID``; an event without one gets a digest of its content."""
    event_id = event.get("eventID")
    if isinstance(event_id, str) and event_id:
        return event_id
    digest = hashlib.sha256(json_text(event).encode("utf-8")).hexdigest()
    return f"sha256-{digest}"


def document_for(event: Mapping[str, Any]) -> dict[str, Any]:
    """The document indexed for one CloudTrail event."""
    document: dict[str, Any] = {}
    for key, value in event.items():
        if value is None:
            continue
        if key in _SCALAR_FIELDS:
            document[key] = value if type(value) is str else (
                json_text(value) if key == DATE_FIELD else _keyword_value(value))
        elif key in STRUCTURED_FIELDS:
            kept, extra = (
                _structured(value, STRUCTURED_FIELDS[key])
                if isinstance(value, dict) else ({}, value)
            )
            if kept:
                document[key] = kept
            if extra:
                _add_flattened(document, key, value)
        elif isinstance(value, (dict, list)):
            _add_flattened(document, top_level_name(key), value)
        else:
            document[top_level_name(key)] = scalar_text(value)
    document.update(ecs_fields(event))
    return document


#: Kept, as exact values, in the degraded form of an event the cluster rejected.
CORE_FIELDS = (
    "eventVersion", "eventTime", "eventSource", "eventName", "awsRegion", "sourceIPAddress",
    "userAgent", "errorCode", "requestID", "eventID", "eventType", "recipientAccountId",
    "readOnly", "managementEvent", "eventCategory",
)
EVENT_RAW = "event" + RAW_SUFFIX
DEGRADED_REASON = "degraded_reason"


def degraded_document_for(event: Mapping[str, Any], reason: str) -> dict[str, Any]:
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
    document.update(ecs_fields(event))
    return document
