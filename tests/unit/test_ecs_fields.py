"""ECS names: the typed fields the transform makes, and the names it keeps clear."""
import copy as copy_module
import ipaddress
from datetime import datetime, timezone

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
    assert set(added) == ecs.ROOTS | {"insightDetails", "errorMessage"} | {
        section + transform.RAW_SUFFIX for section in indexes.RAW_EXACT_SECTIONS
        if section not in indexes.FREE_TEXT_RAW}
    assert all(properties[name] == added[name] for name in added)


# -- user.name, related.user, the target of IAM calls, the account --------------------------

ACCOUNT = "111122223333"
ROLE_ARN = f"arn:aws:sts::{ACCOUNT}:assumed-role/AWSReservedSSO_Admin_0a1b/alice@example.com"
ISSUER = {"type": "Role", "userName": "AWSReservedSSO_Admin_0a1b",
          "arn": f"arn:aws:iam::{ACCOUNT}:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_Admin_0a1b"}


@pytest.mark.parametrize(("identity", "name", "related"), [
    ({"type": "IAMUser", "userName": "bob", "arn": f"arn:aws:iam::{ACCOUNT}:user/ops/bob"},
     "bob", ["bob"]),
    ({"type": "Root", "arn": f"arn:aws:iam::{ACCOUNT}:root"}, None, None),
    ({"type": "Root", "userName": "my-account", "arn": f"arn:aws:iam::{ACCOUNT}:root"},
     "my-account", ["my-account"]),
    # Identity Center: the role is the session issuer, the person is the session name.
    ({"type": "AssumedRole", "arn": ROLE_ARN, "sessionContext": {"sessionIssuer": ISSUER}},
     "AWSReservedSSO_Admin_0a1b", ["AWSReservedSSO_Admin_0a1b", "alice@example.com"]),
    ({"type": "AssumedRole", "arn": ROLE_ARN, "sessionContext": {
        "sessionIssuer": ISSUER, "sourceIdentity": "alice"}},
     "AWSReservedSSO_Admin_0a1b", ["AWSReservedSSO_Admin_0a1b", "alice@example.com", "alice"]),
    # A cross-account role session often carries no session issuer: the role from the ARN.
    ({"type": "AssumedRole", "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/Deployer/ci-42"},
     "Deployer", ["Deployer", "ci-42"]),
    ({"type": "FederatedUser", "arn": f"arn:aws:sts::{ACCOUNT}:federated-user/carol",
      "sessionContext": {"sessionIssuer": {"type": "IAMUser", "userName": "broker"}}},
     "broker", ["broker", "carol"]),
    ({"type": "IdentityCenterUser", "onBehalfOf": {
        "userId": "94482488-3041-7026-18f3-be45837cd0e4",
        "identityStoreArn": "arn:aws:identitystore::111122223333:identitystore/d-9067230a85"}},
     "94482488-3041-7026-18f3-be45837cd0e4", ["94482488-3041-7026-18f3-be45837cd0e4"]),
    ({"type": "SAMLUser", "principalId": "x:dave", "userName": "dave"}, "dave", ["dave"]),
    ({"type": "AWSService", "invokedBy": "ec2.amazonaws.com"}, None, None),
])
def test_user_name_is_the_session_issuer_or_the_identity_behind_it(identity, name, related):
    fields = ecs.ecs_fields({"eventSource": "ec2.amazonaws.com", "eventName": "RunInstances",
                             "userIdentity": identity})
    assert fields.get("user", {}).get("name") == name
    assert fields.get("related", {}).get("user") == related


def test_iam_user_and_group_calls_name_their_target():
    event = {"eventSource": "iam.amazonaws.com", "eventName": "AddUserToGroup",
             "userIdentity": {"type": "IAMUser", "userName": "admin"},
             "requestParameters": {"userName": "eve", "groupName": "Admins"}}
    fields = ecs.ecs_fields(event)
    assert fields["user"] == {"name": "admin", "target": {"name": "eve"}}
    assert fields["group"] == {"name": "Admins"}
    assert fields["related"] == {"user": ["admin", "eve"]}
    renamed = ecs.ecs_fields({**event, "eventName": "UpdateUser", "requestParameters": {
        "userName": "eve", "newUserName": "eve2"}})
    assert renamed["related"] == {"user": ["admin", "eve", "eve2"]}
    # Not IAM: an EC2 security group's groupName is no group of users.
    ec2 = ecs.ecs_fields({**event, "eventSource": "ec2.amazonaws.com",
                          "eventName": "CreateSecurityGroup"})
    assert "group" not in ec2 and "target" not in ec2["user"]


@pytest.mark.parametrize(("event", "account"), [
    ({"recipientAccountId": "111122223333", "userIdentity": {"accountId": "444455556666"}},
     "111122223333"),
    ({"userIdentity": {"accountId": "444455556666"}}, "444455556666"),
    ({"recipientAccountId": "", "userIdentity": {"accountId": "444455556666"}}, "444455556666"),
    ({"userIdentity": {"type": "AWSService"}}, None),
    ({}, None),
])
def test_cloud_account_is_the_recipient_else_the_caller_s_account(event, account):
    assert ecs.ecs_fields(event).get("cloud", {}).get("account", {}).get("id") == account


@pytest.mark.parametrize(("source", "name", "category", "types"), [
    ("signin.amazonaws.com", "ConsoleLogin", ["authentication"], ["start"]),
    ("sts.amazonaws.com", "AssumeRoleWithSAML", ["authentication"], ["start"]),
    ("signin.amazonaws.com", "CheckMfa", ["authentication"], ["info"]),
    ("iam.amazonaws.com", "CreateUser", ["iam"], ["user", "creation"]),
    ("iam.amazonaws.com", "AddUserToGroup", ["iam"], ["group", "user", "change"]),
    ("iam.amazonaws.com", "DeleteGroup", ["iam"], ["group", "deletion"]),
    ("iam.amazonaws.com", "AttachRolePolicy", ["iam"], ["admin", "change"]),
    ("iam.amazonaws.com", "ListUsers", ["iam"], ["user", "info"]),
    ("iam.amazonaws.com", "CreateAccessKey", ["iam"], ["user", "creation"]),
    ("cloudtrail.amazonaws.com", "StopLogging", ["configuration"], ["change"]),
    ("cloudtrail.amazonaws.com", "DeleteTrail", ["configuration"], ["deletion"]),
    ("ec2.amazonaws.com", "AuthorizeSecurityGroupIngress", ["configuration"], ["change"]),
    ("s3.amazonaws.com", "PutBucketPolicy", ["configuration"], ["change"]),
    ("s3.amazonaws.com", "GetObject", ["file"], ["access"]),
    ("s3.amazonaws.com", "DeleteBucket", ["file"], ["deletion"]),
])
def test_event_category_and_type_from_the_table(source, name, category, types):
    fields = ecs.ecs_fields({"eventSource": source, "eventName": name})
    assert (fields["event"]["category"], fields["event"]["type"]) == (category, types)


@pytest.mark.parametrize(("source", "name"), [
    ("ec2.amazonaws.com", "RunInstances"), ("ec2.amazonaws.com", "DescribeSecurityGroups"),
    ("cloudtrail.amazonaws.com", "LookupEvents"), ("rds.amazonaws.com", "CreateDBInstance")])
def test_calls_outside_the_table_have_no_category(source, name):
    assert set(ecs.ecs_fields({"eventSource": source, "eventName": name})["event"]) == {"outcome"}


def test_insights_events_have_no_category_or_user():
    fields = ecs.ecs_fields({"eventType": ecs.INSIGHT_EVENT_TYPE, "eventName": "ConsoleLogin",
                             "userIdentity": {"userName": "x"}, "recipientAccountId": "1"})
    assert fields == {"cloud": {"account": {"id": "1"}}}


@given(st.floats(0, 4102444800, allow_nan=False))
def test_ingested_is_iso_utc_to_the_millisecond(seconds):
    text = ecs.ingested_text(seconds)
    moment = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    assert len(text) == 24 and 0 <= seconds - moment.timestamp() < 0.0011


def test_ingested_is_in_the_document_only_when_given_and_withheld_fields_are_left_out():
    event = {"eventSource": "iam.amazonaws.com", "eventName": "CreateUser",
             "recipientAccountId": ACCOUNT, "userIdentity": {"type": "IAMUser", "userName": "a"},
             "requestParameters": {"userName": "b"}}
    assert "ingested" not in document_for(event)["event"]
    document = document_for(event, "2024-01-01T00:00:00.000Z", frozenset(ecs.FORMER_ALIASES))
    assert document["event"]["ingested"] == "2024-01-01T00:00:00.000Z"
    assert "cloud" not in document and document["user"] == {"target": {"name": "b"}}
    assert degraded_document_for(event, "r", "2024-01-01T00:00:00.000Z")["event"]["ingested"]


def test_an_index_of_the_previous_version_cannot_take_the_two_former_aliases():
    old = {"user": {"properties": {"name": {"type": "alias", "path": "userIdentity.userName"},
                                   "id": {"type": "alias", "path": "userIdentity.principalId"}}},
           "cloud": {"properties": {"account": {"properties": {
               "id": {"type": "alias", "path": "recipientAccountId"}}},
               "region": {"type": "alias", "path": "awsRegion"}}},
           "event": {"properties": {"outcome": indexes.KEYWORD}}}
    added = indexes.added_properties()
    assert indexes.conflicts(added, old) == ecs.FORMER_ALIASES
    assert indexes.conflicts(added, {"user": indexes.KEYWORD}) == {
        "user.name", "user.id", "user.target.name"}
    assert indexes.conflicts(added, _leaves_mapped(added)) == set()
    rest = indexes.without(added, set(ecs.FORMER_ALIASES))
    assert "name" not in rest["user"]["properties"] and "cloud" in rest


def _leaves_mapped(properties):
    return {name: ({**field, "properties": _leaves_mapped(field["properties"])}
                   if "properties" in field else field) for name, field in properties.items()}


_NAME_VALUES = st.one_of(st.sampled_from(["alice", "bob", "Admin", ""]), st.integers(0, 3),
                         st.none(), st.just({"userName": "nested"}))
_IDENTITIES = st.one_of(st.fixed_dictionaries({}, optional={
    "type": st.sampled_from(["IAMUser", "AssumedRole", "Root"]),
    "userName": _NAME_VALUES,
    "accountId": st.one_of(st.sampled_from(["111122223333", ""]), st.integers(0, 9)),
    "arn": st.one_of(st.sampled_from([
        f"arn:aws:iam::{ACCOUNT}:user/alice", f"arn:aws:sts::{ACCOUNT}:assumed-role/Ops/bob",
        f"arn:aws:iam::{ACCOUNT}:root", "no-arn", ""]), st.integers(0, 2)),
    "sessionContext": st.one_of(st.none(), st.just("flat"), st.fixed_dictionaries({}, optional={
        "sessionIssuer": st.one_of(st.just([]), st.fixed_dictionaries({}, optional={
            "userName": _NAME_VALUES})),
        "sourceIdentity": _NAME_VALUES})),
    "onBehalfOf": st.one_of(st.just(7), st.fixed_dictionaries({}, optional={"userId": _NAME_VALUES})),
}), st.none(), st.just([]), st.just("text"))
_REQUESTS = st.one_of(st.none(), st.fixed_dictionaries({}, optional={
    "userName": _NAME_VALUES, "newUserName": _NAME_VALUES, "groupName": _NAME_VALUES}))


def _without(fields: dict, paths: frozenset) -> dict:
    """A deep copy of ``fields`` less ``paths``, and less the objects that left empty."""
    copy = copy_module.deepcopy(fields)
    for path in paths:
        *parents, leaf = path.split(".")
        levels = [copy]
        for parent in parents:
            levels.append(levels[-1].get(parent, {}))
        levels[-1].pop(leaf, None)
        for level, name in reversed(list(zip(levels, parents))):
            if level.get(name) == {}:
                del level[name]
    return copy


@settings(max_examples=300, deadline=None)
@given(st.lists(_IDENTITIES, min_size=1, max_size=3),
       st.lists(st.tuples(st.integers(0, 2), _REQUESTS, st.sampled_from(
           ["iam.amazonaws.com", "ec2.amazonaws.com"])), min_size=2, max_size=8))
def test_the_transform_s_cached_callers_give_each_event_its_own_ecs_users(identities, calls):
    """``document_for`` takes a caller's names from the transform's cache of top-level objects
    (the same ``userIdentity`` over many events): every event's ECS fields are still exactly
    ``ecs_fields`` of that event (each worked out, and copied, before any document is made),
    whatever came before it, every third one with fields withheld."""
    withheld = frozenset({"user.name", "related.user", "cloud.account.id"})
    events = [{"eventSource": source, "eventName": "UpdateUser", "requestParameters": request,
               "userIdentity": identities[which % len(identities)]}
              for which, request, source in calls * 2]   # twice: the second time, cached
    expected = [copy_module.deepcopy(ecs.ecs_fields(event)) for event in events]
    for n, (event, fields) in enumerate(zip(events, expected)):
        left_out = withheld if n % 3 == 2 else frozenset()
        document = document_for(event, withheld=left_out)
        assert {key: document[key] for key in ecs.ROOTS if key in document} \
            == _without(fields, left_out)
        names = fields.get("related", {}).get("user", [])
        assert len(names) == len(set(names)) and all(type(name) is str and name for name in names)
        hypothesis.event(f"related.user of {min(len(names), 2)}+ names")
