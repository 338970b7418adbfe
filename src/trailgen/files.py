"""The trail on disk: events streamed in time order into files named and laid out as CloudTrail
delivers them, digest files, the occasional broken file, and the manifest."""
from __future__ import annotations

import gzip
import hashlib
import json
import random
import string
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterator

from trailgen import activity, intrusion
from trailgen.organisation import DEFAULT_REGIONS, Organisation, build, iso, token

MANIFEST_NAME = "manifest.json"
FORMAT = 1
#: A busy window is split over several files.
MAX_EVENTS_PER_FILE = 400
TRAIL_NAME = "org-trail"
ALPHANUMERIC = string.ascii_letters + string.digits
#: Where each file goes: ``(key, bytes)``; by default under the output directory.
Sink = Callable[[str, bytes], None]


@dataclass(frozen=True)
class TrailOptions:
    """What to generate; the same options give the same bytes."""
    events: int = 50_000
    seed: int = 1
    start: date = date(2025, 3, 3)
    days: int = 35
    accounts: int = 4
    regions: tuple[str, ...] = DEFAULT_REGIONS
    #: One broken file (a copy of the file just written, cut short) after every this many; 0: none.
    broken_every: int = 1000
    digests: bool = True
    #: CloudTrail delivers a file per account and region about every 5 minutes; an hour by
    #: default keeps a month of a small organisation near 3,000 files (quick to upload).
    delivery_minutes: int = 60

    def __post_init__(self) -> None:
        if not 1 <= self.accounts <= 6:
            raise ValueError(f"accounts must be 1..6, not {self.accounts}")
        if self.days < 2:
            raise ValueError(f"days must be at least 2, not {self.days}")
        if not self.regions:
            raise ValueError("at least one region")
        if not 1 <= self.delivery_minutes <= 60 or 60 % self.delivery_minutes:
            raise ValueError(f"delivery_minutes must divide 60, not {self.delivery_minutes}")


def read_manifest(root: Path) -> dict:
    return json.loads((Path(root) / MANIFEST_NAME).read_text())


def hourly_counts(total: int, start: datetime, hours: int) -> Iterator[tuple[datetime, int]]:
    """``total`` spread over the hours: most in working hours (08-18 UTC) on weekdays."""
    def weight(hour: datetime) -> float:
        working = 8 <= hour.hour < 18
        if hour.weekday() >= 5:
            return 0.6 if working else 0.3
        return 20.0 if working else 0.3
    moments = [start + timedelta(hours=h) for h in range(hours)]
    weights = [weight(m) for m in moments]
    whole, done, running = sum(weights), 0, 0.0
    for moment, w in zip(moments, weights):
        running += w
        upto = round(total * running / whole)
        yield moment, upto - done
        done = upto


@dataclass
class Writer:
    """Buffers one delivery window per account, region and kind; writes each file as it closes."""
    org: Organisation
    options: TrailOptions
    rng: random.Random
    sink: Sink
    window: int | None = None
    buffers: dict[tuple[str, str, str], list[dict]] = field(default_factory=dict)
    hour_files: dict[tuple[str, str], list[dict]] = field(default_factory=dict)
    previous_digest: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    events: int = 0
    files: int = 0
    insights_files: int = 0
    digest_files: int = 0
    events_by_month: dict[str, int] = field(default_factory=dict)
    broken: list[dict] = field(default_factory=list)

    @property
    def seconds(self) -> int:
        return self.options.delivery_minutes * 60

    def add(self, event: dict) -> None:
        moment = datetime.strptime(event["eventTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        window = int(moment.timestamp()) // self.seconds
        if window != self.window:
            self.close_window(window)
        kind = "CloudTrail-Insight" if event.get("eventType") == "AwsCloudTrailInsight" else "CloudTrail"
        place = (event["recipientAccountId"], event["awsRegion"], kind)
        buffer = self.buffers.setdefault(place, [])
        buffer.append(event)
        if len(buffer) >= MAX_EVENTS_PER_FILE:
            self.write(place, self.buffers.pop(place))

    def close_window(self, next_window: int | None) -> None:
        for place in sorted(self.buffers):
            self.write(place, self.buffers[place])
        self.buffers.clear()
        hour = None if next_window is None else next_window * self.seconds // 3600
        if self.window is not None and hour != self.window * self.seconds // 3600:
            self.write_digests(self.window)
        self.window = next_window

    def delivered_at(self) -> datetime:
        assert self.window is not None
        return datetime.fromtimestamp((self.window + 1) * self.seconds, timezone.utc)

    def folder(self, account: str, kind: str, region: str, day: datetime) -> str:
        return f"AWSLogs/{self.org.org_id}/{account}/{kind}/{region}/{day:%Y/%m/%d}/"

    def write(self, place: tuple[str, str, str], records: list[dict]) -> None:
        account, region, kind = place
        delivered = self.delivered_at()
        unique = token(self.rng, 16, ALPHANUMERIC)
        key = (self.folder(account, kind, region, delivered)
               + f"{account}_{kind}_{region}_{delivered:%Y%m%dT%H%MZ}_{unique}.json.gz")
        data = gzip.compress(json.dumps({"Records": records}, separators=(",", ":")).encode(), mtime=0)
        self.put(key, data)
        self.events += len(records)
        self.files += 1
        month = f"{delivered:%Y-%m}"
        self.events_by_month[month] = self.events_by_month.get(month, 0) + len(records)
        if kind == "CloudTrail-Insight":
            self.insights_files += 1
        else:
            self.hour_files.setdefault((account, region), []).append({
                "s3Object": key, "hashValue": hashlib.sha256(data).hexdigest(), "hashAlgorithm": "SHA-256",
                "oldestEventTime": records[0]["eventTime"], "newestEventTime": records[-1]["eventTime"]})
        every = self.options.broken_every
        if every and self.files % every == every // 2:
            self.write_broken(key, data)

    def write_broken(self, key: str, data: bytes) -> None:
        """A copy cut short, as an interrupted copy leaves it: its events are the original's."""
        original = key.removesuffix(".json.gz").rsplit("_", 1)[0]
        broken = f"{original}_{token(self.rng, 16, ALPHANUMERIC)}.json.gz"
        self.put(broken, data[:len(data) // 2])
        self.broken.append({"key": broken, "reason": "truncated gzip", "copy_of": key})

    def write_digests(self, window: int) -> None:
        """The hourly digest of each account and region that delivered files in the hour."""
        if not self.options.digests:
            self.hour_files.clear()
            return
        end = datetime.fromtimestamp((window * self.seconds // 3600 + 1) * 3600, timezone.utc)
        bucket = f"aws-cloudtrail-logs-{self.org.accounts[0]}"
        for (account, region), log_files in sorted(self.hour_files.items()):
            key = (self.folder(account, "CloudTrail-Digest", region, end)
                   + f"{account}_CloudTrail-Digest_{region}_{TRAIL_NAME}_{self.org.home_region}_"
                   f"{end:%Y%m%dT%H%M%SZ}.json.gz")
            previous = self.previous_digest.get((account, region))
            digest = {
                "awsAccountId": account, "digestStartTime": iso(end - timedelta(hours=1)),
                "digestEndTime": iso(end), "digestS3Bucket": bucket, "digestS3Object": key,
                "digestPublicKeyFingerprint": hashlib.md5(account.encode()).hexdigest(),
                "digestSignatureAlgorithm": "SHA256withRSA",
                "newestEventTime": max(f["newestEventTime"] for f in log_files),
                "oldestEventTime": min(f["oldestEventTime"] for f in log_files),
                "previousDigestS3Bucket": bucket if previous else None,
                "previousDigestS3Object": previous[0] if previous else None,
                "previousDigestHashValue": previous[1] if previous else None,
                "previousDigestHashAlgorithm": "SHA-256" if previous else None,
                "previousDigestSignature": token(self.rng, 64, "0123456789abcdef") if previous else None,
                "logFiles": [{"s3Bucket": bucket, **f} for f in log_files],
            }
            data = gzip.compress(json.dumps(digest, separators=(",", ":")).encode(), mtime=0)
            self.put(key, data)
            self.previous_digest[(account, region)] = (key, hashlib.sha256(data).hexdigest())
            self.digest_files += 1
        self.hour_files.clear()

    def put(self, key: str, data: bytes) -> None:
        self.sink(key, data)


def to_directory(root: Path) -> Sink:
    def put(key: str, data: bytes) -> None:
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return put


def generate(root: Path | str, options: TrailOptions = TrailOptions(), sink: Sink | None = None) -> dict:
    """Write the trail under ``root`` (or hand each file to ``sink``) and ``root/manifest.json``;
    returns the manifest."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(options.seed)
    org = build(rng, options.accounts, list(options.regions))
    start = datetime(options.start.year, options.start.month, options.start.day, tzinfo=timezone.utc)
    attack_rng = random.Random(f"intrusion-{options.seed}")
    attack_start = start + timedelta(days=int(options.days * 0.6), hours=2, minutes=13, seconds=7)
    planted, summary = intrusion.plant(attack_rng, org, attack_start)
    extras = sorted([p.event for p in planted]
                    + intrusion.insights(attack_rng, org, attack_start, org.prod),
                    key=lambda event: event["eventTime"])
    noise = options.events - len(extras)
    if noise < 0:
        raise ValueError(f"events must be at least {len(extras)} (the planted intrusion)")
    weights = [weight for weight, _ in activity.ACTIVITY]
    kinds = [kind for _, kind in activity.ACTIVITY]
    writer = Writer(org, options, random.Random(f"files-{options.seed}"),
                    sink or to_directory(root))
    for hour, count in hourly_counts(noise, start, options.days * 24):
        seconds = sorted(rng.randrange(3600) for _ in range(count))
        batch = [kind(rng, org, hour + timedelta(seconds=s))
                 for s, kind in zip(seconds, rng.choices(kinds, weights, k=count))]
        end = iso(hour + timedelta(hours=1))
        while extras and extras[0]["eventTime"] < end:
            batch.append(extras.pop(0))
        batch.sort(key=lambda event: event["eventTime"])
        for event in batch:
            writer.add(event)
    writer.close_window(None)
    if extras:
        raise ValueError(f"{len(extras)} planted events fall outside the trail's days")
    manifest = {
        "generator": "trailgen", "format": FORMAT,
        "options": {**asdict(options), "start": options.start.isoformat(),
                    "regions": list(options.regions)},
        "organisation": org.org_id, "accounts": {a: org.names[a] for a in org.accounts},
        "regions": list(options.regions),
        "from": iso(start), "to": iso(start + timedelta(days=options.days)),
        "events": writer.events, "files": writer.files, "insights_files": writer.insights_files,
        "digest_files": writer.digest_files, "events_by_month": dict(sorted(writer.events_by_month.items())),
        "broken_files": writer.broken,
        "intrusion": {**summary, "events": [p.entry() for p in planted]},
        "expected_findings": [{"rule": p.rule, "eventID": p.event["eventID"]} for p in planted if p.rule],
    }
    (root / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest
