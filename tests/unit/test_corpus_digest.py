"""Every document of the shared corpus is byte for byte what the transform produced at a7f323c,
but for the ECS fields added since (issue 15), which are taken out before comparing; the
documents of the generated test trail, what the transform produced when the trail was made."""
import hashlib
from pathlib import Path

from cloudtrail_es.documents import transform
from cloudtrail_es.write.bulk import dumps
from cloudtrail_es.documents.ecs import ecs_fields
from cloudtrail_es.read.decoder import iter_events

EVENTS = Path(__file__).resolve().parents[1] / "events"


def test_corpus_documents_are_unchanged(corpus_dir, trail_manifest):
    golden = EVENTS / ("generated_documents.sha256" if trail_manifest else "corpus_documents.sha256")
    count, expected = next(line for line in golden.read_text().splitlines()
                           if line and not line.startswith("#")).split()
    digest, events = hashlib.sha256(), 0
    for path in sorted((corpus_dir / "AWSLogs").rglob("*.json.gz")):
        for event in iter_events(path.read_bytes()):
            document = transform.document_for(event)
            for name in ecs_fields(event):
                del document[name]
            digest.update(transform.document_id(event).encode() + b"\n" + dumps(document) + b"\n")
            events += 1
    assert (events, digest.hexdigest()) == (int(count), expected), \
        f"{golden.name} says {count} {expected}; now {events} {digest.hexdigest()}"
