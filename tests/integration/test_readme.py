"""The commands of the README and of every page of docs/, run as a new user would run them.

Every command of the fenced ``sh`` blocks of README.md and docs/*.md (continuation lines joined,
comments dropped) must be either in RUN, with the exit code and a part of the output it must
give, or in EXCLUDED, with the reason it is not run here; an entry that matches no command fails
too, so neither table can rot. The commands run in reading order (README.md, then the pages in
PAGES order), in one bash shell started in the repository (so an ``export`` or
``. .venv/bin/activate`` holds for the commands after it), with what a new user on this machine
would have: the virtualenv's ``bin`` on PATH, AWS credentials and ``AWS_ENDPOINT_URL`` aimed at
moto server, a fresh ``INDEX_PREFIX`` and ``INDEX_REPLICAS=0`` (one node). ``ES_HOSTNAME`` and
``ES_AUTH`` come from the README's own ``export`` lines.

Placeholders are replaced before running (PLACEHOLDERS): the bucket names by moto buckets this
test fills with the repository's sample events (a file of March 2024 under ``AWSLogs/``, and
under ``org-trail/AWSLogs/``), the cluster endpoints by the local OpenSearch, ``cloudtrail-*``
by the fresh prefix, the example instance id by the samples' one. ``QUEUE_URL``, which the
excluded ``describe-stacks`` would set, is a moto queue.

Besides the commands: every setting the code reads is in docs/configuration.md, every Make
target in docs/development.md, every page of docs/ is linked from the README, and every relative
link and every path of the repository the pages name points at something that exists.
"""
from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import boto3
import pytest
import requests

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
#: The pages of docs/ in reading order (the order their commands run in, after the README's);
#: a page not listed here runs after these, in name order.
PAGES = ("configuration", "backfill", "failures", "indexing", "detections", "deploy", "engines",
         "performance", "development")
SAMPLES = ROOT / "tests" / "events" / "transform"
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>\S*)\s*$")
#: Where the README's own commands leave files in the repository (removed after the run).
LEFT_IN_REPO = ("backfill.state",)
REAL_AWS = "needs a real AWS account (a CloudFormation stack, its Lambda or domain)"
DEPLOY_TEST = ("the deploy path: tests/integration/test_deploy.py runs it against moto server, "
               "in existing-cluster mode")


ANOTHER_ENGINE = ("starts a second search engine (minutes, half a GB); tests/integration/test_engines.py "
                  "runs the matrix on engines of its own")


def pages() -> list[Path]:
    """README.md, then every page of docs/, in reading order."""
    listed = [DOCS / f"{name}.md" for name in PAGES]
    return [README, *listed, *sorted(set(DOCS.glob("*.md")) - set(listed))]


def all_commands() -> list[str]:
    """The commands of every page, in reading order."""
    return [command for page in pages() for command in readme_commands(page.read_text())]


def readme_commands(text: str) -> list[str]:
    """The commands of every ```sh block, in order: continuations joined, comments dropped."""
    commands: list[str] = []
    block: list[str] | None = None  # the lines of the open block; None outside a block
    is_sh, indent = False, 0
    for line in text.splitlines():
        fence = FENCE.match(line)
        if fence and block is None:
            block, is_sh, indent = [], fence["lang"] == "sh", len(fence["indent"])
        elif fence and block is not None:
            commands += split_commands(block) if is_sh else []
            block = None
        elif block is not None:
            block.append(line[indent:] if line[:indent].strip() == "" else line)
    return commands


def split_commands(lines: list[str]) -> list[str]:
    commands, pending = [], ""
    for line in lines:
        line = re.sub(r"(^|\s+)#(\s.*)?$", "", line).rstrip()
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        command = (pending + line.strip()).strip()
        pending = ""
        if command:
            commands.append(re.sub(r"\s+", " ", command))
    return commands


@dataclass(frozen=True)
class Expect:
    exit_code: int
    output: str  # a regular expression the command's output (stdout and stderr) must contain


ENV_SET = Expect(0, r"\A\Z")
#: README command -> what it must give, once placeholders are replaced.
RUN: dict[str, Expect] = {
    "make -f Makefile.pip demo": Expect(0, r"(?s)3/4 detections.*console sign-ins without MFA.*Stop the services"),
    ". .venv/bin/activate": ENV_SET,
    "export ES_HOSTNAME=https://search-my-domain-abc123.eu-west-1.es.amazonaws.com ES_AUTH=sigv4 "
    "AWS_REGION=eu-west-1": ENV_SET,
    "export ES_HOSTNAME=https://opensearch.example.com:9200 ES_AUTH=basic ES_USERNAME=loader "
    "ES_PASSWORD=my-password": ENV_SET,
    "export ES_HOSTNAME=http://127.0.0.1:9200 ES_AUTH=none": ENV_SET,
    "python src/bulk_upload.py my-trail-bucket AWSLogs/ --dry-run":
        Expect(0, r"(?s)files\W+2\b.*-2024-03"),
    "python src/bulk_upload.py my-trail-bucket AWSLogs/": Expect(0, r"\bindexed\W+[1-9]"),
    "cloudtrail-bulk-upload my-trail-bucket org-trail/AWSLogs/ --dates 2024-03-01 2024-03-31 "
    "--state backfill.state": Expect(0, r"\bindexed\W+[1-9]"),
    'curl -s "$ES_HOSTNAME/_cat/indices/cloudtrail-*?v&s=index&h=index,health,docs.count"':
        Expect(0, r"-2024-03\s+green\s+[1-9]"),
    'curl -s "$ES_HOSTNAME/cloudtrail-*/_search?q=eventName:RunInstances&size=1&pretty"':
        Expect(0, r'"eventName" : "RunInstances"'),
    """curl -s "$ES_HOSTNAME/cloudtrail-*/_search?pretty" -H 'Content-Type: application/json' -d """
    """'{"query": {"term": {"responseElements_flattened.instanceId": "i-0123456789abcdef0"}}}'""":
        Expect(0, r'"instanceId" : \[\s*"i-0aaa"'),
    'curl -s "$ES_HOSTNAME/cloudtrail-*/_count?q=event.action:RunInstances"':
        Expect(0, r'"count":[1-9]'),
    'python src/bulk_upload.py my-trail-bucket org-trail/AWSLogs/ --via-queue "$QUEUE_URL"':
        Expect(0, r"files_enqueued\W+1\b"),
    "make -f Makefile.pip lambda-local": Expect(0, r'"batchItemFailures": \[\]'),
    "python scripts/local_lambda.py my-trail-bucket AWSLogs/": Expect(0, r'"batchItemFailures": \[\]'),
    "python -m cloudtrail_es.redrive s3://DEAD_LETTER_BUCKET/cloudtrail-es-dead-letter/":
        Expect(0, r'"files_failed": 0'),
    # Nothing was dead-lettered by the commands before it, so no directory was made: a location
    # that does not exist is a usage error, never "all landed".
    "python -m cloudtrail_es.redrive ./dead-letter": Expect(2, r"dead-letter: no such directory"),
    "python src/bulk_upload.py BUCKET PREFIX": Expect(0, r"\bindexed\W+[1-9]"),
    "python -m cloudtrail_es BUCKET PREFIX": Expect(0, r"\bindexed\W+[1-9]"),
    "cloudtrail-bulk-upload --dir ./trail-logs": Expect(0, r"\bindexed\W+[1-9]"),
    "python -m cloudtrail_es.retention --months 13 --dry-run": Expect(0, r"-2024-03"),
    "python -m cloudtrail_es.retention --months 13": Expect(0, r"-2024-03"),
    "python -m cloudtrail_es.detect rules/": Expect(0, r"findings per rule:\s+\d+ "),
    "python -m cloudtrail_es.detect rules/ my-rules/x.yml --from 2024-03-01T00:00:00Z "
    "--to 2024-04-01T00:00:00Z --json":
        Expect(0, r'(?s)(?=.*"rule_title": "README example, instances launched")(?=.*"user_type": "Root")'),
    "python src/bulk_upload.py my-trail-bucket org-trail/AWSLogs/": Expect(0, r"\bindexed\W+[1-9]"),
    "EXCLUDE_EVENTS='readOnly=true,eventSource=ec2.amazonaws.com;eventName=Decrypt,"
    "userIdentity.type=AWSService'": ENV_SET,
    "python src/bulk_upload.py my-trail-bucket AWSLogs/ --exclude 'eventName=Describe*' "
    "--exclude 'eventName=Get*,eventSource=s3.amazonaws.com'": Expect(0, r"\bindexed\W+[1-9]"),
}

#: README command -> why it is not run here.
EXCLUDED: dict[str, str] = {
    "make -f Makefile.pip test": "the whole suite, this test included",
    "aws cloudformation deploy --template-file cloudformation.yml --s3-bucket \"$ARTIFACTS\" "
    "--stack-name cloudtrail-es --capabilities CAPABILITY_IAM --no-fail-on-empty-changeset "
    "--parameter-overrides CloudTrailBucket=my-trail-bucket CloudTrailPrefix=org-trail "
    "ClusterEndpoint=https://opensearch.example.com:9200 ClusterAuth=basic "
    "ClusterSecretArn=arn:aws:secretsmanager:us-east-1:123456789012:secret:cloudtrail-loader-AbCdEf":
        DEPLOY_TEST,
    "aws cloudformation deploy --template-file cloudformation-trail-bucket.yml --stack-name "
    "cloudtrail-es-bucket --capabilities CAPABILITY_IAM --no-fail-on-empty-changeset "
    "--parameter-overrides TrailBucket=my-trail-bucket TrailPrefix=org-trail "
    "EventQueueArn=arn:aws:sqs:us-east-1:111122223333:cloudtrail-es-EventQueue-ABC "
    "LoaderRoleArn=arn:aws:iam::111122223333:role/cloudtrail-es-LambdaRole-ABC":
        "the companion template: tests/integration/test_deploy.py deploys it on moto server as written",
    "python scripts/lambda_emulator.py install": "run by `make init`, and by tests/integration/"
                                                 "test_lambda_runtime.py on first use",
    "python scripts/lambda_emulator.py package /tmp/fn": "tests/integration/test_lambda_runtime.py "
                                                         "builds and unzips the package the same way",
    "ENGINE=opensearch-2.19.4 OPENSEARCH_PORT=9345 OS_SECURITY=true scripts/services.sh start opensearch":
        "starts a node with the security plugin: tests/integration/test_security_plugin.py runs its own",
    "ARTIFACTS=cloudtrail-es-artifacts-$(aws sts get-caller-identity --query Account --output text)":
        DEPLOY_TEST,
    'aws s3api head-bucket --bucket "$ARTIFACTS" >/dev/null 2>&1 || aws s3 mb "s3://$ARTIFACTS"': DEPLOY_TEST,
    'aws cloudformation deploy --template-file cloudformation.yml --s3-bucket "$ARTIFACTS" '
    "--stack-name cloudtrail-es --capabilities CAPABILITY_IAM --no-fail-on-empty-changeset "
    "--parameter-overrides CloudTrailBucket=my-trail-bucket CloudTrailPrefix=org-trail "
    "ElasticsearchDomainName=cloudtrail": DEPLOY_TEST,
    'aws cloudformation deploy --template-file cloudformation.yml --s3-bucket "$ARTIFACTS" '
    "--stack-name cloudtrail-es --capabilities CAPABILITY_IAM --no-fail-on-empty-changeset "
    "--parameter-overrides CloudTrailBucket=my-trail-bucket CloudTrailPrefix=org-trail "
    "ElasticsearchDomainName=cloudtrail AllowedIPs=203.0.113.10/32 RetentionMonths=13": REAL_AWS,
    "make -f Makefile.pip deploy": DEPLOY_TEST,
    "QUEUE_URL=$(aws cloudformation describe-stack-resources --stack-name cloudtrail-es --query "
    "\"StackResources[?LogicalResourceId=='EventQueue'].PhysicalResourceId\" --output text)":
        DEPLOY_TEST,
    "python -m cloudtrail_es.retention --months 13 --install-policy":
        "the local OpenSearch (integ-test-zip build) has no ISM plugin; tests/unit/test_retention.py "
        "checks the policy",
    "python -m cloudtrail_es.dashboards": "needs OpenSearch Dashboards or Kibana, not among the local "
                                          "services (tests/unit/test_dashboards.py)",
    "make -f Makefile.pip services ENGINE=elasticsearch-7.17.25 OPENSEARCH_PORT=9205": ANOTHER_ENGINE,
    'ENGINE_MATRIX="elasticsearch-7.17.25" .venv/bin/python -m pytest tests/integration/test_engines.py':
        ANOTHER_ENGINE,
    "make -f Makefile.pip services-stop ENGINE=elasticsearch-7.17.25 OPENSEARCH_PORT=9205": ANOTHER_ENGINE,
    "make -f Makefile.pip bench": "the benchmarks: tens of minutes of the machine; docs/performance.md "
                                  "holds their figures",
    '.venv/bin/python -m pytest -m "not integration"': "the unit suite, which `make test` runs itself",
    ".venv/bin/python -m pytest tests/integration/test_backfill.py":
        "an integration file of this suite, which `make test` runs itself",
    "export ES_HOSTNAME=https://<DomainEndpoint> ES_AUTH=basic ES_USERNAME=admin": REAL_AWS,
    "export ES_PASSWORD=\"$(aws secretsmanager get-secret-value --secret-id <MasterUserSecretArn> "
    "--query SecretString --output text | python3 -c 'import json,sys; "
    "print(json.load(sys.stdin)[\"password\"])')\"": REAL_AWS,
    "aws s3api get-bucket-notification-configuration --bucket my-trail-bucket > notification.json":
        REAL_AWS + " (an upgrade of a deployed stack)",
    "aws s3api put-bucket-notification-configuration --bucket my-trail-bucket "
    "--notification-configuration file://notification.json": REAL_AWS + " (an upgrade of a deployed stack)",
}


def test_every_command_is_run_or_excluded():
    commands = all_commands()
    assert len(commands) > 20, commands
    unknown = [c for c in commands if c not in RUN and c not in EXCLUDED]
    assert not unknown, "commands of README.md or docs/ neither run nor excluded (add them to RUN or " \
        "EXCLUDED):\n" + "\n".join(unknown)


def test_no_entry_outlives_its_command():
    commands = set(all_commands())
    assert not set(RUN) & set(EXCLUDED)
    stale = [c for c in [*RUN, *EXCLUDED] if c not in commands]
    assert not stale, "entries that match no command of README.md or docs/:\n" + "\n".join(stale)


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.name)
def test_every_fenced_block_says_its_language(page):
    fences = [(n, m["lang"]) for n, line in enumerate(page.read_text().splitlines(), 1)
              if (m := FENCE.match(line))]
    assert len(fences) % 2 == 0
    bare_openings = [n for n, lang in fences[::2] if not lang]
    assert not bare_openings, f"{page.name}: fenced blocks without a language (```sh for commands) " \
        f"at lines {bare_openings}"


def section(page: Path, heading: str) -> str:
    """The text of a page's ``## heading`` section, up to the next ``## ``."""
    text = page.read_text()
    assert f"\n## {heading}\n" in text, f"{page.name} has no section {heading!r}"
    return text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


def test_the_make_targets_section_names_every_target_of_both_makefiles():
    named = set(re.findall(r"`([a-z-]+)`", section(DOCS / "development.md", "Make targets")))
    for makefile in ("Makefile.pip", "Makefile.poetry"):
        text = (ROOT / makefile).read_text()
        text += "".join((ROOT / name).read_text() for name in re.findall(r"^include (\S+)$", text, re.M))
        phony = re.findall(r"^\.PHONY:(.*)$", text, re.MULTILINE)
        targets = {t for line in phony for t in line.split()} - {"help"}
        assert targets, makefile
        assert not targets - named, f"{makefile} targets missing from docs/development.md's Make targets"


def test_the_configuration_page_lists_every_variable_the_code_reads():
    config = (ROOT / "src" / "cloudtrail_es" / "core" / "config.py").read_text()
    variables = set(re.findall(r'^[A-Z_]+ = "([A-Z_]+)"$', config, re.MULTILINE))
    table = (DOCS / "configuration.md").read_text()
    assert len(variables) > 20
    missing = {v for v in variables if f"| `{v}`" not in table and f", `{v}`" not in table}
    assert not missing, f"settings of core/config.py missing from docs/configuration.md's table: {missing}"


def test_every_page_of_docs_is_linked_from_the_readme():
    linked = set(re.findall(r"\]\((docs/[^)#]+\.md)(?:#[^)]*)?\)", README.read_text()))
    pages_ = {f"docs/{page.name}" for page in DOCS.glob("*.md")}
    assert {f"docs/{name}.md" for name in PAGES} <= pages_
    assert not pages_ - linked, f"pages of docs/ the README does not link to: {pages_ - linked}"


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation but ``-`` and ``_`` dropped, spaces -> ``-``."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {anchor(m[1]) for m in re.finditer(r"^#+ (.*)$", page.read_text(), re.MULTILINE)}


LINK = re.compile(r"\]\((?!https?:|mailto:)([^)#\s]*)(?:#([^)\s]*))?\)")


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.name)
def test_every_relative_link_points_at_a_file_and_heading_that_exist(page):
    broken = []
    for target, fragment in LINK.findall(page.read_text()):
        path = (page.parent / target).resolve() if target else page
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif fragment and path.suffix == ".md" and fragment not in anchors(path):
            broken.append(f"{target}#{fragment}: no such heading in {path.name}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


#: `src/...`, `scripts/...`, `tests/...`, `rules/`, `docs/...` named in backquotes: paths of the repository.
REPO_PATH = re.compile(r"`((?:src|scripts|tests|rules|docs)/[\w./-]*)`")


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.name)
def test_every_path_a_page_names_exists(page):
    missing = [path for path in REPO_PATH.findall(page.read_text()) if not (ROOT / path).exists()]
    assert not missing, f"{page.name} names paths that do not exist: {missing}"


def test_the_anchor_follows_github():
    assert anchor("Scale-out, the Lambda path") == "scale-out-the-lambda-path"
    assert anchor("Run the Lambda handler locally") == "run-the-lambda-handler-locally"
    assert anchor("`_bulk` and dead_letters") == "_bulk-and-dead_letters"


def test_the_extractor_joins_continuations_and_drops_comments():
    text = "```sh\na --x \\\n   --y  # note\n# only a comment\n\nb 'c#d'\n```\n```json\n{}\n```\n"
    assert readme_commands(text) == ["a --x --y", "b 'c#d'"]


def sample_events(day: str) -> list[dict]:
    """The repository's sample events, dated in March 2024, and a call by the root user."""
    events = [json.loads(p.read_text()) for p in sorted(SAMPLES.glob("*.input.json"))]
    root_call = {**json.loads((SAMPLES / "run_instances.input.json").read_text()),
                 "eventID": f"readme-root-call-{day}", "userIdentity": {
                     "type": "Root", "principalId": "111122223333",
                     "arn": "arn:aws:iam::111122223333:root", "accountId": "111122223333"}}
    return [{**event, "eventTime": f"2024-03-{day}T09:12:34Z"} for event in [*events, root_call]]


def trail_files() -> list[tuple[str, bytes]]:
    """March 2024 under AWSLogs/ and org-trail/AWSLogs/; and under AWSLogs/ a file of this month
    (its index outlives the README's retention command, so the detector then finds March's calls)."""
    today = datetime.now(timezone.utc)
    files = []
    for key_prefix, when, day in (("AWSLogs/", datetime(2024, 3, 15), "15"),
                                  ("org-trail/AWSLogs/", datetime(2024, 3, 16), "16"),
                                  ("AWSLogs/", today, "17")):
        key = (f"{key_prefix}111122223333/CloudTrail/eu-west-1/{when:%Y/%m/%d}/"
               f"111122223333_CloudTrail_eu-west-1_{when:%Y%m%d}T0910Z_ReadmeSample{day}.json.gz")
        files.append((key, gzip.compress(json.dumps({"Records": sample_events(day)}).encode())))
    return files


#: The README's "my-rules/x.yml": a rule of the user's own.
OWN_RULE = """title: README example, instances launched
id: 5d0f6c1e-5a4e-4a53-9a43-7f7d2f0c9e11
status: experimental
logsource:
  product: aws
  service: cloudtrail
detection:
  launch:
    eventName: RunInstances
  condition: launch
level: low
"""


@pytest.fixture(scope="module")
def transcript(tmp_path_factory, opensearch_url, moto_url):
    """Every command in RUN, in reading order, in one shell: command -> (exit code, output)."""
    work = tmp_path_factory.mktemp("readme")
    prefix = f"test-readme-{uuid.uuid4().hex[:8]}"
    aws = {"AWS_ENDPOINT_URL": moto_url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}
    s3 = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    sqs = boto3.client("sqs", endpoint_url=moto_url, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    trail, dead = f"readme-{uuid.uuid4().hex[:10]}", f"readme-dead-{uuid.uuid4().hex[:8]}"
    for name in (trail, dead):
        s3.create_bucket(Bucket=name)
    local = work / "trail-logs"
    for key, body in trail_files():
        s3.put_object(Bucket=trail, Key=key, Body=body)
        (local / key).parent.mkdir(parents=True, exist_ok=True)
        (local / key).write_bytes(body)
    (work / "x.yml").write_text(OWN_RULE)
    queue_url = sqs.create_queue(QueueName=f"readme-{uuid.uuid4().hex[:10]}")["QueueUrl"]
    placeholders = {
        r"https://search-my-domain-abc123\.eu-west-1\.es\.amazonaws\.com": opensearch_url,
        r"https://opensearch\.example\.com:9200": opensearch_url,
        r"http://127\.0\.0\.1:9200": opensearch_url,
        r"\bmy-trail-bucket\b": trail,
        r"\bDEAD_LETTER_BUCKET\b": dead,
        r"(?<=bulk_upload\.py )BUCKET PREFIX|(?<=cloudtrail_es )BUCKET PREFIX": f"{trail} AWSLogs/",
        r"\./trail-logs": str(local),
        r"\./dead-letter": str(work / "dead-letter"),
        r"cloudtrail-\*": f"{prefix}-*",
        r"i-0123456789abcdef0": "i-0aaa",
        r"my-rules/x\.yml": str(work / "x.yml"),
    }
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "ES_", "INDEX_", "VIRTUAL_ENV", "MAKE", "MFLAGS"))}
    # BUCKET: `make lambda-local` runs on the README's small trail, not the demo's 30,000 events.
    env.update(aws, INDEX_PREFIX=prefix, INDEX_REPLICAS="0", QUEUE_URL=queue_url, BUCKET=trail,
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
               OPENSEARCH_PORT=str(opensearch_url.rsplit(":", 1)[-1]),
               MOTO_PORT=str(moto_url.rsplit(":", 1)[-1]))
    commands = [c for c in dict.fromkeys(all_commands()) if c in RUN]
    script = ["set +e"]
    for n, command in enumerate(commands):
        runnable = command
        for pattern, value in placeholders.items():
            runnable = re.sub(pattern, value.replace("\\", "\\\\"), runnable)
        script.append(f"{{ {runnable}\n}} > {work}/out.{n} 2>&1 < /dev/null; echo $? > {work}/rc.{n}")
    try:
        subprocess.run(["bash", "-c", "\n".join(script)], cwd=ROOT, env=env, timeout=1200, check=False)
        yield {command: (int((work / f"rc.{n}").read_text() or -1) if (work / f"rc.{n}").exists() else None,
                         (work / f"out.{n}").read_text(errors="replace") if (work / f"out.{n}").exists()
                         else "")
               for n, command in enumerate(commands)}
    finally:
        for name in LEFT_IN_REPO:
            (ROOT / name).unlink(missing_ok=True)
        requests.delete(f"{opensearch_url}/{prefix}*", timeout=60)
        requests.delete(f"{opensearch_url}/_plugins/_ism/policies/{prefix}-retention", timeout=60)


@pytest.mark.parametrize("command", list(RUN))
def test_readme_command(transcript, command):
    if command not in transcript:
        pytest.fail(f"not in README.md or docs/ any more: {command}")
    exit_code, output = transcript[command]
    expected = RUN[command]
    assert exit_code == expected.exit_code, f"{command}\nexit {exit_code}\n{output[-3000:]}"
    assert re.search(expected.output, output, re.MULTILINE), f"{command}\n{output[-3000:]}"
