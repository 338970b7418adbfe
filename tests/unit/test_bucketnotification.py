"""Pure parts of the bucket-notification custom resource (moto S3: tests/integration)."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudtrail_es.aws.bucketnotification import (
    NotificationError,
    overlaps,
    queue_entry,
    with_entry,
    without_entry,
)

QUEUE = "arn:aws:sqs:us-east-1:123456789012:loader"
OURS = queue_entry("cloudtrail-es-stack", QUEUE, "org/AWSLogs/", ".json.gz")

EVENTS = st.sampled_from([["s3:ObjectCreated:*"], ["s3:ObjectCreated:Put"], ["s3:ObjectCreated:Copy"],
                          ["s3:ObjectRemoved:*"], ["s3:ObjectRemoved:Delete", "s3:ObjectCreated:Post"]])
PREFIXES = st.sampled_from(["", "org/", "org/AWSLogs/", "org/AWSLogs/1/", "other/", "o"])
SUFFIXES = st.sampled_from(["", ".json.gz", ".gz", "x.json.gz", ".csv"])


def _entry(kind: str, n: int, events: list[str], prefix: str, suffix: str) -> tuple[str, dict]:
    destination = {"QueueConfigurations": ("QueueArn", QUEUE + str(n)),
                   "TopicConfigurations": ("TopicArn", f"arn:aws:sns:us-east-1:123456789012:t{n}"),
                   "LambdaFunctionConfigurations": (
                       "LambdaFunctionArn", f"arn:aws:lambda:us-east-1:123456789012:function:f{n}")}[kind]
    rules = [{"Name": name, "Value": value} for name, value in (("Prefix", prefix), ("Suffix", suffix))
             if value]
    entry = {"Id": f"other-{n}", destination[0]: destination[1], "Events": events}
    if rules:
        entry["Filter"] = {"Key": {"FilterRules": rules}}
    return kind, entry


CONFIGS = st.lists(st.tuples(st.sampled_from(["QueueConfigurations", "TopicConfigurations",
                                              "LambdaFunctionConfigurations"]),
                             EVENTS, PREFIXES, SUFFIXES), max_size=6)


def _config(drawn: list, event_bridge: bool) -> dict:
    config: dict = {"EventBridgeConfiguration": {}} if event_bridge else {}
    for n, (kind, events, prefix, suffix) in enumerate(drawn):
        kind, entry = _entry(kind, n, events, prefix, suffix)
        config.setdefault(kind, []).append(entry)
    return config


@settings(max_examples=300)
@given(drawn=CONFIGS, event_bridge=st.booleans(), turn_on=st.booleans())
def test_adding_keeps_every_other_entry_and_removing_restores_them(drawn, event_bridge, turn_on):
    config = _config(drawn, event_bridge)
    others = [entry for kind in config if kind.endswith("Configurations") for entry in config[kind]]
    clash = any(overlaps(OURS, other) for other in others)
    if clash:
        with pytest.raises(NotificationError, match="EventBridge"):
            with_entry(config, "trail", OURS, turn_on)
        return
    added = with_entry(config, "trail", OURS, turn_on)
    assert added["QueueConfigurations"].count(OURS) == 1
    for kind, entries in config.items():
        if kind.endswith("Configurations"):
            assert all(entry in added[kind] for entry in entries)
    assert ("EventBridgeConfiguration" in added) == (event_bridge or turn_on)
    # Adding again (an Update) replaces, never duplicates.
    assert with_entry(added, "trail", OURS, turn_on) == added
    removed = without_entry(added, OURS["Id"])
    expected = dict(config)
    if turn_on:
        expected["EventBridgeConfiguration"] = {}
    assert removed == expected


@pytest.mark.parametrize(("events", "prefix", "suffix", "clash"), [
    (["s3:ObjectCreated:*"], "", "", True),               # everything
    (["s3:ObjectCreated:Put"], "org/", "", True),         # a wider prefix, a narrower event
    (["s3:ObjectCreated:*"], "org/AWSLogs/1/", ".gz", True),  # narrower prefix, wider suffix
    (["s3:ObjectCreated:*"], "other/", "", False),        # disjoint prefixes
    (["s3:ObjectCreated:*"], "", ".csv", False),          # disjoint suffixes
    (["s3:ObjectRemoved:*"], "", "", False),              # other events
])
def test_overlap_as_s3_judges_it(events, prefix, suffix, clash):
    _, other = _entry("TopicConfigurations", 1, events, prefix, suffix)
    assert overlaps(OURS, other) is clash and overlaps(other, OURS) is clash


def test_the_overlap_error_names_the_other_entry_and_the_way_out():
    _, other = _entry("LambdaFunctionConfigurations", 7, ["s3:ObjectCreated:*"], "org/", "")
    with pytest.raises(NotificationError) as error:
        with_entry({"LambdaFunctionConfigurations": [other]}, "trail", OURS, False)
    message = str(error.value)
    assert "s3://trail" in message and "other-7" in message and "LambdaFunction" in message
    assert "TriggerMode EventBridge" in message


def test_a_handmade_notification_to_the_same_queue_is_replaced():
    handmade = {"Id": "added-by-hand", "QueueArn": QUEUE, "Events": ["s3:ObjectCreated:*"],
                "Filter": {"Key": {"FilterRules": [{"Name": "Prefix", "Value": "org/AWSLogs/"}]}}}
    _, other = _entry("TopicConfigurations", 1, ["s3:ObjectCreated:*"], "exports/", "")
    added = with_entry({"QueueConfigurations": [handmade], "TopicConfigurations": [other]}, "trail", OURS, False)
    assert added == {"QueueConfigurations": [OURS], "TopicConfigurations": [other]}
    # Another queue's overlapping entry is still refused.
    elsewhere = {**handmade, "QueueArn": QUEUE + "-other"}
    with pytest.raises(NotificationError, match="added-by-hand"):
        with_entry({"QueueConfigurations": [elsewhere]}, "trail", OURS, False)
