"""The transform as it was at commit a7f323c (before the CPU work), kept as the reference the
property tests compare today's faster transform with: same documents, byte for byte, for
every event both can handle. Recursive, so only for events of modest depth. Not used by
the loader. Deliberate changes since are applied here too: the ECS fields (``ecs_fields``)
and top-level names kept clear of the ECS roots, and Insights' ``insightDetails`` among the
structured fields.

Nothing is imported from the code it checks: the field tables and the ECS rules are written
out here, so a change to the loader's tables shows up as a difference, not as a new reference.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Iterator, Mapping

import ipaddress

FLATTENED_SUFFIX = "_flattened"
RAW_SUFFIX = "_raw"
MAX_FLATTENED_KEYS = 1000
DATE_FIELD = "eventTime"
#: CloudTrail's documented top-level scalars: the keyword ones, ``errorMessage`` and the date.
_SCALAR_FIELDS = frozenset({
    "eventVersion", "eventSource", "eventName", "awsRegion", "sourceIPAddress", "userAgent",
    "errorCode", "requestID", "eventID", "eventType", "apiVersion", "managementEvent", "readOnly",
    "recipientAccountId", "sharedEventID", "vpcEndpointId", "vpcEndpointAccountId", "eventCategory",
    "sessionCredentialFromConsole", "errorMessage", DATE_FIELD,
})
_SESSION_ISSUER = {"type": None, "principalId": None, "arn": None, "accountId": None, "userName": None}
#: The documented sub-fields of the structured top-level objects (leaf -> None).
STRUCTURED_FIELDS: dict[str, Any] = {
    "userIdentity": {
        "type": None, "principalId": None, "arn": None, "accountId": None, "accessKeyId": None,
        "userName": None, "invokedBy": None, "identityProvider": None, "credentialId": None,
        "sessionContext": {
            "sourceIdentity": None, "ec2RoleDelivery": None, "assumedRoot": None,
            "attributes": {"creationDate": None, "mfaAuthenticated": None},
            "sessionIssuer": _SESSION_ISSUER,
            "webIdFederationData": {"federatedProvider": None},
        },
        "onBehalfOf": {"userId": None, "identityStoreArn": None},
        "inScopeOf": {"sourceArn": None, "sourceAccount": None, "issuerType": None,
                      "credentialsIssuedTo": None},
    },
    "tlsDetails": {"tlsVersion": None, "cipherSuite": None, "clientProvidedHostHeader": None},
    "addendum": {"reason": None, "updatedFields": None, "originalRequestID": None,
                 "originalEventID": None},
    "insightDetails": {
        "state": None, "eventSource": None, "eventName": None, "insightType": None, "errorCode": None,
        "insightContext": {"statistics": {
            "baseline": {"average": None}, "insight": {"average": None},
            "insightDuration": None, "baselineDuration": None,
        }},
    },
}
#: The top-level names the ECS fields and aliases occupy (the roots of their dotted names);
#: ``group`` and ``related`` came with the detections' ECS fields, whose values this reference
#: leaves to the golden files of ``test_ecs_fields`` (``test_properties`` compares without them).
ECS_ROOTS = frozenset({"@timestamp", "event", "cloud", "source", "user_agent", "error", "user",
                       "group", "related"})


def ecs_fields(event: Mapping[str, Any]) -> dict[str, Any]:
    """``event.outcome`` (none for Insights events) and ``source.ip`` (an address without a zone,
    in its canonical text), written plainly."""
    fields: dict[str, Any] = {}
    if event.get("eventType") != "AwsCloudTrailInsight":
        response, name = event.get("responseElements"), event.get("eventName")
        signed_in_failed = (isinstance(response, dict) and isinstance(name, str)
                            and response.get(name) == "Failure")
        fields["event"] = {"outcome": "failure" if event.get("errorCode") or signed_in_failed
                           else "success"}
    address = event.get("sourceIPAddress")
    if isinstance(address, str):
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            ip = None
        if ip is not None and not getattr(ip, "scope_id", None):
            fields["source"] = {"ip": str(ip)}
    return fields


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
    """A top-level field name: also keeps clear of metadata fields (``_id``...)."""
    name = field_name(key)
    return f"%{ord(name[0]):02X}{name[1:]}" if name.startswith("_") or name in ECS_ROOTS else name


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


