"""Property-based tests (hypothesis) over the decoder, the transform and the serialisation.

Generated CloudTrail-shaped events with hostile keys and values, and hostile files: nothing
raises but the documented errors, every event read is the event in the file, every
document serialises to valid UTF-8 JSON, and the documents are the ones the transform
produced before it was made faster (``reference_transform``, commit a7f323c).
"""
import copy
import gzip
import json
import re

import hypothesis
from hypothesis import HealthCheck, given, settings, strategies as st

from cloudtrail_es.core import deepjson
from cloudtrail_es.read import decoder
from cloudtrail_es.documents import ecs, transform
from cloudtrail_es.write.bulk import _dumps_stdlib, bulk_item, dumps
from cloudtrail_es.read.decoder import OversizedEvent
from cloudtrail_es.core.errors import BadLogFile

import reference_transform as reference  # beside this file (tests/unit is on sys.path)
from cloudtrail_strategies import deep, events  # in tests/ (on sys.path: conftest.py is there)

EXAMPLES = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

def old_dumps(document):
    """bulk.dumps as it was: orjson, falling back to the standard library."""
    try:
        import orjson

        return orjson.dumps(document)
    except TypeError:
        return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


_SURROGATE = re.compile("[\ud800-\udfff]")


def has_surrogate(value):
    return _SURROGATE.search(value if isinstance(value, str) else deepjson.dumps(value)) is not None


# --------------------------------------------------------------------------- transform


def without_newer_ecs_fields(document, event):
    """``document`` less the ECS fields added after the reference (``user.name``, ``related.user``,
    ``event.category``...): the reference keeps the transform and the first two ECS fields; the
    newer ones are checked by their golden files (``test_ecs_fields``) and the corpus digest."""
    def drop(target, newer, older):
        for key, value in newer.items():
            if isinstance(value, dict) and isinstance(older.get(key), dict):
                drop(target[key], value, older[key])
                if not target[key]:
                    del target[key]
            elif key not in older:
                del target[key]
    document = copy.deepcopy(document)
    drop(document, ecs.ecs_fields(event), reference.ecs_fields(event))
    return document


@EXAMPLES
@given(events)
def test_documents_are_the_same_as_before_the_speed_up(event):
    document = without_newer_ecs_fields(transform.document_for(event), event)
    assert document == reference.document_for(event)
    if not has_surrogate(event):
        assert dumps(document) == old_dumps(reference.document_for(event))
    event_id = event.get("eventID")
    if isinstance(event_id, str) and event_id and len(event_id.encode("utf-8", "surrogatepass")) <= 512 \
            and not has_surrogate(event_id):
        assert transform.document_id(event) == reference.document_id(event) == event_id


def every_documented_field(schema, value):
    """An object holding every field of ``schema`` (leaf -> None), each leaf set to ``value``."""
    return {key: value if child is None else every_documented_field(child, value)
            for key, child in schema.items()}


def test_every_documented_field_is_indexed_as_the_reference_says():
    """Each documented top-level scalar and each documented sub-field of the structured objects
    (the reference's own tables), set at once: a field dropped from or added to the loader's
    tables changes the document."""
    for value in ("v", 7, ["a", "b"], {"x": "y"}):
        event = {**{name: value for name in reference._SCALAR_FIELDS},
                 **{name: every_documented_field(schema, value)
                    for name, schema in reference.STRUCTURED_FIELDS.items()},
                 "undocumented": {"k": value}, "sourceIPAddress": "192.0.2.1"}
        assert without_newer_ecs_fields(transform.document_for(event), event) == reference.document_for(event)
    for name in ("ConsoleLogin", "SwitchRole", "CheckMfa"):
        for answer in ("Failure", "Success"):
            event = {"eventName": name, "responseElements": {name: answer}}
            assert without_newer_ecs_fields(transform.document_for(event), event) == reference.document_for(event)


@EXAMPLES
@given(events, st.integers(0, 3000))
def test_every_event_serialises_to_valid_utf8_json_with_an_id_the_cluster_accepts(event, depth):
    if depth > 600:
        event = {**event, "requestParameters": deep(depth), "userIdentity": {"x": deep(depth)}}
    doc_id = transform.document_id(event)
    assert doc_id and len(doc_id.encode("utf-8")) <= 512
    assert doc_id == transform.document_id(deepjson.loads(deepjson.dumps(event)))  # deterministic
    for document in (transform.document_for(event), transform.degraded_document_for(event, "r")):
        action, source, end = bulk_item("idx", doc_id, document).lines.split(b"\n")
        assert end == b""
        assert json.loads(action.decode("utf-8"))["index"]["_id"] == doc_id
        parsed = json.loads(source.decode("utf-8"))
        assert (transform.REPAIRED_REASON in parsed) == has_surrogate(document)
        if not has_surrogate(document):
            assert parsed == document
        assert _dumps_stdlib(document) == source  # the fallback writes the same bytes


def test_an_event_id_the_cluster_refuses_becomes_a_digest_and_stays_in_the_document():
    for bad in ("x" * 513, "é" * 257, "a\udc80"):
        event = {"eventID": bad, "eventName": "E"}
        doc_id = transform.document_id(event)
        assert doc_id.startswith("sha256-") and len(doc_id) == 71
        assert doc_id == transform.document_id({"eventID": bad}) != transform.document_id({"eventID": bad + "1"})
        assert transform.document_for(event)["eventID"] == bad
    assert transform.document_id({"eventID": "x" * 512}) == "x" * 512
    for missing in ({"eventName": "E"}, {"eventID": "", "eventName": "E"}, {"eventID": 7}, {"eventID": None}):
        assert transform.document_id(missing).startswith("sha256-")
    assert transform.document_id({"eventID": 7}) != transform.document_id({"eventID": 8})


def test_lone_surrogates_are_replaced_and_the_document_says_so():
    event = {"eventID": "s", "eventName": "a\udc80", "requestParameters": {"k\ud800": "v\udfff"}}
    lines = bulk_item("idx", transform.document_id(event), transform.document_for(event)).lines
    document = json.loads(lines.split(b"\n")[1])
    assert document["eventName"] == "a\ufffd"
    assert document["requestParameters_flattened"] == {"k\ufffd": ["v\ufffd"]}
    assert document[transform.REPAIRED_REASON] == transform.SURROGATES_REPLACED


def test_nesting_far_past_any_recursion_limit_transforms():
    event = {"eventID": "d", "requestParameters": deep(20_000), "userIdentity": deep(5000)}
    document = transform.document_for(event)
    assert document["requestParameters_flattened"] == {"k": ["deep"]}
    assert document["requestParameters_raw"].startswith('[{"k":[{"k":[')
    assert json.loads(dumps(document))["eventID"] == "d"
    assert transform.degraded_document_for(event, "r")[transform.EVENT_RAW].endswith("]}]}")


# --------------------------------------------------------------------------- decoder


def file_text(records_texts, spacing):
    inner = ("," + spacing).join(records_texts)
    return spacing + '{"Records"' + spacing + ":" + spacing + "[" + spacing + inner + spacing + "]}" + spacing


def same_json(a, b):
    return json.dumps(a) == json.dumps(b)


@EXAMPLES
@given(st.lists(events, max_size=6), st.sampled_from(["", " ", "\n  ", "\r\n\t"]), st.booleans(),
       st.booleans(), st.integers(16, 600), st.sampled_from([0, 10 ** 9]), st.integers(50, 10 ** 7))
def test_decoded_events_are_the_events_in_the_file(records, spacing, ascii_only, zipped, window,
                                                    whole, limit):
    ascii_only = ascii_only or has_surrogate(records)  # a lone surrogate has no UTF-8 form
    texts = [json.dumps(record, separators=(",", ":"), ensure_ascii=ascii_only) for record in records]
    data = file_text(texts, spacing).encode("utf-8")
    if zipped:
        data = gzip.compress(data, 1)
    saved = decoder.READ_SIZE, decoder.WHOLE_FILE_BYTES
    decoder.READ_SIZE, decoder.WHOLE_FILE_BYTES = window, whole
    try:
        decoded = decoder.events_in(data, max_event_bytes=limit)
    finally:
        decoder.READ_SIZE, decoder.WHOLE_FILE_BYTES = saved
    assert len(decoded) == len(records)
    for item, text in zip(decoded, texts):
        if len(text) > limit:
            assert isinstance(item, OversizedEvent) and item.size == len(text)
            assert item.head == text[:len(item.head)]
        else:
            assert same_json(item, json.loads(text))


def token_ends(text):
    """Offsets (of the UTF-8 bytes) just after a structural character outside strings, where
    JSON allows whitespace."""
    ends, in_string, escaped, offset = [0], False, False, 0
    for char in text:
        offset += len(char.encode("utf-8", "surrogatepass"))
        if in_string:
            in_string = escaped or char != '"'
            escaped = not escaped and char == "\\"
        elif char == '"':
            in_string = True
        elif char in "{}[],:":
            ends.append(offset)
    return ends


def mutated(raw, text, mutation, data):
    """The file's bytes with ``mutation`` applied, at places ``data`` draws."""
    at = data.draw(st.integers(0, len(raw)))
    if mutation == "space":
        for at in sorted(data.draw(st.sets(st.sampled_from(token_ends(text)), max_size=5)) or {0},
                         reverse=True):
            raw[at:at] = data.draw(st.sampled_from([b" ", b"\n", b"\r\n\t"]))
    elif mutation == "truncate":
        del raw[at:]
    elif mutation == "flip" and at < len(raw):
        raw[at] = data.draw(st.integers(0, 255))
    elif mutation == "insert":
        raw[at:at] = data.draw(st.binary(min_size=1, max_size=4))
    elif mutation == "garbage":
        raw = bytearray(data.draw(st.binary(max_size=200)))
    return raw


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(events, min_size=1, max_size=4), st.booleans(), st.integers(16, 400), st.data())
def test_hostile_files_raise_only_bad_log_file(records, zipped, window, data):
    text = json.dumps({"Records": records}, separators=(",", ":"))
    raw = bytearray(text.encode("utf-8", "surrogatepass"))
    # "none" and "space" (whitespace between tokens) keep the file valid: the property must hold
    # for valid files as often as for broken ones.
    mutation = data.draw(st.sampled_from(["none", "space", "truncate", "flip", "insert", "garbage"]))
    raw = mutated(raw, text, mutation, data)
    blob = gzip.compress(bytes(raw)) if zipped else bytes(raw)
    if zipped and data.draw(st.booleans()):
        blob = blob[:data.draw(st.integers(0, len(blob)))]
        mutation += " (gzip cut)"
    saved = decoder.READ_SIZE, decoder.WHOLE_FILE_BYTES
    decoder.READ_SIZE, decoder.WHOLE_FILE_BYTES = window, data.draw(st.sampled_from([0, 10 ** 9]))
    try:
        try:
            decoded = decoder.events_in(blob)
        except BadLogFile:
            decoded = None
    finally:
        decoder.READ_SIZE, decoder.WHOLE_FILE_BYTES = saved
    try:
        plain = gzip.decompress(blob) if zipped else blob
        expected = json.loads(plain.decode("utf-8"))
    except (ValueError, EOFError, OSError, RecursionError):
        expected = None
    valid = (isinstance(expected, dict) and list(expected) == ["Records"]
             and isinstance(expected["Records"], list)
             and all(isinstance(record, dict) for record in expected["Records"])
             and plain.count(b'"Records"') == 1)
    hypothesis.event(f"{mutation}: " + ("valid" if valid else "not JSON" if expected is None else "other JSON"))
    if valid:
        assert decoded is not None and same_json(decoded, expected["Records"])
    elif expected is None:
        assert decoded is None


@EXAMPLES
@given(st.text(max_size=30), st.text(max_size=30), st.sampled_from([None, "_doc"]), st.booleans())
def test_the_action_line_is_the_serialised_action(index, doc_id, doc_type, with_id):
    target = {"_index": index, **({"_type": doc_type} if doc_type else {}),
              **({"_id": doc_id} if with_id else {})}
    lines = bulk_item(index, doc_id, {"a": doc_id}, 0, doc_type, with_id).lines
    assert lines == b"%s\n%s\n" % (_dumps_stdlib({"index": target}), _dumps_stdlib({"a": doc_id}))
