"""Who acts in the generated trail: accounts, regions, people, roles, keys and their addresses."""
from __future__ import annotations

import random
import string
import uuid
from dataclasses import dataclass, field
from datetime import datetime

#: Account ids and names; the organisation uses the first ``accounts`` of them.
ACCOUNT_NAMES = (("210987654321", "management"), ("345678901234", "prod"), ("456789012345", "dev"),
                 ("567890123456", "security"), ("678901234567", "sandbox"), ("789012345678", "data"))
#: How busy each account is, in the same order.
ACCOUNT_WEIGHTS = (12, 45, 28, 6, 5, 4)
DEFAULT_REGIONS = ("us-east-1", "eu-west-1", "eu-central-1")
#: Where the people work from (documentation ranges: no real address is ever named).
OFFICE_ADDRESSES = ("203.0.113.10", "203.0.113.24", "203.0.113.57", "198.51.100.23")
CI_ADDRESS = "198.51.100.140"
#: The intruder's address: never seen before the intrusion.
INTRUDER_ADDRESS = "192.0.2.77"
PEOPLE = ("alice.martin", "bob.nguyen", "carol.diaz", "dan.okafor", "erin.walsh", "farid.haddad",
          "grace.lee", "hiro.tanaka")
SSO_ROLES = ("AdministratorAccess", "PowerUserAccess", "ReadOnlyAccess")
FUNCTIONS = ("orders-api", "invoice-renderer", "thumbnailer", "nightly-report", "audit-forwarder")
BUCKETS = ("assets", "uploads", "reports", "backups", "terraform-state")
USER_AGENTS = (
    "aws-cli/2.15.30 Python/3.11.8 Darwin/23.4.0 exe/x86_64 prompt/off",
    "Boto3/1.34.69 md/Botocore#1.34.69 ua/2.0 os/linux#6.1.79 md/arch#x86_64 lang/python#3.12.2",
    "aws-sdk-go-v2/1.26.1 os/linux lang/go#1.22.1 md/GOOS#linux md/GOARCH#amd64",
    "Terraform/1.7.5 (+https://www.terraform.io) terraform-provider-aws/5.43.0",
    "aws-sdk-java/2.25.16 Linux/5.10.213 OpenJDK_64-Bit_Server_VM/17.0.10+7-LTS Java/17.0.10",
)
CONSOLE_AGENT = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
                 "(KHTML, like Gecko) Chrome/123.0.0.0 Safari/537.36")


def token(rng: random.Random, length: int, alphabet: str = string.ascii_uppercase + string.digits) -> str:
    return "".join(rng.choice(alphabet) for _ in range(length))


def event_id(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class IamUser:
    account: str
    name: str
    principal_id: str
    access_key: str

    @property
    def arn(self) -> str:
        return f"arn:aws:iam::{self.account}:user/{self.name}"

    def identity(self, access_key: str | None = None) -> dict:
        return {"type": "IAMUser", "principalId": self.principal_id, "arn": self.arn,
                "accountId": self.account, "accessKeyId": access_key or self.access_key,
                "userName": self.name}


@dataclass(frozen=True)
class Role:
    account: str
    name: str
    role_id: str
    path: str = "/"

    @property
    def arn(self) -> str:
        return f"arn:aws:iam::{self.account}:role{self.path}{self.name}"

    def session(self, rng: random.Random, session_name: str, created: datetime, mfa: bool = False,
                invoked_by: str | None = None) -> dict:
        identity = {
            "type": "AssumedRole", "principalId": f"{self.role_id}:{session_name}",
            "arn": f"arn:aws:sts::{self.account}:assumed-role/{self.name}/{session_name}",
            "accountId": self.account, "accessKeyId": "ASIA" + token(rng, 16),
            "sessionContext": {
                "sessionIssuer": {"type": "Role", "principalId": self.role_id, "arn": self.arn,
                                  "accountId": self.account, "userName": self.name},
                "webIdFederationData": {},
                "attributes": {"creationDate": iso(created), "mfaAuthenticated": str(mfa).lower()},
            },
        }
        if invoked_by:
            identity["invokedBy"] = invoked_by
        return identity


@dataclass
class Organisation:
    """Everything the events refer to, made once from the seed."""
    org_id: str
    accounts: list[str]
    account_weights: list[int]
    names: dict[str, str]
    regions: list[str]
    users: dict[str, list[IamUser]] = field(default_factory=dict)
    sso_roles: dict[str, list[Role]] = field(default_factory=dict)
    function_roles: dict[str, list[Role]] = field(default_factory=dict)
    instance_roles: dict[str, Role] = field(default_factory=dict)
    kms_keys: dict[str, str] = field(default_factory=dict)
    instances: dict[str, list[str]] = field(default_factory=dict)
    images: dict[str, list[str]] = field(default_factory=dict)

    @property
    def home_region(self) -> str:
        """Where global services (IAM, STS, sign-in) log: us-east-1 when the trail covers it."""
        return "us-east-1" if "us-east-1" in self.regions else self.regions[0]

    @property
    def prod(self) -> str:
        return self.accounts[1] if len(self.accounts) > 1 else self.accounts[0]

    def bucket(self, account: str, name: str) -> str:
        return f"{self.names[account]}-{name}-{account[-4:]}"

    def ci_user(self, account: str) -> IamUser:
        return self.users[account][0]


def build(rng: random.Random, accounts: int, regions: list[str]) -> Organisation:
    chosen = ACCOUNT_NAMES[:accounts]
    org = Organisation(
        org_id="o-" + token(rng, 10, string.ascii_lowercase + string.digits),
        accounts=[a for a, _ in chosen], account_weights=list(ACCOUNT_WEIGHTS[:accounts]),
        names=dict(chosen), regions=regions)
    for account in org.accounts:
        org.users[account] = [
            IamUser(account, name, "AIDA" + token(rng, 17), "AKIA" + token(rng, 16))
            for name in ("ci-deploy", "legacy-backup", "monitoring-exporter")]
        org.sso_roles[account] = [
            Role(account, f"AWSReservedSSO_{role}_{token(rng, 16, '0123456789abcdef')}",
                 "AROA" + token(rng, 17), f"/aws-reserved/sso.amazonaws.com/{org.home_region}/")
            for role in SSO_ROLES]
        org.function_roles[account] = [Role(account, f"{function}-role", "AROA" + token(rng, 17))
                                       for function in FUNCTIONS]
        org.instance_roles[account] = Role(account, "app-server-instance", "AROA" + token(rng, 17))
        org.kms_keys[account] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        org.instances[account] = ["i-0" + token(rng, 16, "0123456789abcdef") for _ in range(12)]
        org.images[account] = ["ami-0" + token(rng, 16, "0123456789abcdef") for _ in range(3)]
    return org
