"""Ingestion metrics as CloudWatch Embedded Metric Format records: log lines, no API call.

Once per invocation the handler prints, to stdout, one single-line JSON record per
dimension set (CloudWatch Logs turns them into metrics of namespace ``NAMESPACE``):

* ``[FunctionName]``: every metric below, for the whole invocation;
* ``[FunctionName, Index]``: one record per index written to, with the event and file
  counts, the retries and the lags of that index's files. ``_bulk`` requests carry events
  of several indexes, so ``BulkRequests`` and ``Throttled`` exist per function only.

No per-file or per-key dimension: a dimension value is a new metric, billed monthly.

Lags (seconds, one value per file, sent as EMF value arrays so that CloudWatch keeps the
distribution, Maximum and percentiles included):

* ``IngestionLagSeconds``: the age of the file's newest event (its ``eventTime``) when the
  file became searchable, i.e. when its last ``_bulk`` request was answered;
* ``ObjectLagSeconds``: the age of the file's S3 ``LastModified`` at that moment.

A file with nothing sent (every event filtered, or failed before any write) has no lag.

The scheduled detection prints its own records (``detection_records``): per function,
``RulesRun``, ``RulesFailed``, ``RulesSkipped`` (not convertible), ``RulesCapped``,
``Findings``, ``NewFindings``, ``NotificationsSent`` and ``UnsentNotifications`` (still to
send after the run: the alarm's signal with ``RulesFailed``); per ``[FunctionName, Rule]``,
``DetectionLagSeconds``, how far behind now the rule's position is after the run.
"""
from __future__ import annotations

import json
import os
import sys
import time
from collections import defaultdict
from typing import IO, Any, Callable, Sequence

from cloudtrail_es.core.results import FileResult, RunResult, ingestion_lag, object_lag
from cloudtrail_es.read import keys

NAMESPACE = "CloudTrailToElasticsearch"
FUNCTION_DIMENSION = "FunctionName"
INDEX_DIMENSION = "Index"
#: EMF's limits (CloudWatch specification of the embedded metric format).
MAX_METRICS_PER_DIRECTIVE = 100
MAX_VALUES_PER_METRIC = 100
MAX_KEYS_PER_DIMENSION_SET = 9

COUNT = "Count"
SECONDS = "Seconds"
#: Metric name -> the FileResult attribute summed; per function and per index.
EVENT_AND_FILE_COUNTS = {
    "EventsRead": "events_read",
    "EventsIndexed": "indexed",
    "EventsDegraded": "degraded",
    "EventsDeadLettered": "dead_lettered",
    "EventsFiltered": "filtered",
    "BulkRetries": "retried",
}
#: Per function only: a ``_bulk`` request may carry events of several indexes.
REQUEST_COUNTS = {"BulkRequests": "bulk_requests", "Throttled": "throttled"}
INGESTION_LAG = "IngestionLagSeconds"
OBJECT_LAG = "ObjectLagSeconds"
RULE_DIMENSION = "Rule"
#: Detection metric -> the run summary's key (``detect.DetectionRun.summary``).
DETECTION_COUNTS = {"RulesRun": "rules_run", "RulesFailed": "rules_failed",
                    "Findings": "findings", "NewFindings": "new",
                    "NotificationsSent": "sent", "UnsentNotifications": "unsent"}
DETECTION_LAG = "DetectionLagSeconds"
UNITS = {**{name: COUNT for name in (*EVENT_AND_FILE_COUNTS, *REQUEST_COUNTS, *DETECTION_COUNTS,
                                     "FilesLoaded", "FilesFailed", "RulesSkipped", "RulesCapped")},
         INGESTION_LAG: SECONDS, OBJECT_LAG: SECONDS, DETECTION_LAG: SECONDS}

def records(runs: Sequence[RunResult], function_name: str, index_prefix: str,
            timestamp_ms: int) -> list[dict[str, Any]]:
    """The EMF records of an invocation: the function's, then one set per index (sorted)."""
    loaded = [result for run in runs for result in run.loaded]
    failed_keys = [failure.key for run in runs for failure in run.failed]
    function = {FUNCTION_DIMENSION: function_name}
    out = _records_for(function, loaded, failed_keys, timestamp_ms, per_request=True)
    by_index: dict[str, list[Any]] = defaultdict(list)
    failed_by_index: dict[str, list[str]] = defaultdict(list)
    for result in loaded:
        by_index[result.index].append(result)
    for key in failed_keys:
        index = _index_of(key, index_prefix)
        if index is not None:
            failed_by_index[index].append(key)
    for index in sorted(by_index.keys() | failed_by_index.keys()):
        out += _records_for({**function, INDEX_DIMENSION: index}, by_index[index],
                            failed_by_index[index], timestamp_ms, per_request=False)
    return out


def _index_of(key: str, index_prefix: str) -> str | None:
    try:
        return keys.index_name_for(key, index_prefix)
    except ValueError:
        return None


def _records_for(dimensions: dict[str, str], loaded: list[FileResult], failed_keys: list[str],
                 timestamp_ms: int, per_request: bool) -> list[dict[str, Any]]:
    """One record with the counts and the first lag values; more records if lags overflow."""
    counts = {name: sum(getattr(r, attribute) for r in loaded)
              for name, attribute in EVENT_AND_FILE_COUNTS.items()}
    if per_request:
        counts.update({name: sum(getattr(r, attribute) for r in loaded)
                       for name, attribute in REQUEST_COUNTS.items()})
    counts.update({"FilesLoaded": len(loaded), "FilesFailed": len(failed_keys)})
    series = {INGESTION_LAG: [lag for lag in map(ingestion_lag, loaded) if lag is not None],
              OBJECT_LAG: [lag for lag in map(object_lag, loaded) if lag is not None]}
    out = []
    first = True
    while first or any(series.values()):
        values: dict[str, Any] = dict(counts) if first else {}
        for name, lag_values in series.items():
            if lag_values:
                values[name] = lag_values[:MAX_VALUES_PER_METRIC]
                series[name] = lag_values[MAX_VALUES_PER_METRIC:]
        out.append(record(dimensions, values, timestamp_ms))
        first = False
    return out


def record(dimensions: dict[str, str], values: dict[str, Any], timestamp_ms: int) -> dict[str, Any]:
    """One EMF record: ``_aws`` metadata, the dimension members, the metric members."""
    if len(dimensions) > MAX_KEYS_PER_DIMENSION_SET or len(values) > MAX_METRICS_PER_DIRECTIVE:
        raise ValueError(f"EMF limits: {len(dimensions)} dimension keys, {len(values)} metrics")
    return {
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [list(dimensions)],
                "Metrics": [{"Name": name, "Unit": UNITS[name]} for name in values],
            }],
        },
        **dimensions,
        **values,
    }


def emit(runs: Sequence[RunResult], index_prefix: str, function_name: str | None = None,
         stream: IO[str] | None = None, clock: Callable[[], float] = time.time) -> list[dict[str, Any]]:
    """Print the invocation's records to stdout (where Lambda's runtime sends them to
    CloudWatch Logs, which extracts the metrics), one compact JSON line each."""
    name = function_name or os.environ.get("AWS_LAMBDA_FUNCTION_NAME") or "local"
    out = records(runs, name, index_prefix, int(clock() * 1000))
    target = stream or sys.stdout
    for item in out:
        target.write(json.dumps(item, separators=(",", ":")) + "\n")
    target.flush()
    return out


def detection_records(summary: dict[str, Any], function_name: str,
                      timestamp_ms: int) -> list[dict[str, Any]]:
    """A scheduled detection's records: the run's counts, then each rule's lag."""
    function = {FUNCTION_DIMENSION: function_name}
    values: dict[str, Any] = {name: int(summary.get(key) or 0) for name, key in DETECTION_COUNTS.items()}
    values["RulesSkipped"] = len(summary.get("skipped") or [])
    values["RulesCapped"] = len(summary.get("capped") or [])
    out = [record(function, values, timestamp_ms)]
    for rule in summary.get("rules") or []:
        if rule.get("lag_seconds") is not None:
            out.append(record({**function, RULE_DIMENSION: str(rule["id"])[:250]},
                              {DETECTION_LAG: rule["lag_seconds"]}, timestamp_ms))
    return out


def emit_detection(summary: dict[str, Any], function_name: str | None = None,
                   stream: IO[str] | None = None,
                   clock: Callable[[], float] = time.time) -> list[dict[str, Any]]:
    """Print a scheduled detection's records to stdout, as ``emit`` does the loader's."""
    name = function_name or os.environ.get("AWS_LAMBDA_FUNCTION_NAME") or "local"
    out = detection_records(summary, name, int(clock() * 1000))
    target = stream or sys.stdout
    for item in out:
        target.write(json.dumps(item, separators=(",", ":")) + "\n")
    target.flush()
    return out
