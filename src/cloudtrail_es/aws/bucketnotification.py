"""The trail bucket's notification to the loader's queue, as a CloudFormation custom resource.

``Custom::BucketNotification`` adds one entry, its own ``Id``, to the bucket's notification
configuration and keeps every other entry the bucket has (queues, topics, functions, the
EventBridge switch): S3's ``PutBucketNotificationConfiguration`` replaces the whole
configuration, so the resource reads it, changes only its own entry and writes it back.
Delete removes only that entry (and leaves EventBridge delivery on: other consumers may use it).

S3 refuses two entries whose event types, prefixes and suffixes overlap; the resource finds them
first and fails with an error naming them and the way out (TriggerMode EventBridge, where any
number of rules can watch one bucket). An overlapping entry to the loader's own queue is the
same notification added by hand (earlier versions of the stack left it to the user): replaced.

Properties: ``Bucket``, ``NotificationId``, ``QueueArn`` (empty: no queue entry), ``Prefix``,
``Suffix``, ``EventBridge`` (``"true"``: turn the bucket's EventBridge delivery on). The physical
id is ``<bucket>/<id>``: a new bucket or id makes CloudFormation delete the old entry.

cloudformation.yml and cloudformation-trail-bucket.yml carry a verbatim copy of this file as
their NotificationFunction's inline code (stdlib and boto3 only, no package import);
`python scripts/inline_rolemapping.py` refreshes the copies.
"""
from __future__ import annotations

import json
import logging
import urllib.request
from typing import Any

log = logging.getLogger("cloudtrail_es.bucketnotification")

#: The three lists of destinations a notification configuration holds.
DESTINATION_KINDS = ("QueueConfigurations", "TopicConfigurations", "LambdaFunctionConfigurations")
EVENTS = ["s3:ObjectCreated:*"]
RESPONSE_TIMEOUT_SECONDS = 30


class NotificationError(Exception):
    """The bucket's configuration cannot take this entry (the message says why and what to do)."""


def _filter_value(entry: dict[str, Any], name: str) -> str:
    rules = entry.get("Filter", {}).get("Key", {}).get("FilterRules", [])
    return next((str(rule.get("Value", "")) for rule in rules
                 if str(rule.get("Name", "")).lower() == name), "")


def _events_overlap(ours: list[str], theirs: list[str]) -> bool:
    """``s3:ObjectCreated:*`` covers ``s3:ObjectCreated:Put``; ``...:Put`` and ``...:Copy`` differ."""
    return any(a.rstrip("*").startswith(b.rstrip("*")) or b.rstrip("*").startswith(a.rstrip("*"))
               for a in ours for b in theirs)


def overlaps(entry: dict[str, Any], other: dict[str, Any]) -> bool:
    """Whether S3 would refuse ``entry`` and ``other`` in one configuration."""
    prefix, other_prefix = _filter_value(entry, "prefix"), _filter_value(other, "prefix")
    suffix, other_suffix = _filter_value(entry, "suffix"), _filter_value(other, "suffix")
    return (_events_overlap(entry.get("Events", []), other.get("Events", []))
            and (prefix.startswith(other_prefix) or other_prefix.startswith(prefix))
            and (suffix.endswith(other_suffix) or other_suffix.endswith(suffix)))


def queue_entry(notification_id: str, queue_arn: str, prefix: str, suffix: str) -> dict[str, Any]:
    rules = [{"Name": name, "Value": value}
             for name, value in (("prefix", prefix), ("suffix", suffix)) if value]
    entry: dict[str, Any] = {"Id": notification_id, "QueueArn": queue_arn, "Events": list(EVENTS)}
    if rules:
        entry["Filter"] = {"Key": {"FilterRules": rules}}
    return entry


def configuration_of(answer: dict[str, Any]) -> dict[str, Any]:
    """A GetBucketNotificationConfiguration answer as a Put's configuration (no metadata)."""
    return {kind: answer[kind] for kind in (*DESTINATION_KINDS, "EventBridgeConfiguration")
            if kind in answer}


def without_entry(config: dict[str, Any], notification_id: str) -> dict[str, Any]:
    """``config`` less every destination whose Id is ``notification_id``."""
    out = {key: value for key, value in config.items() if key not in DESTINATION_KINDS}
    for kind in DESTINATION_KINDS:
        kept = [entry for entry in config.get(kind, []) if entry.get("Id") != notification_id]
        if kept:
            out[kind] = kept
    return out


def with_entry(config: dict[str, Any], bucket: str, entry: dict[str, Any] | None,
               event_bridge: bool) -> dict[str, Any]:
    """``config`` with ``entry`` in place of any earlier one of its Id; NotificationError on overlap.

    An overlapping entry to the same queue is this stack's notification made by hand (as an
    earlier version of the stack asked): it is replaced, not refused.
    """
    out = without_entry(config, entry["Id"]) if entry else dict(config)
    if entry:
        handmade = [other for other in out.get("QueueConfigurations", [])
                    if other.get("QueueArn") == entry["QueueArn"] and overlaps(entry, other)]
        if handmade:
            log.info("s3://%s: replacing %s, a notification to the same queue", bucket,
                     ", ".join(str(other.get("Id", "(no id)")) for other in handmade))
            out["QueueConfigurations"] = [other for other in out["QueueConfigurations"]
                                          if other not in handmade]
        clashes = [f"{kind[:-len('Configurations')]} {other.get('Id', '(no id)')}"
                   for kind in DESTINATION_KINDS for other in out.get(kind, [])
                   if overlaps(entry, other)]
        if clashes:
            raise NotificationError(
                f"s3://{bucket}: the notification {entry['Id']} (prefix "
                f"{_filter_value(entry, 'prefix')!r}, suffix {_filter_value(entry, 'suffix')!r}) "
                f"overlaps {', '.join(clashes)}, and S3 refuses overlapping notifications of one "
                "event type. Use TriggerMode EventBridge (any number of rules can watch a bucket), "
                "or remove the other notification (e.g. an earlier loader's) first.")
        out["QueueConfigurations"] = [*out.get("QueueConfigurations", []), entry]
    if event_bridge:
        out["EventBridgeConfiguration"] = {}
    return out


def _put(s3: Any, bucket: str, config: dict[str, Any], validate: bool) -> None:
    # Removing our entry must not depend on other consumers' destinations still existing.
    s3.put_bucket_notification_configuration(
        Bucket=bucket, NotificationConfiguration=config, SkipDestinationValidation=not validate)


def add(s3: Any, properties: dict[str, Any]) -> str:
    """Create or Update: put this resource's entry; the physical id."""
    bucket, notification_id = properties["Bucket"], properties["NotificationId"]
    queue_arn = properties.get("QueueArn", "")
    entry = queue_entry(notification_id, queue_arn, properties.get("Prefix", ""),
                        properties.get("Suffix", "")) if queue_arn else None
    current = configuration_of(s3.get_bucket_notification_configuration(Bucket=bucket))
    if entry is None:  # no queue entry wanted (any more): drop an earlier one of ours
        current = without_entry(current, notification_id)
    updated = with_entry(current, bucket, entry, str(properties.get("EventBridge", "")) == "true")
    _put(s3, bucket, updated, validate=True)
    return f"{bucket}/{notification_id}"


def remove(s3: Any, physical_id: str) -> None:
    """Delete: only this resource's entry goes; a bucket already gone has nothing to remove."""
    bucket, _, notification_id = physical_id.partition("/")
    if not notification_id:  # a create that failed before it named anything
        return
    try:
        current = configuration_of(s3.get_bucket_notification_configuration(Bucket=bucket))
    except s3.exceptions.NoSuchBucket:
        log.info("s3://%s is gone: nothing to remove", bucket)
        return
    updated = without_entry(current, notification_id)
    if updated != current:
        _put(s3, bucket, updated, validate=False)


def apply(s3: Any, event: dict[str, Any]) -> str:
    """The work of one CloudFormation request; the physical id to report."""
    if event["RequestType"] == "Delete":
        remove(s3, event.get("PhysicalResourceId", ""))
        return str(event.get("PhysicalResourceId", ""))
    return add(s3, event["ResourceProperties"])


def respond(event: dict[str, Any], status: str, physical_id: str, reason: str) -> None:
    """PUT the answer CloudFormation waits for to the request's pre-signed ResponseURL."""
    body = json.dumps({
        "Status": status, "Reason": reason[:3000], "PhysicalResourceId": physical_id or "none",
        "StackId": event["StackId"], "RequestId": event["RequestId"],
        "LogicalResourceId": event["LogicalResourceId"],
    }).encode()
    request = urllib.request.Request(event["ResponseURL"], data=body, method="PUT",
                                     headers={"Content-Type": "", "Content-Length": str(len(body))})
    with urllib.request.urlopen(request, timeout=RESPONSE_TIMEOUT_SECONDS):  # noqa: S310 - CloudFormation's URL
        pass


def handle(event: dict[str, Any], s3: Any) -> None:
    """Do the request and always answer it: SUCCESS, or FAILED with the error."""
    physical_id = str(event.get("PhysicalResourceId", ""))
    try:
        physical_id = apply(s3, event)
        status, reason = "SUCCESS", f"{event['RequestType']} done: {physical_id}"
    except Exception as exc:  # every failure is reported to CloudFormation, never lost
        log.exception("%s failed", event.get("RequestType"))
        status, reason = "FAILED", f"{type(exc).__name__}: {exc}"
    respond(event, status, physical_id, reason)


def handler(event: dict[str, Any], context: Any) -> None:
    """Lambda entry point (inline code: ``index.handler``)."""
    import boto3
    from botocore.config import Config

    logging.basicConfig(level=logging.INFO)
    log.info("%s %s %s", event.get("RequestType"), event.get("ResourceType"),
             event.get("LogicalResourceId"))
    s3 = boto3.client("s3", config=Config(connect_timeout=10, read_timeout=30,
                                          retries={"max_attempts": 3}))
    handle(event, s3)
