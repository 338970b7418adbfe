"""The fields a document brings that its index lacks: found whole, typed as the templates type them."""
import time
from typing import Any

from cloudtrail_strategies import events
from fakes import Response, quick_backoff
from hypothesis import HealthCheck, given, settings

import fakes
from cloudtrail_es.core.refs import ObjectRef
from cloudtrail_es.documents import transform
from cloudtrail_es.write import indexes
from cloudtrail_es.write.fields import Fields, KnownFields, scan

STATIC = indexes.mapping()["properties"]


def dynamic_paths(document: dict[str, Any]) -> set[str]:
    """Every field path of ``document`` the static mapping does not hold (the reference)."""
    paths = set()
    for name, value in document.items():
        if name in STATIC:
            continue
        if isinstance(value, dict):
            paths.add(name)
            paths.update(f"{name}.{leaf}" for leaf in value)
        else:
            paths.add(name)
    return paths


def paths_of(fields: Fields) -> set[str]:
    paths = set(fields)
    for name, leaves in fields.items():
        paths.update(f"{name}.{leaf}" for leaf in leaves or ())
    return paths


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(events, events)
def test_a_scan_finds_every_new_field_and_nothing_twice(first, second):
    known = KnownFields(STATIC)
    documents = [transform.document_for(first), transform.document_for(second)]
    found: Fields = {}
    scan(documents[0], known.of("i"), found)
    assert paths_of(found) == dynamic_paths(documents[0])
    known.add("i", found)
    again: Fields = {}
    scan(documents[0], known.of("i"), again)
    assert again == {}
    rest: Fields = {}
    scan(documents[1], known.of("i"), rest)
    # (an object already known comes back only as the holder of its new leaves)
    assert paths_of(rest) - set(found) == dynamic_paths(documents[1]) - paths_of(found)
    assert known.missing("i", rest) == rest


def test_fields_are_typed_as_the_dynamic_templates_type_them():
    properties = indexes.dynamic_properties({
        "resources_flattened": {"ARN", "type_raw"}, "resources_raw": None, "newTopLevel": None,
        "odd_flattened": None})
    assert properties == {
        "resources_flattened": {"properties": {"ARN": indexes.KEYWORD_FILTER_ONLY,
                                               "type_raw": indexes.KEYWORD_FILTER_ONLY}},
        "resources_raw": indexes.TEXT_SOURCE_ONLY,
        "newTopLevel": indexes.KEYWORD,
        "odd_flattened": indexes.KEYWORD,
    }
    templates = {next(iter(t)): next(iter(t.values())) for t in indexes.mapping()["dynamic_templates"]}
    assert templates["flattened_leaves"]["mapping"] is indexes.KEYWORD_FILTER_ONLY
    assert templates["raw_json"]["mapping"] is indexes.TEXT_SOURCE_ONLY
    assert templates["other_strings"]["mapping"] is indexes.KEYWORD


def event(event_id: str, **fields: Any) -> dict[str, Any]:
    return {"eventVersion": "1.08", "eventTime": "2024-01-15T10:00:00Z", "eventID": event_id,
            "eventName": "Call", **fields}


def test_one_mapping_update_per_index_per_chunk_the_first_in_the_creation_body():
    records = [event(f"e{n}", requestParameters={f"key{n % 7}": n}, **{f"top{n % 3}": "x"})
               for n in range(40)]
    cluster = fakes.ScriptedCluster()
    processor = fakes.processor_for(fakes.MemorySource({
        fakes.log_key("a"): fakes.trail_file(records[:20]),
        fakes.log_key("b"): fakes.trail_file(records[20:])}), cluster, bulk_max_docs=5)

    processor.process_files([ObjectRef("bucket", fakes.log_key(name)) for name in "ab"],
                            time.monotonic() + 60)

    creation, *updates = cluster.mappings
    assert creation[0] == "/ct-2024-01"
    created = creation[1]["mappings"]["properties"]
    assert set(created["requestParameters_flattened"]["properties"]) >= {"key0", "key4"}
    assert "top0" in created
    declared: set[str] = set(created)
    for path, body in updates:
        assert path == "/ct-2024-01/_mapping"
        assert body["properties"]
        declared |= paths_of({name: set(value.get("properties", ())) or None
                              for name, value in body["properties"].items()})
    assert len(updates) <= len(cluster.bulk) - 1
    assert {f"top{n}" for n in range(3)} <= declared
    assert {f"requestParameters_flattened.key{n}" for n in range(7)} <= declared | {
        f"requestParameters_flattened.{leaf}" for leaf in created["requestParameters_flattened"]["properties"]}
    # Nothing declared twice.
    named = [name for _, body in updates for name in body["properties"]
             if "properties" not in body["properties"][name]]
    assert len(named) == len(set(named))


class MappingCluster:
    """Answers index creation 200 and each mapping update from a script of (status, reason)."""

    base_url = "http://mapping.invalid"

    def __init__(self, *answers, mapped=None):
        self.answers = list(answers)
        self.mapped = mapped or {}
        self.requests = []

    def request(self, method, path, body=None, *, data=None, headers=None):
        self.requests.append((method, path, body))
        if path.endswith("/_mapping") and method == "GET":
            return Response(200, {"ct-2024-01": {"mappings": {"properties": self.mapped}}})
        if path.endswith("/_mapping"):
            status, reason = self.answers.pop(0)
            return Response(status, {"error": {"type": "illegal_argument_exception", "reason": reason}})
        return Response(200, {"acknowledged": True})


def creator(cluster):
    made = indexes.IndexCreator(cluster, backoff=quick_backoff())  # type: ignore[arg-type]
    made.ensure("ct-2024-01", 0.0)
    return made


def test_an_index_at_its_field_limit_is_left_to_dynamic_mapping():
    cluster = MappingCluster((400, "Limit of total fields [10] has been exceeded"))
    made = creator(cluster)
    made.declare("ct-2024-01", {"newTop": None}, 0.0)
    made.declare("ct-2024-01", {"otherTop": None}, 0.0)
    updates = [r for r in cluster.requests if r[1].endswith("/_mapping")]
    assert len(updates) == 1  # refused once for the limit: not asked again
    assert made.fields.missing("ct-2024-01", {"newTop": None}) == {"newTop": None}


def test_a_name_mapped_otherwise_is_learnt_and_the_rest_declared():
    cluster = MappingCluster((400, "mapper [x_flattened] cannot be changed from type [text]"),
                             (200, ""), mapped={"x_flattened": {"type": "text"}})
    made = creator(cluster)
    made.declare("ct-2024-01", {"x_flattened": {"a"}, "y_flattened": {"b"}}, 0.0)
    puts = [body for method, path, body in cluster.requests
            if method == "PUT" and path.endswith("/_mapping")]
    assert list(puts[-1]["properties"]) == ["y_flattened"]
    assert made.fields.missing("ct-2024-01", {"y_flattened": {"b"}, "x_flattened": None}) == {}
