"""An SQS batch near the end of the invocation's time: messages not started are listed, not cut."""
import json
from urllib.parse import quote_plus

import pytest

import fakes
import lambda_function

from cloudtrail_es.aws import handler as routes

NAMES = ["DeadlineFileNo01", "DeadlineFileNo02", "DeadlineFileNo03"]


class Context:
    """Lambda's context, its remaining time read from a clock the test moves."""

    def __init__(self, remaining_ms):
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self):
        return self.remaining_ms


@pytest.fixture()
def loader(monkeypatch):
    files = {fakes.log_key(name): fakes.trail_file([fakes.event(f"{name}-a")]) for name in NAMES}
    cluster = fakes.ScriptedCluster()
    processor = fakes.processor_for(fakes.MemorySource(files), cluster, fakes.MemoryDeadLetters())
    monkeypatch.setattr(routes, "processor", lambda: processor)
    return processor, cluster


def batch():
    return {"Records": [
        {"messageId": name, "eventSource": "aws:sqs", "body": json.dumps({"Records": [{
            "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": "b"}, "object": {"key": quote_plus(fakes.log_key(name), safe="/")}}}]})}
        for name in NAMES]}


def test_messages_after_the_margin_are_failed_without_being_started(loader, monkeypatch):
    processor, cluster = loader
    context = Context(routes.SAFETY_MARGIN_SECONDS * 1000 + 60_000)
    real = processor.process_file

    def process_file(bucket, key, deadline):
        result = real(bucket, key, deadline)
        context.remaining_ms = routes.SAFETY_MARGIN_SECONDS * 1000 - 1  # the first file took long
        return result

    monkeypatch.setattr(processor, "process_file", process_file)

    answer = lambda_function.lambda_handler(batch(), context)

    assert answer == {"batchItemFailures": [{"itemIdentifier": name} for name in NAMES[1:]]}
    assert {doc_id for _, doc_id in cluster.documents} == {f"{NAMES[0]}-a"}


def test_the_first_message_is_started_even_when_the_margin_is_the_whole_timeout(loader):
    """A function configured with less time than the margin still makes progress."""
    processor, cluster = loader

    answer = lambda_function.lambda_handler(batch(), Context(1000))

    assert answer == {"batchItemFailures": [{"itemIdentifier": name} for name in NAMES[1:]]}
    assert {doc_id for _, doc_id in cluster.documents} == {f"{NAMES[0]}-a"}


def test_with_time_left_every_message_is_loaded(loader):
    processor, cluster = loader

    answer = lambda_function.lambda_handler(batch(), Context(300_000))

    assert answer == {"batchItemFailures": []}
    assert {doc_id for _, doc_id in cluster.documents} == {f"{name}-a" for name in NAMES}
