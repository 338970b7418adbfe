"""ECS names: the two typed fields the transform makes, and the names it keeps clear."""
import ipaddress

import hypothesis
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudtrail_es.documents import ecs
from cloudtrail_es.write import indexes
from cloudtrail_es.documents import transform
from cloudtrail_es.documents.transform import degraded_document_for, document_for, top_level_name


@pytest.mark.parametrize("event,outcome", [
    ({"eventName": "RunInstances"}, "success"),
    ({"eventName": "RunInstances", "errorCode": "Client.UnauthorizedOperation"}, "failure"),
    ({"eventName": "RunInstances", "errorCode": ""}, "success"),
    ({"eventName": "ConsoleLogin", "responseElements": {"ConsoleLogin": "Failure"},
      "errorMessage": "Failed authentication"}, "failure"),
    ({"eventName": "ConsoleLogin", "responseElements": {"ConsoleLogin": "Success"}}, "success"),
    ({"eventName": "SwitchRole", "responseElements": {"SwitchRole": "Failure"}}, "failure"),
    # "Failure" under another key is a value like any other.
    ({"eventName": "PutItem", "responseElements": {"status": "Failure"}}, "success"),
    ({"eventName": {"odd": 1}, "responseElements": {"x": "Failure"}}, "success"),
    ({"eventName": "ConsoleLogin", "responseElements": "Failure"}, "success"),
])
def test_outcome_is_failure_on_an_error_code_or_a_failed_sign_in(event, outcome):
    assert ecs.ecs_fields(event)["event"] == {"outcome": outcome}


def test_an_insights_event_has_no_outcome():
    event = {"eventType": "AwsCloudTrailInsight", "eventCategory": "Insight",
             "insightDetails": {"errorCode": "AccessDenied"}}
    assert "event" not in ecs.ecs_fields(event)


@pytest.mark.parametrize("address,ip", [
    ("198.51.100.7", "198.51.100.7"),
    ("2001:DB8:0:0:0:0:0:0A", "2001:db8::a"),
    ("::ffff:192.0.2.1", "::ffff:c000:201"),
    ("::1", "::1"),
    ("ec2.amazonaws.com", None),
    ("AWS Internal", None),
    ("253.252.51.07", None),  # leading zeros: ambiguous (octal?), not an address
    ("10.0.0.256", None),
    ("fe80::1%eth0", None),  # a zone: the engines' ip type has none
    ("1.2.3.4, 5.6.7.8", None),
    ("", None),
    ("1" * 100, None),
])
def test_source_ip_only_for_an_address_in_canonical_form(address, ip):
    fields = ecs.ecs_fields({"sourceIPAddress": address})
    assert fields.get("source") == ({"ip": ip} if ip else None)


@pytest.mark.parametrize("value", [None, 12345, ["1.2.3.4"], {"ip": "1.2.3.4"}])
def test_no_source_ip_when_the_address_is_not_a_string(value):
    assert "source" not in ecs.ecs_fields({"sourceIPAddress": value})


@settings(max_examples=200)
@given(st.ip_addresses())
def test_every_address_gets_its_canonical_text(address):
    for spelling in {str(address), address.exploded}:
        fields = ecs.ecs_fields({"sourceIPAddress": spelling})
        assert fields["source"] == {"ip": str(address)}


def spellings(address):
    """Texts of an address as CloudTrail or a hostile event might write it."""
    return st.sampled_from([str(address), address.exploded, str(address).upper()])


def near_misses(text):
    """An address's text changed a little: most of these are no address at all."""
    return st.one_of(
        st.builds(lambda at, extra: text[:at] + extra + text[at:], st.integers(0, len(text)),
                  st.sampled_from(["0", " ", "%eth0", ".", ":", "::", "x", "\u0660", "1"])),
        st.builds(lambda at: text[:at] + text[at + 1:], st.integers(0, max(0, len(text) - 1))),
        st.just(text + "%1"), st.just(" " + text), st.just(text + "\n"))


ADDRESS_TEXTS = st.ip_addresses().flatmap(spellings)
#: Addresses, near misses of them, service names and any text: both answers are common.
SOURCE_ADDRESSES = st.one_of(ADDRESS_TEXTS, ADDRESS_TEXTS.flatmap(near_misses),
                             st.sampled_from(["ec2.amazonaws.com", "AWS Internal", "0", "::", "1.2.3"]),
                             st.text(max_size=50))


@settings(max_examples=300)
@given(SOURCE_ADDRESSES)
def test_source_ip_is_exactly_what_ipaddress_accepts(text):
    try:
        address = ipaddress.ip_address(text)
        expected = None if getattr(address, "scope_id", None) else str(address)
    except ValueError:
        expected = None
    hypothesis.event("an address" if expected else "not an address")
    assert ecs.ecs_fields({"sourceIPAddress": text}).get("source", {}).get("ip") == expected


@settings(max_examples=300)
@given(st.lists(st.one_of(st.sampled_from(sorted(ecs.ROOTS) + ["%65vent", "_id", "event_raw"]),
                          st.text(max_size=12)), unique=True, max_size=20))
def test_top_level_names_keep_clear_of_ecs_roots_and_stay_one_to_one(keys):
    names = [top_level_name(key) for key in keys]
    assert len(set(names)) == len(keys)
    assert not set(names) & ecs.ROOTS
    assert not any(name.startswith("_") for name in names)


def test_an_event_cannot_write_into_the_ecs_fields():
    event = {"eventID": "x", "errorCode": "AccessDenied", "sourceIPAddress": "192.0.2.9",
             **{root: "hostile" for root in ecs.ROOTS}}
    for document in (document_for(event), degraded_document_for(event, "because")):
        assert document["event"] == {"outcome": "failure"}
        assert document["source"] == {"ip": "192.0.2.9"}
        assert not (set(document) & ecs.ROOTS) - {"event", "source"}
    assert {f"%{ord(root[0]):02X}{root[1:]}" for root in ecs.ROOTS} <= set(document_for(event))


def _mapped(properties, path):
    *parents, leaf = path.split(".")
    for parent in parents:
        properties = properties[parent]["properties"]
    return properties[leaf]


def test_every_alias_points_at_a_mapped_field_and_the_typed_fields_are_mapped():
    properties = indexes.mapping()["properties"]
    for name, path in ecs.ALIASES.items():
        assert _mapped(properties, name) == {"type": "alias", "path": path}
        assert _mapped(properties, path)["type"] in ("keyword", "text", "date")
    assert _mapped(properties, "source.ip") == {"type": "ip"}
    assert _mapped(properties, "event.outcome")["type"] == "keyword"
    assert transform.DATE_FIELD == ecs.ALIASES["@timestamp"]


def test_the_mapping_update_for_old_indexes_only_adds_what_the_full_mapping_has():
    properties = indexes.mapping()["properties"]
    added = indexes.added_properties()
    assert set(added) == ecs.ROOTS | {"insightDetails"}
    assert all(properties[name] == added[name] for name in added)
