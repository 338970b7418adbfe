"""Elastic Common Schema names over our CloudTrail documents: aliases, and two typed fields.

Every index maps ECS names as field aliases of the CloudTrail fields that hold the same
thing, so tools and searches written for ECS (``event.action: RunInstances``, a range on
``@timestamp``) work unchanged, at no storage cost. Two fields are real, made per event by
``ecs_fields``: ``source.ip`` (type ``ip``, only when ``sourceIPAddress`` is an address, so
CIDR queries work) and ``event.outcome`` (``success`` / ``failure``).

Left out on purpose: ``event.category`` (ECS's values are ``authentication``, ``iam``, ...;
CloudTrail's ``eventCategory`` says ``Management`` / ``Data`` / ``Insight``, another
vocabulary), ``tls.version`` (ECS wants ``1.2``, CloudTrail says ``TLSv1.2``) and
``tls.cipher`` (ECS gives IANA names, CloudTrail OpenSSL ones).
"""
from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Any, Mapping

#: ECS name -> the CloudTrail field it is an alias of.
ALIASES: Mapping[str, str] = {
    "@timestamp": "eventTime",
    "event.action": "eventName",
    "event.provider": "eventSource",
    "event.id": "eventID",
    "cloud.region": "awsRegion",
    "cloud.account.id": "recipientAccountId",
    "source.address": "sourceIPAddress",
    "user_agent.original": "userAgent",
    "error.code": "errorCode",
    "error.message": "errorMessage",
    "user.name": "userIdentity.userName",
    "user.id": "userIdentity.principalId",
}
OUTCOME = "event.outcome"
SOURCE_IP = "source.ip"
#: Top-level names the ECS fields occupy: an event's own top-level key of one of these
#: names is escaped by the transform (``event`` -> ``%65vent``) so it never meets them.
ROOTS = frozenset(name.split(".", 1)[0] for name in (*ALIASES, OUTCOME, SOURCE_IP))

INSIGHT_EVENT_TYPE = "AwsCloudTrailInsight"
#: Longest text of an IP address without a zone (IPv6 with an embedded IPv4 address).
_MAX_IP_TEXT = 45


def ecs_fields(event: Mapping[str, Any]) -> dict[str, Any]:
    """``event.outcome`` and ``source.ip`` of one CloudTrail event, as document objects.

    The outcome is ``failure`` when the call returned an ``errorCode``, or when a sign-in
    event (``ConsoleLogin``, ``CheckMfa``, ``SwitchRole``...) says ``Failure`` in
    ``responseElements.<eventName>`` (those carry no ``errorCode``); ``success`` otherwise.
    An Insights event is not a call and has no outcome.
    """
    fields: dict[str, Any] = {}
    add_ecs_fields(fields, event)
    return fields


def add_ecs_fields(document: dict[str, Any], event: Mapping[str, Any]) -> None:
    """``ecs_fields(event)`` added to ``document`` (runs on every event: kept cheap)."""
    get = event.get
    if get("eventType") != INSIGHT_EVENT_TYPE:
        failed = get("errorCode") or _sign_in_failed(event)
        document["event"] = {"outcome": "failure" if failed else "success"}
    address = get("sourceIPAddress")
    # Cheap checks first: most non-addresses are service names ("ec2.amazonaws.com").
    if (type(address) is str and 2 <= len(address) <= _MAX_IP_TEXT
            and (address[0] in _DIGITS or ":" in address)):
        ip = ip_text(address)
        if ip is not None:
            document["source"] = {"ip": ip}


_DIGITS = frozenset("0123456789")


def _sign_in_failed(event: Mapping[str, Any]) -> bool:
    response, name = event.get("responseElements"), event.get("eventName")
    return type(response) is dict and type(name) is str and response.get(name) == "Failure"


@lru_cache(maxsize=4096)
def ip_text(text: str) -> str | None:
    """The canonical text of an IPv4 or IPv6 address (what every engine parses), else None.

    Addresses with a zone (``fe80::1%eth0``) are left out: the engines' ``ip`` type has none.
    """
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if getattr(address, "scope_id", None):
        return None
    return str(address)


def mapping_properties(keyword: Mapping[str, Any]) -> dict[str, Any]:
    """The ECS part of the index mapping (``properties``), with ``keyword`` for ``event.outcome``."""
    properties: dict[str, Any] = {}
    fields: dict[str, Mapping[str, Any]] = {
        **{name: {"type": "alias", "path": path} for name, path in ALIASES.items()},
        OUTCOME: keyword,
        SOURCE_IP: {"type": "ip"},
    }
    for name, field in fields.items():
        *parents, leaf = name.split(".")
        level = properties
        for parent in parents:
            level = level.setdefault(parent, {"properties": {}})["properties"]
        level[leaf] = dict(field)
    return properties
