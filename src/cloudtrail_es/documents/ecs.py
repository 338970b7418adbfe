"""Elastic Common Schema names over our CloudTrail documents: aliases, and typed fields.

Every index maps ECS names as field aliases of the CloudTrail fields that hold the same
thing, so tools and searches written for ECS (``event.action: RunInstances``, a range on
``@timestamp``) work unchanged, at no storage cost. The fields that are more than another
name for one CloudTrail field are real, made per event by ``add_ecs_fields``:

* ``source.ip`` (type ``ip``, only when ``sourceIPAddress`` is an address, so CIDR queries
  work) and ``event.outcome`` (``success`` / ``failure``);
* ``user.name``: the session issuer of an assumed role or federated session (the role, or the
  IAM user that federated), else ``userIdentity.userName`` (IAM users, root, SAML and web
  identity users, Identity Center sign-ins), else the name in the caller's ARN, else an
  Identity Center user's id (``onBehalfOf.userId``), as Elastic's AWS integration does;
* ``related.user``: every user name in the event (those above, the session name of an assumed
  role, which is the person behind an Identity Center role, the source identity, and the IAM
  user a call is about);
* ``user.target.name`` / ``group.name``: the IAM user / group an ``iam.amazonaws.com`` call is
  about (``requestParameters.userName`` / ``groupName``);
* ``cloud.account.id``: ``recipientAccountId``, else the caller's account
  (``userIdentity.accountId``);
* ``event.category`` / ``event.type``: ECS's vocabulary (``authentication``, ``iam``,
  ``configuration``... / ``creation``, ``change``, ``info``...), from the table ``categorize``;
* ``event.ingested``: when the document was built for writing (ISO 8601 UTC, milliseconds;
  given by the caller, one value per file, so documents of a file stay alike).

Left out on purpose: ``tls.version`` (ECS wants ``1.2``, CloudTrail says ``TLSv1.2``) and
``tls.cipher`` (ECS gives IANA names, CloudTrail OpenSSL ones).
"""
from __future__ import annotations

import ipaddress
import time
from functools import lru_cache
from typing import Any, Mapping, NamedTuple

#: ECS name -> the CloudTrail field it is an alias of.
ALIASES: Mapping[str, str] = {
    "@timestamp": "eventTime",
    "event.action": "eventName",
    "event.provider": "eventSource",
    "event.id": "eventID",
    "cloud.region": "awsRegion",
    "source.address": "sourceIPAddress",
    "user_agent.original": "userAgent",
    "error.code": "errorCode",
    "error.message": "errorMessage",
    "user.id": "userIdentity.principalId",
}
OUTCOME = "event.outcome"
SOURCE_IP = "source.ip"
INGESTED = "event.ingested"
#: The real ECS fields and their kind ("keyword", "ip" or "date"); an index maps them so.
FIELDS: Mapping[str, str] = {
    OUTCOME: "keyword", "event.category": "keyword", "event.type": "keyword",
    INGESTED: "date", SOURCE_IP: "ip", "user.name": "keyword", "user.target.name": "keyword",
    "group.name": "keyword", "related.user": "keyword", "cloud.account.id": "keyword",
}
#: Names that were aliases in indexes made by earlier versions (``user.name`` of
#: ``userIdentity.userName``, ``cloud.account.id`` of ``recipientAccountId``): such an index
#: cannot take a value for them (see ``indexes.IndexCreator``).
FORMER_ALIASES = frozenset({"user.name", "cloud.account.id"})
#: Top-level names the ECS fields occupy: an event's own top-level key of one of these
#: names is escaped by the transform (``event`` -> ``%65vent``) so it never meets them.
ROOTS = frozenset(name.split(".", 1)[0] for name in (*ALIASES, *FIELDS))

INSIGHT_EVENT_TYPE = "AwsCloudTrailInsight"
#: Longest text of an IP address without a zone (IPv6 with an embedded IPv4 address).
_MAX_IP_TEXT = 45


class Caller(NamedTuple):
    """What the ECS fields take from one ``userIdentity``."""

    #: ``user.name``; the names ``related.user`` starts with (in order, once each); the
    #: caller's account (``userIdentity.accountId``) when a non-empty string.
    name: str | None
    names: tuple[str, ...]
    account: str | None


_NO_CALLER = Caller(None, (), None)


def ecs_fields(event: Mapping[str, Any], ingested: str | None = None) -> dict[str, Any]:
    """The real ECS fields of one CloudTrail event, as document objects.

    The outcome is ``failure`` when the call returned an ``errorCode``, or when a sign-in
    event (``ConsoleLogin``, ``CheckMfa``, ``SwitchRole``...) says ``Failure`` in
    ``responseElements.<eventName>`` (those carry no ``errorCode``); ``success`` otherwise.
    An Insights event is not a call and has no outcome, category or user.
    """
    fields: dict[str, Any] = {}
    add_ecs_fields(fields, event, ingested)
    return fields


def add_ecs_fields(document: dict[str, Any], event: Mapping[str, Any], ingested: str | None = None,  # noqa: C901 - on every event, inlined for speed
                   withheld: frozenset[str] = frozenset(), caller: Caller | None = None) -> None:
    """``ecs_fields(event, ingested)`` added to ``document`` (runs on every event: kept cheap).

    ``withheld``: paths of ``FIELDS`` left out (those the target index cannot take);
    ``caller``: ``caller_of`` the event's ``userIdentity`` when the caller has it already.
    """
    get = event.get
    call = get("eventType") != INSIGHT_EVENT_TYPE
    if call:
        source, name = get("eventSource"), get("eventName")
        failed = get("errorCode")
        if not failed:  # a sign-in's failure: Failure in responseElements.<eventName>
            response = get("responseElements")
            failed = type(response) is dict and type(name) is str and response.get(name) == "Failure"
        ecs_event: dict[str, Any] = {"outcome": "failure" if failed else "success"}
        if type(source) is str and type(name) is str:
            kinds = categorize(source, name)
            if kinds is not None:
                ecs_event["category"], ecs_event["type"] = kinds
        if ingested is not None:
            ecs_event["ingested"] = ingested
        document["event"] = ecs_event
    elif ingested is not None:
        document["event"] = {"ingested": ingested}
    address = get("sourceIPAddress")
    # Cheap checks first: most non-addresses are service names ("ec2.amazonaws.com").
    if (type(address) is str and 2 <= len(address) <= _MAX_IP_TEXT
            and (address[0] in _DIGITS or ":" in address)):
        ip = ip_text(address)
        if ip is not None:
            document["source"] = {"ip": ip}
    if caller is None:
        identity = get("userIdentity")
        caller = caller_of(identity) if type(identity) is dict and identity else _NO_CALLER
    account = get("recipientAccountId")
    if type(account) is not str or not account:
        account = caller.account
    if account is not None:
        document["cloud"] = {"account": {"id": account}}
    if call:
        _add_users(document, event, caller)
    if withheld:
        for path in withheld:
            _remove(document, path.split("."))


def caller_of(identity: Mapping[str, Any]) -> Caller:
    """The ``Caller`` of a ``userIdentity`` object."""
    found = identity_names(identity)
    names: list[str] = []
    for name in found:
        if name is not None and name not in names:
            names.append(name)
    account = identity.get("accountId")
    return Caller(found[0], tuple(names), account if type(account) is str and account else None)


_NO_IDENTITY: Mapping[str, Any] = {}


def _name(value: Any) -> str | None:
    return value if type(value) is str and value else None


def arn_names(arn: Any) -> tuple[str | None, str | None]:
    """(the principal's name, the session name) in an IAM or STS ARN, when it holds them.

    ``...:user/path/alice`` -> (alice, None); ``...:assumed-role/Role/session`` -> (Role,
    session); ``...:federated-user/bob`` -> (bob, None); a root or service ARN -> (None, None).
    """
    if type(arn) is not str:
        return None, None
    resource = arn.split(":", 5)[-1]
    kind, _, rest = resource.partition("/")
    if not rest:
        return None, None
    if kind == "assumed-role":
        role, _, session = rest.partition("/")
        return role or None, session or None
    if kind in ("user", "federated-user"):
        return rest.rsplit("/", 1)[-1] or None, None
    return None, None


def identity_names(identity: Mapping[str, Any]) -> list[str | None]:
    """``user.name`` of a caller, then the other names it carries (None where absent)."""
    context = identity.get("sessionContext")
    if type(context) is not dict:
        context = _NO_IDENTITY
    issuer = context.get("sessionIssuer")
    issuer_name = _name(issuer.get("userName")) if type(issuer) is dict else None
    own = _name(identity.get("userName"))
    arn_name, session = arn_names(identity.get("arn"))
    behalf = identity.get("onBehalfOf")
    behalf_id = _name(behalf.get("userId")) if type(behalf) is dict else None
    name = issuer_name or own or arn_name or behalf_id
    return [name, issuer_name, own, arn_name, session, _name(context.get("sourceIdentity"))]


def _add_users(document: dict[str, Any], event: Mapping[str, Any], caller: Caller) -> None:
    """``user.name``, ``related.user``, ``user.target.name`` and ``group.name``."""
    user: dict[str, Any] = {} if caller.name is None else {"name": caller.name}
    names = caller.names
    request = event.get("requestParameters")
    if type(request) is dict:
        target = request.get("userName")
        renamed = request.get("newUserName")
        if type(target) is not str or not target:
            target = None
        elif target not in names:
            names += (target,)
        if type(renamed) is str and renamed and renamed not in names:
            names += (renamed,)
        if event.get("eventSource") == IAM_SOURCE:
            if target is not None:
                user["target"] = {"name": target}
            group = _name(request.get("groupName"))
            if group is not None:
                document["group"] = {"name": group}
    if user:
        document["user"] = user
    if names:
        document["related"] = {"user": list(names)}


def _remove(document: dict[str, Any], path: list[str]) -> None:
    head, *rest = path
    child = document.get(head)
    if not rest:
        document.pop(head, None)
    elif type(child) is dict:
        _remove(child, rest)
        if not child:
            del document[head]


def ingested_text(seconds: float) -> str:
    """``event.ingested`` for a time in seconds since the epoch: ISO 8601 UTC, milliseconds."""
    whole, millis = divmod(int(seconds * 1000), 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}Z"


# -- event.category / event.type ---------------------------------------------------------------

IAM_SOURCE = "iam.amazonaws.com"
#: Event names that start, check or end a session, whatever service logs them.
_AUTHENTICATION = {
    **dict.fromkeys(("ConsoleLogin", "SwitchRole", "AssumeRole", "AssumeRoleWithSAML",
                     "AssumeRoleWithWebIdentity", "AssumeRoot", "GetSessionToken",
                     "GetFederationToken", "GetSigninToken", "Federate", "Authenticate",
                     "UserAuthentication", "CredentialVerification"), "start"),
    **dict.fromkeys(("CheckMfa", "CredentialChallenge", "GetRoleCredentials",
                     "CreateToken", "PasswordVerification"), "info"),
    **dict.fromkeys(("ExitRole", "Logout", "ConsoleLogout"), "end"),
}
#: Sources whose calls manage identities: category ``iam``.
_IAM_SOURCES = frozenset({IAM_SOURCE, "identitystore.amazonaws.com", "sso.amazonaws.com",
                          "sso-directory.amazonaws.com"})
#: Sources whose calls other than reads change how an account is watched or guarded:
#: category ``configuration``.
_CONFIGURATION_SOURCES = frozenset({
    "cloudtrail.amazonaws.com", "config.amazonaws.com", "guardduty.amazonaws.com",
    "securityhub.amazonaws.com", "access-analyzer.amazonaws.com", "macie2.amazonaws.com",
    "inspector2.amazonaws.com", "detective.amazonaws.com", "organizations.amazonaws.com",
    "kms.amazonaws.com", "logs.amazonaws.com", "bedrock.amazonaws.com",
})
#: EC2 / S3 calls that change network reachability or a bucket's exposure: ``configuration``.
_CONFIGURATION_NOUNS = ("SecurityGroup", "NetworkAcl", "Route", "FlowLogs", "InternetGateway",
                        "VpcPeering", "PublicAccessBlock", "BucketPolicy", "BucketAcl",
                        "BucketVersioning", "BucketLogging", "BucketEncryption", "SnapshotAttribute",
                        "ImageAttribute", "InstanceAttribute")
_OBJECT_CALLS = {"GetObject": "access", "PutObject": "creation", "CopyObject": "creation",
                 "DeleteObject": "deletion", "DeleteObjects": "deletion",
                 "CreateBucket": "creation", "DeleteBucket": "deletion"}
_READ_VERBS = ("Get", "List", "Describe", "Lookup", "Simulate", "Generate", "Head", "Search",
               "BatchGet")
_USER_NOUNS = ("User", "AccessKey", "LoginProfile", "MFADevice", "SSHPublicKey", "Password",
               "ServiceSpecificCredential", "SigningCertificate")


def _verb_type(name: str) -> str:
    if name.startswith(("Create", "Upload", "Import")):
        return "creation"
    if name.startswith("Delete"):
        return "deletion"
    if name.startswith(_READ_VERBS):
        return "info"
    return "change"


@lru_cache(maxsize=4096)
def categorize(source: str, name: str) -> tuple[list[str], list[str]] | None:
    """(``event.category``, ``event.type``) of a call, or None when the table has no entry.

    Sign-ins and session calls are ``authentication`` (``start``, ``info`` or ``end``); the
    calls of the identity services are ``iam``, typed ``user`` / ``group`` / ``admin`` (roles,
    policies, the account) and ``creation`` / ``deletion`` / ``info`` / ``change`` by verb;
    changes to the services that watch an account, to network reachability and to a
    bucket's exposure are ``configuration``; S3 object and bucket calls are ``file``.
    """
    kind = _AUTHENTICATION.get(name)
    if kind is not None:
        return ["authentication"], [kind]
    verb = _verb_type(name)
    if source in _IAM_SOURCES:
        subjects = [subject for subject, nouns in (("group", ("Group",)), ("user", _USER_NOUNS))
                    if any(noun in name for noun in nouns)]
        return ["iam"], [*(subjects or ["admin"]), verb]
    if source == "s3.amazonaws.com" and name in _OBJECT_CALLS:
        return ["file"], [_OBJECT_CALLS[name]]
    if verb == "info":
        return None
    if source in _CONFIGURATION_SOURCES or any(noun in name for noun in _CONFIGURATION_NOUNS):
        return ["configuration"], [verb]
    return None


_DIGITS = frozenset("0123456789")


@lru_cache(maxsize=4096)
def ip_text(text: str) -> str | None:
    """The canonical text of an IPv4 or IPv6 address (what every engine parses), else None.

    Addresses with a zone (``fe80::1%eth0``) are left out: the engines' ``ip`` type has none.
    """
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if getattr(address, "scope_id", None):
        return None
    return str(address)


#: How each kind of ``FIELDS`` is mapped (``keyword`` is given by the index module).
DATE_MAPPING = {"type": "date", "format": "strict_date_optional_time||epoch_millis"}


def mapping_properties(keyword: Mapping[str, Any]) -> dict[str, Any]:
    """The ECS part of the index mapping (``properties``), with ``keyword`` for keyword fields."""
    properties: dict[str, Any] = {}
    kinds = {"keyword": keyword, "ip": {"type": "ip"}, "date": DATE_MAPPING}
    fields: dict[str, Mapping[str, Any]] = {
        **{name: {"type": "alias", "path": path} for name, path in ALIASES.items()},
        **{name: kinds[kind] for name, kind in FIELDS.items()},
    }
    for name, field in fields.items():
        *parents, leaf = name.split(".")
        level = properties
        for parent in parents:
            level = level.setdefault(parent, {"properties": {}})["properties"]
        level[leaf] = dict(field)
    return properties
