"""The stack's two CloudFormation custom resources, handled by one function.

- ``Custom::RoleMapping``: as the domain's master user (name and password read from the
  stack's Secrets Manager secret), add what the loader needs to an OpenSearch role and map the
  loader's IAM role to it, through the security plugin's REST API. The role and the mapping are
  read first and merged into: what an operator added (actions, index patterns, users, backend
  roles) stays, on Update as on Delete, which takes out only what the stack put in (and removes
  the role or mapping when nothing else is left). Delete never fails the stack: when the domain
  is gone or refuses, it reports SUCCESS with the reason and what to remove by hand.
- ``Custom::LogsResourcePolicy``: put the one CloudWatch Logs resource policy (fixed name,
  prefix-scoped) that lets OpenSearch Service publish to the stack's log groups. Put is an
  upsert, so every stack of the account can declare it; Delete keeps it (other stacks and
  retained domains use it).

Every request is answered to CloudFormation (a PUT of SUCCESS or FAILED to its ResponseURL),
whatever happens, before the Lambda's time runs out: the work runs in a thread that is given
up on when only ``REPORT_RESERVE_SECONDS`` are left. A stack never waits an hour for an answer.

cloudformation.yml carries a verbatim copy of this file as the function's inline code (it must
exist when the stack is created, before `make -f Makefile.pip deploy` uploads the package), so it uses the
standard library and boto3 only; tests/unit/test_cloudformation.py checks the copy, and
`python scripts/inline_rolemapping.py` refreshes it.
"""
from __future__ import annotations

import base64
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable

log = logging.getLogger(__name__)
log.setLevel(logging.INFO)

REPORT_RESERVE_SECONDS = 10.0
REQUEST_TIMEOUT_SECONDS = 20.0
# A domain that has just become active may refuse the master user for a moment: 401/403 are
# retried this long before they count (a failed Create rolls the stack back, the domain stays).
AUTH_GRACE_SECONDS = 90.0
REASON_LIMIT = 1000
RESPONSE_LIMIT = 4096
SECURITY_API = "/_plugins/_security/api"
# Elasticsearch engine versions (Open Distro security) know only the older path.
SECURITY_API_PATHS = (SECURITY_API, "/_opendistro/_security/api")
CLUSTER_PERMISSIONS = ["cluster_monitor", "cluster_composite_ops"]
# Create and write the monthly indexes, read their settings, mappings and health; refresh the
# findings index, so that the detector's outbox reads what it has just recorded (the `*`: the
# security plugin checks the shard-level `indices:admin/refresh[s]` too).
REFRESH_ACTION = "indices:admin/refresh*"
INDEX_ACTIONS = ["crud", "create_index", "indices_monitor", "indices:admin/mappings/get",
                 REFRESH_ACTION]
RETENTION_ACTION = "indices:admin/delete"
# What earlier versions granted on their broader patterns (an operator's other grants there stay).
EARLIER_INDEX_ACTIONS = ["crud", "create_index", "indices_monitor", "indices:admin/mappings/get",
                         RETENTION_ACTION]

ROLE_FIELDS = ("description", "cluster_permissions", "index_permissions", "tenant_permissions")
MAPPING_FIELDS = ("description", "backend_roles", "and_backend_roles", "hosts", "users")

Opener = Callable[..., Any]


class CustomResourceError(Exception):
    """The request cannot be carried out; the message is what CloudFormation shows as Reason.

    Not a LoaderError: this module is also inline code that cannot import the package.
    """


@dataclass(frozen=True)
class Outcome:
    status: str  # SUCCESS or FAILED
    physical_id: str
    reason: str = ""
    data: dict = field(default_factory=dict)


def index_patterns(index_prefix: str) -> list[str]:
    """The loader's indexes, exactly: the monthly ones (``PREFIX-YYYY-MM``, never the
    ``PREFIX-org-YYYY-MM`` of a deployment whose prefix extends ours) and the detector's two."""
    return [f"{index_prefix}-????-??", f"{index_prefix}_findings", f"{index_prefix}_findings_state"]


def loader_role(index_prefix: str, delete_indices: bool) -> dict:
    """The OpenSearch role of the loader: its own indexes only; deleting them only for retention."""
    actions = INDEX_ACTIONS + ([RETENTION_ACTION] if delete_indices else [])
    return {
        "description": f"cloudtrail-to-elasticsearch loader: {', '.join(index_patterns(index_prefix))}",
        "cluster_permissions": list(CLUSTER_PERMISSIONS),
        "index_permissions": [{"index_patterns": index_patterns(index_prefix), "allowed_actions": actions}],
    }


def stack_permissions(index_prefix: str, delete_indices: bool) -> dict:
    """What a stack of this or an earlier version may have put in the role, to take out: the
    loader's role, and the broader patterns earlier versions granted (``PREFIX-*``,
    ``PREFIX_findings*``) with the actions they granted there."""
    role = loader_role(index_prefix, delete_indices)
    earlier = {"index_patterns": [f"{index_prefix}-*", f"{index_prefix}_findings*"],
               "allowed_actions": EARLIER_INDEX_ACTIONS}
    return {**role, "index_permissions": [*role["index_permissions"], earlier]}


@dataclass(frozen=True)
class MappingRequest:
    base_url: str
    secret_arn: str
    role: str
    backend_roles: list[str]
    index_prefix: str
    delete_indices: bool
    api_path: str = SECURITY_API

    @property
    def physical_id(self) -> str:
        return f"{self.base_url}{self.api_path}/rolesmapping/{self.role}"


def mapping_request(properties: dict) -> MappingRequest:
    """The resource's properties, checked; CustomResourceError names what is wrong."""
    missing = [name for name in ("Endpoint", "MasterUserSecretArn", "OpenSearchRole", "BackendRoles",
                                 "IndexPrefix") if not properties.get(name)]
    if missing:
        raise CustomResourceError(f"missing properties: {', '.join(missing)}")
    backend_roles = properties["BackendRoles"]
    if not isinstance(backend_roles, list) or not all(isinstance(r, str) and r for r in backend_roles):
        raise CustomResourceError(f"BackendRoles must be a list of role ARNs, not {backend_roles!r}")
    role = str(properties["OpenSearchRole"])
    if not role.replace("_", "").replace("-", "").isalnum():
        raise CustomResourceError(f"OpenSearchRole {role!r}: letters, digits, '_' and '-' only")
    endpoint = str(properties["Endpoint"]).rstrip("/")
    base_url = endpoint if endpoint.startswith(("https://", "http://")) else f"https://{endpoint}"
    delete_indices = str(properties.get("DeleteIndices", "false")).lower()
    if delete_indices not in ("true", "false"):
        raise CustomResourceError(f"DeleteIndices must be true or false, not {delete_indices!r}")
    api_path = str(properties.get("SecurityApiPath", SECURITY_API))
    if api_path not in SECURITY_API_PATHS:
        raise CustomResourceError(f"SecurityApiPath must be one of {', '.join(SECURITY_API_PATHS)}")
    return MappingRequest(base_url, str(properties["MasterUserSecretArn"]), role, backend_roles,
                          str(properties["IndexPrefix"]), delete_indices == "true", api_path)


class SecurityApi:
    """The security plugin's REST API (``base_url`` ends with its path) as one user (basic auth),
    retried until a deadline."""

    def __init__(self, base_url: str, username: str, password: str, opener: Opener,
                 clock: Callable[[], float] = time.monotonic,
                 auth_grace: float | None = None) -> None:
        self._base_url = base_url
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        self._headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}
        self._opener = opener
        self._clock = clock
        self._auth_grace_until = clock() + (AUTH_GRACE_SECONDS if auth_grace is None else auth_grace)

    def call(self, method: str, path: str, body: dict | None, deadline: float) -> int:
        """Status of ``method path``; 2xx and 404 are answers, anything else raises in the end."""
        return self.exchange(method, path, body, deadline)[0]

    def read(self, path: str, deadline: float) -> dict | None:
        """The object named by the last segment of ``path`` (GET), or None if there is none."""
        status, answer = self.exchange("GET", path, None, deadline)
        if status == 404:
            return None
        name = path.rsplit("/", 1)[-1]
        try:
            found = json.loads(answer).get(name)
        except (ValueError, AttributeError) as exc:
            raise CustomResourceError(f"GET {self._base_url}/{path}: not a security API answer: "
                                      f"{answer[:200]!r}") from exc
        if not isinstance(found, dict):
            raise CustomResourceError(f"GET {self._base_url}/{path}: no {name!r} in {answer[:200]!r}")
        return found

    def write(self, path: str, body: dict, deadline: float) -> None:
        """PUT ``body``; a 404 means there is no security API at this path, so the PUT failed."""
        if self.call("PUT", path, body, deadline) == 404:
            raise CustomResourceError(
                f"PUT {self._base_url}/{path} answered HTTP 404: no security REST API there (is "
                f"fine-grained access control enabled, is SecurityApiPath right for this engine?)")

    def exchange(self, method: str, path: str, body: dict | None, deadline: float) -> tuple[int, str]:
        """Status and body of ``method path``; 2xx and 404 are answers, anything else raises in the end."""
        url = f"{self._base_url}/{path}"
        data = json.dumps(body).encode() if body is not None else None
        delay, problem = 1.0, ""
        while True:
            timeout = min(REQUEST_TIMEOUT_SECONDS, deadline - self._clock())
            if timeout <= 0:
                raise CustomResourceError(f"{method} {url} gave no answer in time ({problem})")
            request = urllib.request.Request(url, data=data, method=method, headers=self._headers)
            try:
                with self._opener(request, timeout=timeout) as response:
                    return int(response.status), response.read().decode("utf-8", "replace")
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode("utf-8", "replace")[:300]
                if exc.code == 404:
                    return 404, detail
                transient_auth = exc.code in (401, 403) and self._clock() < self._auth_grace_until
                if exc.code != 429 and exc.code < 500 and not transient_auth:
                    raise CustomResourceError(f"{method} {url} refused: HTTP {exc.code} {detail}") from exc
                problem = f"HTTP {exc.code} {detail}"
            except (urllib.error.URLError, OSError) as exc:
                problem = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
            log.warning("retrying %s %s: %s", method, url, problem)
            time.sleep(max(0.0, min(delay, deadline - self._clock() - 0.1)))
            delay = min(delay * 2, 15.0)


def _patterns(index_permission: dict) -> tuple[str, ...]:
    return tuple(sorted(index_permission.get("index_patterns", [])))


def _unique(items: list) -> list:
    return [item for number, item in enumerate(items) if item not in items[:number]]


def merged_role(existing: dict | None, add: dict | None, remove: dict | None) -> dict | None:
    """``existing`` with the permissions of ``add`` put in and those of ``remove`` (that ``add``
    has not) taken out; everything else kept. None when no permission is left."""
    role = {name: existing[name] for name in ROLE_FIELDS if existing and name in existing}
    add, remove = add or {}, remove or {}
    keep_cluster = set(add.get("cluster_permissions", []))
    cluster = [p for p in role.get("cluster_permissions", [])
               if p not in remove.get("cluster_permissions", []) or p in keep_cluster]
    role["cluster_permissions"] = _unique(cluster + add.get("cluster_permissions", []))
    # An index permission is the stack's when its patterns are the stack's (as a set).
    stacks = {_patterns(entry): entry["allowed_actions"] for entry in remove.get("index_permissions", [])}
    ours = {_patterns(entry): entry for entry in add.get("index_permissions", [])}
    entries = []
    for entry in role.get("index_permissions", []):
        patterns = _patterns(entry)
        actions = [a for a in entry.get("allowed_actions", []) if a not in stacks.get(patterns, [])]
        if patterns in ours:
            actions = _unique(actions + ours.pop(patterns)["allowed_actions"])
        if actions or patterns not in stacks:
            entries.append({**entry, "allowed_actions": actions})
    role["index_permissions"] = entries + [dict(entry) for entry in ours.values()]
    if not (role["cluster_permissions"] or role["index_permissions"] or role.get("tenant_permissions")):
        return None
    if "description" not in role and "description" in add:
        role["description"] = add["description"]
    return role


def merged_mapping(existing: dict | None, add: list[str], remove: list[str]) -> dict | None:
    """``existing`` with the backend roles ``add`` put in and ``remove`` taken out, the rest kept
    (users, hosts, other backend roles). None when it maps nothing any more."""
    mapping = {name: existing[name] for name in MAPPING_FIELDS if existing and name in existing}
    kept = [r for r in mapping.get("backend_roles", []) if r not in remove or r in add]
    mapping["backend_roles"] = _unique(kept + add)
    if not any(mapping.get(name) for name in ("backend_roles", "and_backend_roles", "hosts", "users")):
        return None
    return mapping


def _put_or_delete(api: SecurityApi, path: str, body: dict | None, deadline: float) -> None:
    if body is not None:
        api.write(path, body, deadline)
    else:
        api.call("DELETE", path, None, deadline)


def apply_mapping(request_type: str, request: MappingRequest, physical_id: str, api: SecurityApi,
                  deadline: float, previous: MappingRequest | None = None) -> str:
    """Create/Update: merge the loader's permissions into the role, then its IAM role into the
    mapping (taking out what ``previous``, the properties before an Update, put in and the new ones
    do not). Delete: take out what the stack put in. Returns the physical id."""
    role_path, mapping_path = f"roles/{request.role}", f"rolesmapping/{request.role}"
    ours = loader_role(request.index_prefix, request.delete_indices)
    if request_type == "Delete":
        if physical_id == request.physical_id:  # anything else: a Create that failed, nothing to remove
            mapping = merged_mapping(api.read(mapping_path, deadline), [], request.backend_roles)
            _put_or_delete(api, mapping_path, mapping, deadline)
            role = api.read(role_path, deadline)
            if role is not None:
                _put_or_delete(api, role_path, merged_role(
                    role, None, stack_permissions(request.index_prefix, request.delete_indices)), deadline)
        return physical_id
    if previous is not None and previous.role != request.role:
        previous = None  # the old role is another resource now: CloudFormation deletes it
    before = previous or request  # what the stack may have put in: the previous properties'
    old_role = stack_permissions(before.index_prefix, before.delete_indices)
    role = merged_role(api.read(role_path, deadline), ours, old_role)
    api.write(role_path, role or ours, deadline)
    mapping = merged_mapping(api.read(mapping_path, deadline), request.backend_roles,
                             previous.backend_roles if previous else [])
    api.write(mapping_path, mapping or {"backend_roles": request.backend_roles}, deadline)
    return request.physical_id


def put_logs_policy(request_type: str, properties: dict, physical_id: str, logs: Any) -> str:
    """Upsert the shared CloudWatch Logs resource policy; Delete keeps it."""
    name, document = properties.get("PolicyName"), properties.get("PolicyDocument")
    if not name or not document:
        raise CustomResourceError("missing properties: PolicyName and PolicyDocument are required")
    if request_type != "Delete":
        logs.put_resource_policy(policyName=name, policyDocument=document)
    return str(name) if request_type != "Delete" else physical_id


@dataclass
class Services:
    """What the handler talks to, injected so that tests can point it at local servers."""

    secrets: Any = None
    logs: Any = None
    opener: Opener = urllib.request.urlopen
    #: How long a new domain's 401/403 is retried on Create and Update (see AUTH_GRACE_SECONDS).
    auth_grace_seconds: float | None = None

    def secrets_client(self) -> Any:
        if self.secrets is None:
            import boto3

            self.secrets = boto3.client("secretsmanager")
        return self.secrets

    def logs_client(self) -> Any:
        if self.logs is None:
            import boto3

            self.logs = boto3.client("logs")
        return self.logs


def carry_out(event: dict, services: Services, deadline: float) -> Outcome:
    """The work of one request; every error becomes a FAILED outcome with its reason."""
    request_type = event.get("RequestType", "")
    failed_id = event.get("PhysicalResourceId") or f"failed-{event.get('RequestId', 'unknown')}"
    try:
        if request_type not in ("Create", "Update", "Delete"):
            raise CustomResourceError(f"unknown RequestType {request_type!r}")
        properties = event.get("ResourceProperties") or {}
        resource_type = event.get("ResourceType", "")
        physical_id = event.get("PhysicalResourceId", "")
        if resource_type == "Custom::LogsResourcePolicy":
            return Outcome("SUCCESS", put_logs_policy(request_type, properties, physical_id,
                                                      services.logs_client()))
        if resource_type != "Custom::RoleMapping":
            raise CustomResourceError(f"unknown ResourceType {resource_type!r}")
        try:
            request = mapping_request(properties)
        except CustomResourceError:
            if request_type == "Delete":  # nothing can have been created from these properties
                return Outcome("SUCCESS", physical_id)
            raise
        if request_type == "Delete" and physical_id != request.physical_id:
            return Outcome("SUCCESS", physical_id)
        return Outcome("SUCCESS", _map_role(request_type, request, event, services, deadline),
                       data={"Role": request.role})
    except Exception as exc:  # noqa: BLE001 - CloudFormation must hear about every failure
        log.exception("%s %s failed", request_type, event.get("LogicalResourceId"))
        if request_type == "Delete":
            return Outcome("SUCCESS", event.get("PhysicalResourceId") or failed_id, not_removed(event, exc))
        return Outcome("FAILED", failed_id, failed_reason(event, f"{type(exc).__name__}: {exc}"))


def failed_reason(event: dict, reason: str) -> str:
    """``reason``, and on a Create that names its ``RetainedDomain``, what the rollback leaves
    billing: the domain (DeletionPolicy Retain) outlives the failed stack."""
    domain = (event.get("ResourceProperties") or {}).get("RetainedDomain")
    if event.get("RequestType") != "Create" or not domain:
        return reason
    note = (f" | The rollback keeps OpenSearch domain {domain} and its master user secret "
            f"(DeletionPolicy Retain): they bill until deleted (aws opensearch delete-domain "
            f"--domain-name {domain}), and a new stack cannot use the name before.")
    return reason[:max(0, REASON_LIMIT - len(note))] + note


def _map_role(request_type: str, request: MappingRequest, event: dict, services: Services,
              deadline: float) -> str:
    secret = json.loads(services.secrets_client().get_secret_value(
        SecretId=request.secret_arn)["SecretString"])
    # A refused login is retried only for a domain that may have just become active.
    grace = 0.0 if request_type == "Delete" else services.auth_grace_seconds
    api = SecurityApi(request.base_url + request.api_path, secret["username"], secret["password"],
                      services.opener, auth_grace=grace)
    previous = None
    if request_type == "Update":
        try:
            previous = mapping_request(event.get("OldResourceProperties") or {})
        except CustomResourceError:
            previous = None  # nothing the stack put in can be told apart: only add
    return apply_mapping(request_type, request, event.get("PhysicalResourceId", ""), api, deadline,
                         previous)


def not_removed(event: dict, problem: object) -> str:
    """The reason of a Delete that succeeds without having removed the role and its mapping."""
    if isinstance(problem, Exception):
        problem = f"{type(problem).__name__}: {problem}"
    role = (event.get("ResourceProperties") or {}).get("OpenSearchRole", "the role")
    return (f"not removed ({problem}); the stack is deleted anyway: if the domain still exists, "
            f"remove the loader's backend role from the mapping {role} and the role by hand")


def within(seconds: float, work: Callable[[], Outcome], late: Outcome) -> Outcome:
    """``work()``'s outcome, or ``late`` if it has not finished after ``seconds``."""
    done: list[Outcome] = []
    worker = threading.Thread(target=lambda: done.append(work()), daemon=True)
    worker.start()
    worker.join(max(0.0, seconds))
    return done[0] if done else late


def response_body(event: dict, outcome: Outcome) -> bytes:
    """The JSON CloudFormation expects at the ResponseURL (at most 4096 bytes: the reason gives way)."""
    reason = (outcome.reason or f"see CloudWatch Logs of {event.get('LogicalResourceId')}")[:REASON_LIMIT]
    while True:
        body = json.dumps({
            "Status": outcome.status,
            "Reason": reason,
            "PhysicalResourceId": outcome.physical_id,
            "StackId": event.get("StackId"),
            "RequestId": event.get("RequestId"),
            "LogicalResourceId": event.get("LogicalResourceId"),
            "NoEcho": False,
            "Data": outcome.data,
        }).encode()
        if len(body) <= RESPONSE_LIMIT or len(reason) <= 1:
            return body
        reason = reason[:len(reason) // 2]


def report(event: dict, outcome: Outcome, opener: Opener, deadline: float,
           clock: Callable[[], float] = time.monotonic) -> bool:
    """PUT the outcome to the ResponseURL (a pre-signed S3 URL), retried until ``deadline``."""
    body = response_body(event, outcome)
    while True:
        request = urllib.request.Request(event["ResponseURL"], data=body, method="PUT",
                                         headers={"Content-Type": "", "Content-Length": str(len(body))})
        try:
            with opener(request, timeout=max(1.0, min(10.0, deadline - clock()))):
                log.info("reported %s for %s", outcome.status, event.get("LogicalResourceId"))
                return True
        except (urllib.error.URLError, OSError) as exc:
            log.warning("cannot report to CloudFormation: %s", exc)
            if clock() + 1.0 >= deadline:
                return False
            time.sleep(1.0)


def handle(event: dict, remaining_seconds: float, services: Services) -> Outcome:
    """Carry out ``event`` and report its outcome, with ``remaining_seconds`` of Lambda time left."""
    start = time.monotonic()
    work_deadline = start + remaining_seconds - REPORT_RESERVE_SECONDS
    late_reason = (f"no result after {max(0.0, remaining_seconds - REPORT_RESERVE_SECONDS):.0f} s "
                   f"(is the domain endpoint reachable?)")
    late_id = event.get("PhysicalResourceId") or f"failed-{event.get('RequestId')}"
    # A Delete never fails the stack: a domain that does not answer is reported, not waited for.
    late = (Outcome("SUCCESS", late_id, not_removed(event, late_reason))
            if event.get("RequestType") == "Delete"
            else Outcome("FAILED", late_id, failed_reason(event, late_reason)))
    # The work's own deadline comes a second earlier, so that it can still give its own reason.
    outcome = within(work_deadline - time.monotonic(),
                     lambda: carry_out(event, services, work_deadline - 1.0), late)
    if "ResponseURL" not in event:
        log.error("no ResponseURL in the event, cannot report %s", outcome)
        return outcome
    report(event, outcome, services.opener, start + remaining_seconds - 1.0)
    return outcome


def handler(event: dict, context: Any) -> None:
    """Lambda entry point (inline code: ``index.handler``)."""
    logging.basicConfig(level=logging.INFO)
    log.info("%s %s %s", event.get("RequestType"), event.get("ResourceType"), event.get("LogicalResourceId"))
    handle(event, context.get_remaining_time_in_millis() / 1000.0, Services())
