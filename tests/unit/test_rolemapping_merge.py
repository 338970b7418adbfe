"""Merging the loader's permissions into a role and mapping an operator may have changed."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cloudtrail_es.aws.rolemapping import loader_role, merged_mapping, merged_role, stack_permissions

OURS = loader_role("cloudtrail", False)
WITH_RETENTION = loader_role("cloudtrail", True)
OUR_PATTERNS = OURS["index_permissions"][0]["index_patterns"]
LAMBDA = "arn:aws:iam::111122223333:role/loader"


def actions_on(role, patterns):
    return [a for entry in role["index_permissions"] if sorted(entry["index_patterns"]) == sorted(patterns)
            for a in entry["allowed_actions"]]


def test_a_new_role_is_the_loader_role():
    assert merged_role(None, OURS, None) == OURS


def test_what_an_operator_added_survives_create_update_and_delete():
    operator = {
        "description": "hand-made",
        "cluster_permissions": ["cluster:admin/opendistro/reports/menu/download"],
        "index_permissions": [
            {"index_patterns": ["ops-*"], "allowed_actions": ["read"], "fls": [], "masked_fields": []},
            {"index_patterns": list(reversed(OUR_PATTERNS)), "allowed_actions": ["indices:admin/forcemerge"]}],
        "tenant_permissions": [{"tenant_patterns": ["global_tenant"], "allowed_actions": ["kibana_all_read"]}],
        "reserved": False, "static": False}

    created = merged_role(operator, OURS, None)
    assert created["description"] == "hand-made"
    assert created["cluster_permissions"] == operator["cluster_permissions"] + OURS["cluster_permissions"]
    assert created["index_permissions"][0] == operator["index_permissions"][0]
    assert actions_on(created, OUR_PATTERNS) == ["indices:admin/forcemerge"] + OURS["index_permissions"][0][
        "allowed_actions"]
    assert created["tenant_permissions"] == operator["tenant_permissions"]
    assert "reserved" not in created and "static" not in created  # read-only fields are not sent back

    updated = merged_role(created, WITH_RETENTION, OURS)
    assert "indices:admin/delete" in actions_on(updated, OUR_PATTERNS)
    turned_off = merged_role(updated, OURS, WITH_RETENTION)
    assert "indices:admin/delete" not in actions_on(turned_off, OUR_PATTERNS)
    assert "indices:admin/forcemerge" in actions_on(turned_off, OUR_PATTERNS)

    deleted = merged_role(turned_off, None, OURS)
    assert deleted == {key: value for key, value in operator.items() if key not in ("reserved", "static")} | {
        "index_permissions": [operator["index_permissions"][0],
                              {**operator["index_permissions"][1], "allowed_actions": ["indices:admin/forcemerge"]}]}


def test_a_role_left_with_nothing_is_removed():
    assert merged_role(OURS, None, OURS) is None
    assert merged_role(merged_role(None, WITH_RETENTION, None), None, WITH_RETENTION) is None


def test_a_new_prefix_takes_the_old_ones_place():
    moved = merged_role(OURS, loader_role("trail", False), OURS)
    assert [entry["index_patterns"] for entry in moved["index_permissions"]] == [
        ["trail-????-??", "trail_findings", "trail_findings_state"]]
    assert moved["cluster_permissions"] == OURS["cluster_permissions"]


def test_the_broader_patterns_of_an_earlier_version_are_taken_out():
    """Earlier versions granted PREFIX-* and PREFIX_findings*, which reach a deployment whose
    prefix extends ours: an update narrows them, and a delete takes them out too."""
    earlier = {"cluster_permissions": ["cluster_monitor", "cluster_composite_ops"],
               "index_permissions": [
                   {"index_patterns": ["cloudtrail-*", "cloudtrail_findings*"],
                    "allowed_actions": ["crud", "create_index", "indices_monitor", "indices:admin/delete"]},
                   {"index_patterns": ["ops-*"], "allowed_actions": ["read"]}]}
    updated = merged_role(earlier, OURS, stack_permissions("cloudtrail", False))
    assert [entry["index_patterns"] for entry in updated["index_permissions"]] == [["ops-*"], OUR_PATTERNS]
    assert merged_role(earlier, None, stack_permissions("cloudtrail", True)) == {
        "cluster_permissions": [], "index_permissions": [{"index_patterns": ["ops-*"], "allowed_actions": ["read"]}]}


def test_mapping_keeps_users_hosts_and_other_backend_roles():
    operator = {"users": ["alice"], "hosts": [], "backend_roles": ["arn:aws:iam::1:role/ops"],
                "and_backend_roles": [], "description": "ops", "reserved": False}
    created = merged_mapping(operator, [LAMBDA], [])
    assert created == {"users": ["alice"], "hosts": [], "backend_roles": ["arn:aws:iam::1:role/ops", LAMBDA],
                       "and_backend_roles": [], "description": "ops"}
    replaced = merged_mapping(created, ["arn:aws:iam::1:role/new"], [LAMBDA])
    assert replaced["backend_roles"] == ["arn:aws:iam::1:role/ops", "arn:aws:iam::1:role/new"]
    assert merged_mapping(replaced, [], ["arn:aws:iam::1:role/new"]) == {
        key: value for key, value in operator.items() if key != "reserved"}
    assert merged_mapping({"backend_roles": [LAMBDA]}, [], [LAMBDA]) is None
    assert merged_mapping(None, [LAMBDA], []) == {"backend_roles": [LAMBDA]}


ACTIONS = st.sampled_from(["read", "write", "crud", "indices:admin/forcemerge", "indices_monitor",
                           "create_index", "indices:admin/delete"])
PATTERNS = st.sampled_from([["ops-*"], list(OUR_PATTERNS), ["cloudtrail-*"], ["x-*", "y-*"]])
ENTRY = st.fixed_dictionaries({"index_patterns": PATTERNS, "allowed_actions": st.lists(ACTIONS, unique=True)})
ROLE = st.fixed_dictionaries({
    "cluster_permissions": st.lists(st.sampled_from(["cluster_monitor", "cluster_composite_ops",
                                                     "cluster:monitor/main", "cluster_all"]), unique=True),
    "index_permissions": st.lists(ENTRY, max_size=4)})


@settings(max_examples=200)
@given(operator=ROLE, retention=st.booleans())
def test_create_then_delete_keeps_every_operator_permission_the_stack_does_not_own(operator, retention):
    ours = loader_role("cloudtrail", retention)
    created = merged_role(operator, ours, None)

    for action in ours["index_permissions"][0]["allowed_actions"]:  # the loader has what it needs
        assert action in actions_on(created, OUR_PATTERNS)
    assert set(ours["cluster_permissions"]) <= set(created["cluster_permissions"])

    left = merged_role(created, None, ours) or {"cluster_permissions": [], "index_permissions": []}
    owned = set(ours["index_permissions"][0]["allowed_actions"])
    for entry in operator["index_permissions"]:
        mine = sorted(entry["index_patterns"]) == sorted(OUR_PATTERNS)
        for action in entry["allowed_actions"]:
            if not (mine and action in owned):
                assert action in actions_on(left, entry["index_patterns"]), (entry, action)
    assert [p for p in left["cluster_permissions"]] == [
        p for p in operator["cluster_permissions"] if p not in ours["cluster_permissions"]]
    for action in owned:
        assert action not in actions_on(left, OUR_PATTERNS)
