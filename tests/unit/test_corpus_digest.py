"""Every document of the shared corpus is byte for byte what the transform produced at a7f323c,
but for the ECS fields added since, which are taken out before comparing; and the whole
documents, ECS fields included, are pinned by a second digest, so a change to what the ECS
fields say is made on purpose (the digest file says which change and why). Without the
corpus, the same over the generated test trail, against what the transform made of it."""
import hashlib
from pathlib import Path

from cloudtrail_es.documents import transform
from cloudtrail_es.write.bulk import dumps
from cloudtrail_es.documents.ecs import ecs_fields
from cloudtrail_es.read.decoder import iter_events

EVENTS = Path(__file__).resolve().parents[1] / "events"
#: ``event.ingested`` of every document in the second digest (a fixed time).
INGESTED = "2025-01-01T00:00:00.000Z"


def _expected(golden: Path) -> dict[str, tuple[int, str]]:
    """label ("" for the first line, "with-ecs" ...) -> (events, digest)."""
    found = {}
    for line in golden.read_text().splitlines():
        if line and not line.startswith("#"):
            *label, count, digest = line.split()
            found[" ".join(label)] = (int(count), digest)
    return found


def test_corpus_documents_are_unchanged(corpus_dir, trail_manifest):
    golden = EVENTS / ("generated_documents.sha256" if trail_manifest else "corpus_documents.sha256")
    without_ecs, with_ecs, events = hashlib.sha256(), hashlib.sha256(), 0
    for path in sorted((corpus_dir / "AWSLogs").rglob("*.json.gz")):
        for event in iter_events(path.read_bytes()):
            document = transform.document_for(event, INGESTED)
            doc_id = transform.document_id(event).encode()
            with_ecs.update(doc_id + b"\n" + dumps(document) + b"\n")
            for name in ecs_fields(event, INGESTED):
                del document[name]
            without_ecs.update(doc_id + b"\n" + dumps(document) + b"\n")
            events += 1
    assert _expected(golden) == {"": (events, without_ecs.hexdigest()),
                                 "with-ecs": (events, with_ecs.hexdigest())}, golden.name
