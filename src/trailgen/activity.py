"""The everyday events of the organisation: who calls what, with CloudTrail's event shapes.

Each kind of activity is a function ``(rng, org, when) -> event``; ``ACTIVITY`` weighs them.
None of them matches a starter rule but the failed console sign-in, as in a real trail.
"""
from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Callable

from trailgen.organisation import (BUCKETS, CI_ADDRESS, CONSOLE_AGENT, FUNCTIONS, OFFICE_ADDRESSES,
                                   PEOPLE, USER_AGENTS, IamUser, Organisation, event_id, iso, token)

#: The backup script on an old server, with the CLI its distribution shipped.
LEGACY_AGENT = "aws-cli/1.14.44 Python/3.6.9 Linux/4.15.0-1057-aws botocore/1.8.48"
LEGACY_ADDRESS = "198.51.100.23"

Event = dict
Activity = Callable[[random.Random, Organisation, datetime], Event]

#: Share of calls by people and CI that are refused.
ACCESS_DENIED_RATE = 0.03
#: AWS addresses Lambda functions and instances call from (example values, not real hosts).
AWS_ADDRESSES = ("3.250.18.44", "3.251.107.9", "34.240.77.131", "52.18.220.6")
HEX = "0123456789abcdef"


def api_call(rng: random.Random, when: datetime, account: str, region: str, identity: dict,
             source: str, name: str, address: str, agent: str, *, read_only: bool,
             request: dict | None = None, response: dict | None = None,
             extra: dict | None = None) -> Event:
    """An ``AwsApiCall`` as CloudTrail writes it (``null`` where CloudTrail writes null)."""
    service = source.split(".", 1)[0]
    event: Event = {
        "eventVersion": "1.09", "userIdentity": identity, "eventTime": iso(when),
        "eventSource": source, "eventName": name, "awsRegion": region,
        "sourceIPAddress": address, "userAgent": agent,
        "requestParameters": request, "responseElements": response,
        "requestID": event_id(rng), "eventID": event_id(rng), "readOnly": read_only,
        "eventType": "AwsApiCall", "managementEvent": True, "recipientAccountId": account,
        "eventCategory": "Management",
    }
    if not address.endswith("amazonaws.com"):
        event["tlsDetails"] = {"tlsVersion": "TLSv1.3", "cipherSuite": "TLS_AES_128_GCM_SHA256",
                               "clientProvidedHostHeader": f"{service}.{region}.amazonaws.com"}
    event.update(extra or {})
    return event


def refused(rng: random.Random, event: Event) -> Event:
    """The same call, denied: an error code and message, no response."""
    who = event["userIdentity"].get("arn", "")
    action = f"{event['eventSource'].split('.', 1)[0]}:{event['eventName']}"
    if event["eventSource"] == "ec2.amazonaws.com":
        event["errorCode"] = "Client.UnauthorizedOperation"
        event["errorMessage"] = ("You are not authorized to perform this operation. Encoded "
                                 "authorization failure message: " + token(rng, 60))
    else:
        event["errorCode"] = "AccessDenied"
        event["errorMessage"] = (f"User: {who} is not authorized to perform: {action} because no "
                                 "identity-based policy allows the action")
    event["responseElements"] = None
    return event


def account_of(rng: random.Random, org: Organisation) -> str:
    return rng.choices(org.accounts, org.account_weights)[0]


def region_of(rng: random.Random, org: Organisation) -> str:
    weights = [8 if region == org.home_region else 2 for region in org.regions]
    return rng.choices(org.regions, weights)[0]


def person(rng: random.Random, org: Organisation, account: str, when: datetime) -> tuple[dict, str, str]:
    """(identity, address, user agent) of someone signed in through Identity Center."""
    name = rng.choice(PEOPLE)
    role = rng.choice(org.sso_roles[account])
    identity = role.session(rng, f"{name}@example.com", when - timedelta(minutes=rng.randint(1, 600)))
    console = rng.random() < 0.4
    if console:
        identity["sessionCredentialFromConsole"] = "true"
    agent = CONSOLE_AGENT if console else rng.choice(USER_AGENTS)
    return identity, rng.choice(OFFICE_ADDRESSES), agent


def function(rng: random.Random, org: Organisation, account: str, when: datetime) -> tuple[dict, str, str]:
    role = rng.choice(org.function_roles[account])
    identity = role.session(rng, role.name.removesuffix("-role"), when - timedelta(minutes=5))
    return identity, rng.choice(AWS_ADDRESSES), USER_AGENTS[1]


def caller(rng: random.Random, org: Organisation, account: str,
           when: datetime) -> tuple[dict, str, str, bool]:
    """A person, CI or a function; the last item says whether the call may be refused."""
    draw = rng.random()
    if draw < 0.45:
        return (*person(rng, org, account, when), True)
    if draw < 0.57:
        return org.ci_user(account).identity(), CI_ADDRESS, USER_AGENTS[3], True
    if draw < 0.6:
        return org.users[account][1].identity(), LEGACY_ADDRESS, LEGACY_AGENT, True
    return (*function(rng, org, account, when), False)


def maybe_refused(rng: random.Random, event: Event, may: bool) -> Event:
    return refused(rng, event) if may and rng.random() < ACCESS_DENIED_RATE else event


# -- S3 data events --------------------------------------------------------------------------

def s3_object(rng: random.Random, org: Organisation, when: datetime) -> Event:
    account, region = account_of(rng, org), region_of(rng, org)
    identity, address, agent = function(rng, org, account, when)
    bucket = org.bucket(account, rng.choice(BUCKETS))
    key = f"{rng.choice(('in', 'out', 'tmp', 'reports/2025'))}/{token(rng, 12, HEX)}.json"
    name = rng.choices(("GetObject", "PutObject", "HeadObject", "DeleteObject"), (50, 30, 15, 5))[0]
    size = float(rng.randint(200, 2_000_000))
    event = api_call(
        rng, when, account, region, identity, "s3.amazonaws.com", name, address, agent,
        read_only=name in ("GetObject", "HeadObject"),
        request={"bucketName": bucket, "Host": f"{bucket}.s3.{region}.amazonaws.com", "key": key},
        response={"x-amz-server-side-encryption": "aws:kms"} if name == "PutObject" else None,
        extra={"additionalEventData": {
            "SignatureVersion": "SigV4", "CipherSuite": "TLS_AES_128_GCM_SHA256",
            "bytesTransferredIn": size if name == "PutObject" else 0.0,
            "bytesTransferredOut": size if name == "GetObject" else 0.0,
            "AuthenticationMethod": "AuthHeader", "x-amz-id-2": token(rng, 40)},
            "resources": [
                {"type": "AWS::S3::Object", "ARN": f"arn:aws:s3:::{bucket}/{key}"},
                {"accountId": account, "type": "AWS::S3::Bucket", "ARN": f"arn:aws:s3:::{bucket}"}],
            "managementEvent": False, "eventCategory": "Data"})
    return event


# -- EC2 -------------------------------------------------------------------------------------

def ec2_describe(rng: random.Random, org: Organisation, when: datetime) -> Event:
    account, region = account_of(rng, org), region_of(rng, org)
    identity, address, agent, may = caller(rng, org, account, when)
    name = rng.choice(("DescribeInstances", "DescribeSecurityGroups", "DescribeVolumes",
                       "DescribeSubnets", "DescribeInstanceStatus"))
    request: dict | None = None
    if rng.random() < 0.5:
        request = {"filterSet": {"items": [{"name": "tag:team", "valueSet": {"items": [
            {"value": rng.choice(("payments", "platform", "data"))}]}}]}, "maxResults": 100}
    event = api_call(rng, when, account, region, identity, "ec2.amazonaws.com", name, address,
                     agent, read_only=True, request=request)
    return maybe_refused(rng, event, may)


def ec2_run_instances(rng: random.Random, org: Organisation, when: datetime) -> Event:
    account, region = account_of(rng, org), region_of(rng, org)
    identity, address, agent = org.ci_user(account).identity(), CI_ADDRESS, USER_AGENTS[3]
    instance = "i-0" + token(rng, 16, HEX)
    subnet = "subnet-0" + token(rng, 16, HEX)
    image = rng.choice(org.images[account])
    instance_type = rng.choice(("t3.micro", "m6i.large", "c7g.xlarge"))
    private_ip = f"10.0.{rng.randint(0, 255)}.{rng.randint(4, 250)}"
    request: dict = {
        "instancesSet": {"items": [{"imageId": image, "minCount": 1, "maxCount": 1}]},
        "instanceType": instance_type,
        "blockDeviceMapping": {}, "monitoring": {"enabled": False}, "disableApiTermination": False,
        "subnetId": subnet, "iamInstanceProfile": {"name": "app-server-instance"},
        "tagSpecificationSet": {"items": [{"resourceType": "instance", "tags": [
            {"key": "team", "value": rng.choice(("payments", "platform", "data"))}]}]},
    }
    response = {
        "requestId": event_id(rng), "reservationId": "r-0" + token(rng, 16, HEX), "ownerId": account,
        "groupSet": {},
        "instancesSet": {"items": [{
            "instanceId": instance, "imageId": image,
            "instanceState": {"code": 0, "name": "pending"}, "privateDnsName": "",
            "amiLaunchIndex": 0, "productCodes": {}, "instanceType": instance_type,
            "launchTime": int(when.timestamp() * 1000),
            "placement": {"availabilityZone": f"{region}a", "tenancy": "default"},
            "monitoring": {"state": "disabled"}, "subnetId": subnet,
            "vpcId": "vpc-0" + token(rng, 16, HEX), "privateIpAddress": private_ip,
            "stateReason": {"code": "pending", "message": "pending"}, "architecture": "x86_64",
            "rootDeviceType": "ebs", "rootDeviceName": "/dev/xvda", "blockDeviceMapping": {},
            "virtualizationType": "hvm", "hypervisor": "xen",
            "networkInterfaceSet": {"items": [{
                "networkInterfaceId": "eni-0" + token(rng, 16, HEX), "subnetId": subnet,
                "status": "in-use", "sourceDestCheck": True,
                "groupSet": {"items": [{"groupId": "sg-0" + token(rng, 16, HEX), "groupName": "app"}]},
                "attachment": {"attachmentId": "eni-attach-0" + token(rng, 16, HEX), "deviceIndex": 0,
                               "status": "attaching", "attachTime": int(when.timestamp() * 1000),
                               "deleteOnTermination": True},
                "privateIpAddressesSet": {"item": [{"privateIpAddress": "10.0.1.17", "primary": True}]},
                "ipv6AddressesSet": {}, "tagSet": {}}]},
            "capacityReservationSpecification": {"capacityReservationPreference": "open"},
            "metadataOptions": {"state": "pending", "httpTokens": "required", "httpPutResponseHopLimit": 2,
                                "httpEndpoint": "enabled"},
        }]},
    }
    return api_call(rng, when, account, region, identity, "ec2.amazonaws.com", "RunInstances",
                    address, agent, read_only=False, request=request, response=response)


def ec2_tags_and_rules(rng: random.Random, org: Organisation, when: datetime) -> Event:
    account, region = account_of(rng, org), region_of(rng, org)
    identity, address, agent, may = caller(rng, org, account, when)
    draw = rng.random()
    if draw < 0.25:
        instance, stop = rng.choice(org.instances[account]), rng.random() < 0.5
        states = [{"code": 16, "name": "running"}, {"code": 64, "name": "stopping"}]
        if not stop:
            states = [{"code": 80, "name": "stopped"}, {"code": 0, "name": "pending"}]
        event = api_call(
            rng, when, account, region, identity, "ec2.amazonaws.com",
            "StopInstances" if stop else "StartInstances", address, agent, read_only=False,
            request={"instancesSet": {"items": [{"instanceId": instance}]}, "force": False} if stop
            else {"instancesSet": {"items": [{"instanceId": instance}]}},
            response={"requestId": event_id(rng), "instancesSet": {"items": [{
                "instanceId": instance, "previousState": states[0], "currentState": states[1]}]}})
    elif draw < 0.35:
        event = api_call(
            rng, when, account, region, identity, "ec2.amazonaws.com", "DeleteSecurityGroup", address,
            agent, read_only=False, request={"groupId": "sg-0" + token(rng, 16, HEX)},
            response={"requestId": event_id(rng), "_return": True})
    elif draw < 0.7:
        event = api_call(
            rng, when, account, region, identity, "ec2.amazonaws.com", "CreateTags", address, agent,
            read_only=False,
            request={"resourcesSet": {"items": [{"resourceId": rng.choice(org.instances[account])}]},
                     "tagSet": {"items": [{"key": "owner", "value": rng.choice(PEOPLE)}]}},
            response={"requestId": event_id(rng), "_return": True})
    else:
        event = api_call(
            rng, when, account, region, identity, "ec2.amazonaws.com",
            "AuthorizeSecurityGroupIngress", address, agent, read_only=False,
            request={"groupId": "sg-0" + token(rng, 16, HEX), "ipPermissions": {"items": [{
                "ipProtocol": "tcp", "fromPort": 443, "toPort": 443, "groups": {},
                "ipRanges": {"items": [{"cidrIp": "10.0.0.0/16", "description": "internal"}]},
                "ipv6Ranges": {}, "prefixListIds": {}}]}},
            response={"requestId": event_id(rng), "_return": True, "securityGroupRuleSet": {"items": [
                {"securityGroupRuleId": "sgr-0" + token(rng, 16, HEX), "isEgress": False,
                 "cidrIpv4": "10.0.0.0/16"}]}})
    return maybe_refused(rng, event, may)


# -- IAM, STS, KMS, Lambda, CloudTrail -------------------------------------------------------

def iam_read(rng: random.Random, org: Organisation, when: datetime) -> Event:
    account = account_of(rng, org)
    identity, address, agent, may = caller(rng, org, account, when)
    name = rng.choice(("ListRoles", "GetRole", "ListUsers", "GetPolicy", "ListAttachedRolePolicies",
                       "GetAccountAuthorizationDetails"))
    request = None
    if name in ("GetRole", "ListAttachedRolePolicies"):
        request = {"roleName": rng.choice(org.function_roles[account]).name}
    elif name == "GetPolicy":
        request = {"policyArn": "arn:aws:iam::aws:policy/ReadOnlyAccess"}
    event = api_call(rng, when, account, org.home_region, identity, "iam.amazonaws.com", name,
                     address, agent, read_only=True, request=request)
    return maybe_refused(rng, event, may)


def iam_write(rng: random.Random, org: Organisation, when: datetime) -> Event:
    account = account_of(rng, org)
    identity, address, agent = org.ci_user(account).identity(), CI_ADDRESS, USER_AGENTS[3]
    role = rng.choice(org.function_roles[account])
    if rng.random() < 0.5:
        name, request = "PutRolePolicy", {
            "roleName": role.name, "policyName": "app-access",
            "policyDocument": ('{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":'
                               '["s3:GetObject","s3:PutObject"],"Resource":"arn:aws:s3:::'
                               + org.bucket(account, "uploads") + '/*"}]}')}
    else:
        name, request = "AttachRolePolicy", {
            "roleName": role.name,
            "policyArn": "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"}
    return api_call(rng, when, account, org.home_region, identity, "iam.amazonaws.com", name,
                    address, agent, read_only=False, request=request)


def sts_assume_role(rng: random.Random, org: Organisation, when: datetime) -> Event:
    account, region = account_of(rng, org), region_of(rng, org)
    role = rng.choice(org.function_roles[account])
    session = role.name.removesuffix("-role")
    return api_call(
        rng, when, account, region, {"type": "AWSService", "invokedBy": "lambda.amazonaws.com"},
        "sts.amazonaws.com", "AssumeRole", "lambda.amazonaws.com", "lambda.amazonaws.com",
        read_only=True, request={"roleArn": role.arn, "roleSessionName": session},
        response={"credentials": {"accessKeyId": "ASIA" + token(rng, 16),
                                  "sessionToken": "IQoJb3JpZ2luX2VjE" + token(rng, 60),
                                  "expiration": when.strftime("%b %d, %Y, %I:%M:%S %p")},
                  "assumedRoleUser": {"assumedRoleId": f"{role.role_id}:{session}",
                                      "arn": f"arn:aws:sts::{account}:assumed-role/{role.name}/{session}"}},
        extra={"resources": [{"accountId": account, "type": "AWS::IAM::Role", "ARN": role.arn}],
               "sharedEventID": event_id(rng)})


def sts_caller_identity(rng: random.Random, org: Organisation, when: datetime) -> Event:
    account, region = account_of(rng, org), region_of(rng, org)
    identity, address, agent, _ = caller(rng, org, account, when)
    return api_call(rng, when, account, region, identity, "sts.amazonaws.com", "GetCallerIdentity",
                    address, agent, read_only=True)


def kms_crypto(rng: random.Random, org: Organisation, when: datetime) -> Event:
    """Data keys for S3 objects (on a function's behalf) and for the trail's own files (CloudTrail)."""
    account, region = account_of(rng, org), region_of(rng, org)
    key_arn = f"arn:aws:kms:{region}:{account}:key/{org.kms_keys[account]}"
    name = rng.choice(("Decrypt", "GenerateDataKey"))
    if rng.random() < 0.4:
        trail = f"arn:aws:cloudtrail:{org.home_region}:{org.accounts[0]}:trail/org-trail"
        return api_call(rng, when, account, region,
                        {"type": "AWSService", "invokedBy": "cloudtrail.amazonaws.com"},
                        "kms.amazonaws.com", "GenerateDataKey", "cloudtrail.amazonaws.com",
                        "cloudtrail.amazonaws.com", read_only=True,
                        request={"keyId": key_arn, "keySpec": "AES_256",
                                 "encryptionContext": {"aws:cloudtrail:arn": trail}},
                        extra={"resources": [{"accountId": account, "type": "AWS::KMS::Key",
                                              "ARN": key_arn}]})
    bucket = org.bucket(account, rng.choice(BUCKETS))
    role = rng.choice(org.function_roles[account])
    identity = role.session(rng, role.name.removesuffix("-role"), when, invoked_by="s3.amazonaws.com")
    request: dict = {"encryptionContext": {"aws:s3:arn": f"arn:aws:s3:::{bucket}"},
                     "encryptionAlgorithm": "SYMMETRIC_DEFAULT"}
    if name == "GenerateDataKey":
        request = {"keyId": key_arn, "keySpec": "AES_256", **request}
    return api_call(rng, when, account, region, identity, "kms.amazonaws.com", name,
                    "s3.amazonaws.com", "s3.amazonaws.com", read_only=True, request=request,
                    extra={"resources": [{"accountId": account, "type": "AWS::KMS::Key",
                                          "ARN": key_arn}]})


def kms_rotation(rng: random.Random, org: Organisation, when: datetime) -> Event:
    """A service event: AWS acted, no caller."""
    account, region = account_of(rng, org), region_of(rng, org)
    key_arn = f"arn:aws:kms:{region}:{account}:key/{org.kms_keys[account]}"
    event = api_call(rng, when, account, region, {"accountId": account, "invokedBy": "kms.amazonaws.com"},
                     "kms.amazonaws.com", "RotateKey", "kms.amazonaws.com", "kms.amazonaws.com",
                     read_only=False, request=None, response=None,
                     extra={"eventType": "AwsServiceEvent",
                            "resources": [{"accountId": account, "type": "AWS::KMS::Key", "ARN": key_arn}],
                            "additionalEventData": {"keyId": key_arn}})
    for name in ("userAgent", "requestParameters", "responseElements", "readOnly"):
        del event[name]
    return event


def lambda_calls(rng: random.Random, org: Organisation, when: datetime) -> Event:
    account, region = account_of(rng, org), region_of(rng, org)
    identity, address, agent, may = caller(rng, org, account, when)
    function_name = rng.choice(FUNCTIONS)
    name = rng.choice(("ListFunctions20150331", "GetFunction20150331v2", "UpdateFunctionCode20150331v2"))
    request: dict | None = None if name.startswith("List") else {"functionName": function_name}
    response: dict | None = None
    if name.startswith("Update"):
        request = {"functionName": function_name, "publish": True,
                   "s3Bucket": org.bucket(account, "assets"), "s3Key": f"lambda/{function_name}.zip"}
        response = {"functionName": function_name, "runtime": "python3.12",
                    "functionArn": f"arn:aws:lambda:{region}:{account}:function:{function_name}",
                    "codeSize": rng.randint(10_000, 9_000_000), "version": str(rng.randint(2, 80)),
                    "tracingConfig": {"mode": "PassThrough"}, "state": "Active",
                    "lastUpdateStatus": "InProgress", "architectures": ["arm64"],
                    "environment": {}, "snapStart": {"applyOn": "None", "optimizationStatus": "Off"}}
    event = api_call(rng, when, account, region, identity, "lambda.amazonaws.com", name, address,
                     agent, read_only=not name.startswith("Update"), request=request,
                     response=response)
    return maybe_refused(rng, event, may)


def cloudtrail_read(rng: random.Random, org: Organisation, when: datetime) -> Event:
    account, region = account_of(rng, org), region_of(rng, org)
    identity, address, agent, may = caller(rng, org, account, when)
    name = rng.choice(("DescribeTrails", "GetTrailStatus", "LookupEvents", "ListTrails"))
    request = {"name": f"arn:aws:cloudtrail:{org.home_region}:{org.accounts[0]}:trail/org-trail"} \
        if name == "GetTrailStatus" else None
    event = api_call(rng, when, account, region, identity, "cloudtrail.amazonaws.com", name,
                     address, agent, read_only=True, request=request)
    return maybe_refused(rng, event, may)


# -- Sign-in and Identity Center --------------------------------------------------------------

def sso_activity(rng: random.Random, org: Organisation, when: datetime) -> Event:
    account = account_of(rng, org)
    name = rng.choice(PEOPLE)
    identity = {"type": "Unknown", "principalId": f"{org.accounts[0]}:{name}@example.com",
                "accountId": org.accounts[0], "userName": f"{name}@example.com",
                "onBehalfOf": {"userId": token(rng, 8, HEX) + "-" + token(rng, 4, HEX),
                               "identityStoreArn": "arn:aws:identitystore::" + org.accounts[0]
                               + ":identitystore/d-" + token(rng, 10, HEX)}}
    call = rng.choice(("Federate", "GetRoleCredentials", "ListAccounts", "ListAccountRoles"))
    request = {"accountId": account, "roleName": rng.choice(org.sso_roles[account]).name} \
        if call in ("Federate", "GetRoleCredentials") else None
    event = api_call(rng, when, org.accounts[0], org.home_region, identity, "sso.amazonaws.com",
                     call, rng.choice(OFFICE_ADDRESSES), CONSOLE_AGENT, read_only=call.startswith("List"),
                     request=request)
    event["serviceEventDetails"] = None
    return event


def console_login(rng: random.Random, org: Organisation, when: datetime) -> Event:
    """A person's console sign-in: federated through Identity Center, or an IAM user with MFA;
    now and then a mistyped password."""
    account = account_of(rng, org)
    if rng.random() < 0.7:
        role = rng.choice(org.sso_roles[account])
        identity = role.session(rng, f"{rng.choice(PEOPLE)}@example.com", when)
        del identity["accessKeyId"]
        extra: dict = {"LoginTo": "https://console.aws.amazon.com/console/home", "MobileVersion": "No",
                       "MFAUsed": "No", "SamlProviderArn": None}
        outcome = "Success"
    else:
        user: IamUser = rng.choice(org.users[account][1:])
        identity = user.identity()
        del identity["accessKeyId"]
        outcome = "Failure" if rng.random() < 0.002 else "Success"
        extra = {"LoginTo": "https://console.aws.amazon.com/console/home", "MobileVersion": "No",
                 "MFAIdentifier": f"arn:aws:iam::{account}:mfa/{user.name}", "MFAUsed": "Yes"}
    event = api_call(rng, when, account, org.home_region, identity, "signin.amazonaws.com",
                     "ConsoleLogin", rng.choice(OFFICE_ADDRESSES), CONSOLE_AGENT, read_only=False,
                     request=None, response={"ConsoleLogin": outcome},
                     extra={"additionalEventData": extra})
    if outcome == "Failure":
        event["errorMessage"] = "Failed authentication"
    del event["tlsDetails"]
    return event


#: (weight, activity): roughly the mix of a small organisation's trail with S3 data events on.
ACTIVITY: tuple[tuple[int, Activity], ...] = (
    (30, s3_object), (14, ec2_describe), (2, ec2_run_instances), (3, ec2_tags_and_rules),
    (9, iam_read), (1, iam_write), (10, sts_assume_role), (4, sts_caller_identity),
    (12, kms_crypto), (1, kms_rotation), (5, lambda_calls), (3, cloudtrail_read),
    (4, sso_activity), (2, console_login),
)
