"""The planted intrusion: a leaked CI access key used from an address never seen before.

The intruder looks around with the leaked key, makes a user of their own with an admin policy,
a key and a password, signs in to the console without MFA, opens a security group to the world,
shares a disk snapshot with everyone, then covers their tracks: stops a trail, deletes the VPC's
flow logs and a log group. ``plant`` returns the events, each with the starter rule (file name in
``rules/``) that must find it, or None.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from trailgen.activity import HEX, api_call, refused
from trailgen.organisation import INTRUDER_ADDRESS, IamUser, Organisation, event_id, iso, token

AGENT = ("aws-cli/2.13.0 Python/3.11.4 Linux/6.3.0-kali1-amd64 exe/x86_64.kali.2023 "
         "prompt/off command/{command}")
NEW_USER = "support-backup"


@dataclass(frozen=True)
class Planted:
    event: dict
    step: str
    rule: str | None

    def entry(self) -> dict:
        return {"eventID": self.event["eventID"], "eventTime": self.event["eventTime"],
                "eventName": self.event["eventName"], "account": self.event["recipientAccountId"],
                "accessKeyId": self.event["userIdentity"].get("accessKeyId"),
                "step": self.step, "rule": self.rule}


def plant(rng: random.Random, org: Organisation, start: datetime) -> tuple[list[Planted], dict]:
    """The intrusion's events from ``start``, in time order, and its summary for the manifest."""
    account, home = org.prod, org.home_region
    ec2_region = "eu-west-1" if "eu-west-1" in org.regions else org.regions[-1]
    leaked = org.ci_user(account)
    new_user = IamUser(account, NEW_USER, "AIDA" + token(rng, 17), "AKIA" + token(rng, 16))
    events: list[Planted] = []

    def call(seconds: int, user: IamUser, source: str, name: str, command: str, *, region: str = home,
             read_only: bool = False, request: dict | None = None, response: dict | None = None,
             step: str, rule: str | None = None, denied: bool = False) -> dict:
        event = api_call(rng, start + timedelta(seconds=seconds), account, region, user.identity(),
                         source, name, INTRUDER_ADDRESS, AGENT.format(command=command),
                         read_only=read_only, request=request, response=response)
        if denied:
            refused(rng, event)
        events.append(Planted(event, step, rule))
        return event

    recon = "leaked key used from an unusual address"
    call(0, leaked, "sts.amazonaws.com", "GetCallerIdentity", "sts.get-caller-identity",
         read_only=True, step=recon)
    call(21, leaked, "s3.amazonaws.com", "ListBuckets", "s3.ls", read_only=True,
         request={"Host": "s3.amazonaws.com"}, step=recon)
    call(48, leaked, "ec2.amazonaws.com", "DescribeInstances", "ec2.describe-instances",
         region=ec2_region, read_only=True, step=recon)
    call(75, leaked, "iam.amazonaws.com", "ListUsers", "iam.list-users", read_only=True, step=recon)
    call(96, leaked, "kms.amazonaws.com", "ListKeys", "kms.list-keys", read_only=True, step=recon,
         denied=True)
    call(118, leaked, "secretsmanager.amazonaws.com", "ListSecrets", "secretsmanager.list-secrets",
         read_only=True, step=recon, denied=True)
    call(301, leaked, "iam.amazonaws.com", "CreateUser", "iam.create-user",
         request={"userName": NEW_USER},
         response={"user": {"path": "/", "userName": NEW_USER, "userId": new_user.principal_id,
                            "arn": new_user.arn, "createDate": _aws_date(start, 301)}},
         step="a new user", rule="iam_user_created")
    call(324, leaked, "iam.amazonaws.com", "AttachUserPolicy", "iam.attach-user-policy",
         request={"userName": NEW_USER, "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"},
         step="admin policy attached", rule="iam_admin_policy_attached")
    call(349, leaked, "iam.amazonaws.com", "CreateAccessKey", "iam.create-access-key",
         request={"userName": NEW_USER},
         response={"accessKey": {"userName": NEW_USER, "accessKeyId": new_user.access_key,
                                 "status": "Active", "createDate": _aws_date(start, 349)}},
         step="a new access key", rule="iam_access_key_created")
    call(371, leaked, "iam.amazonaws.com", "CreateLoginProfile", "iam.create-login-profile",
         request={"userName": NEW_USER, "passwordResetRequired": False},
         response={"loginProfile": {"userName": NEW_USER, "createDate": _aws_date(start, 371),
                                    "passwordResetRequired": False}},
         step="a console password for the new user", rule="iam_console_password_set")
    events.append(Planted(_console_login(rng, org, new_user, start + timedelta(seconds=612)),
                          "console sign-in without MFA", "console_login_without_mfa"))
    group = "sg-0" + token(rng, 16, HEX)
    call(905, new_user, "ec2.amazonaws.com", "AuthorizeSecurityGroupIngress",
         "ec2.authorize-security-group-ingress", region=ec2_region,
         request={"groupId": group, "ipPermissions": {"items": [{
             "ipProtocol": "tcp", "fromPort": 22, "toPort": 22, "groups": {},
             "ipRanges": {"items": [{"cidrIp": "0.0.0.0/0"}]}, "ipv6Ranges": {},
             "prefixListIds": {}}]}},
         response={"requestId": event_id(rng), "_return": True},
         step="security group opened to the world", rule="ec2_security_group_open_to_world")
    snapshot = "snap-0" + token(rng, 16, HEX)
    call(1010, new_user, "ec2.amazonaws.com", "CreateSnapshot", "ec2.create-snapshot",
         region=ec2_region, request={"volumeId": "vol-0" + token(rng, 16, HEX)},
         response={"requestId": event_id(rng), "snapshotId": snapshot, "status": "pending",
                   "startTime": int((start + timedelta(seconds=1010)).timestamp() * 1000)},
         step="a snapshot of a production disk")
    call(1207, new_user, "ec2.amazonaws.com", "ModifySnapshotAttribute",
         "ec2.modify-snapshot-attribute", region=ec2_region,
         request={"snapshotId": snapshot, "attributeType": "CREATE_VOLUME_PERMISSION",
                  "createVolumePermission": {"add": {"items": [{"group": "all"}]}}},
         response={"requestId": event_id(rng), "_return": True},
         step="snapshot shared with everyone", rule="ec2_snapshot_or_image_made_public")
    call(1530, new_user, "cloudtrail.amazonaws.com", "StopLogging", "cloudtrail.stop-logging",
         request={"name": f"arn:aws:cloudtrail:{home}:{account}:trail/{org.names[account]}-audit"},
         step="CloudTrail stopped", rule="cloudtrail_logging_stopped")
    call(1561, new_user, "ec2.amazonaws.com", "DeleteFlowLogs", "ec2.delete-flow-logs",
         region=ec2_region,
         request={"DeleteFlowLogsRequest": {"FlowLogId": {"tag": 1,
                                                          "content": "fl-0" + token(rng, 16, HEX)}}},
         response={"DeleteFlowLogsResponse": {"xmlns": "http://ec2.amazonaws.com/doc/2016-11-15/",
                                              "requestId": event_id(rng), "unsuccessful": ""}},
         step="VPC flow logs deleted", rule="vpc_flow_logs_deleted")
    call(1594, new_user, "logs.amazonaws.com", "DeleteLogGroup", "logs.delete-log-group",
         request={"logGroupName": "/aws/lambda/audit-forwarder"},
         step="a log group deleted", rule="cloudwatch_log_group_deleted")
    summary = {"account": account, "source_ip": INTRUDER_ADDRESS,
               "leaked_access_key": leaked.access_key, "leaked_user": leaked.arn,
               "new_user": new_user.arn, "new_access_key": new_user.access_key,
               "start": iso(start), "end": iso(start + timedelta(seconds=1594))}
    return events, summary


def _aws_date(start: datetime, seconds: int) -> str:
    return (start + timedelta(seconds=seconds)).strftime("%b %d, %Y %I:%M:%S %p")


def _console_login(rng: random.Random, org: Organisation, user: IamUser, when: datetime) -> dict:
    identity = user.identity()
    del identity["accessKeyId"]
    event = api_call(rng, when, user.account, org.home_region, identity, "signin.amazonaws.com",
                     "ConsoleLogin", INTRUDER_ADDRESS,
                     "Mozilla/5.0 (X11; Linux x86_64; rv:109.0) Gecko/20100101 Firefox/115.0",
                     read_only=False, request=None, response={"ConsoleLogin": "Success"},
                     extra={"additionalEventData": {
                         "LoginTo": "https://console.aws.amazon.com/console/home",
                         "MobileVersion": "No", "MFAUsed": "No"}})
    del event["tlsDetails"]
    return event


def insights(rng: random.Random, org: Organisation, start: datetime, account: str) -> list[dict]:
    """The Insights pair CloudTrail writes when IAM write calls jump above their baseline."""
    shared = event_id(rng)
    pair = []
    for state, minutes in (("Start", 5), ("End", 10)):
        details: dict = {"state": state, "eventSource": "iam.amazonaws.com",
                         "eventName": "CreateUser", "insightType": "ApiCallRateInsight",
                         "insightContext": {"statistics": {
                             "baseline": {"average": 0.0001}, "insight": {"average": 1.0},
                             "insightDuration": 1, "baselineDuration": 10080}}}
        if state == "End":
            details["insightContext"]["attributions"] = [{
                "attribute": "userIdentityArn",
                "insight": [{"value": org.ci_user(account).arn, "average": 1.0}],
                "baseline": [{"value": org.ci_user(account).arn, "average": 0.0001}]}]
        pair.append({"eventVersion": "1.08", "eventTime": iso(start + timedelta(minutes=minutes)),
                     "awsRegion": org.home_region, "eventID": event_id(rng),
                     "eventType": "AwsCloudTrailInsight", "recipientAccountId": account,
                     "sharedEventID": shared, "insightDetails": details,
                     "eventCategory": "Insight"})
    return pair
