"""Hypothesis strategies for CloudTrail-shaped events with hostile keys and values."""
from hypothesis import strategies as st

HOSTILE_WORDS = ["", ".", "a.b", "%", "%2E", " ", "\t", "_id", "_source", "\udc80", "x\ud800y",
                 "\x00\x1f\x7f", "\u2028", "é", "🦀", '"', "\\", "eventID", "Records", "{", "]"]
surrogates = st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=2)
hostile_text = st.one_of(st.text(max_size=12), st.sampled_from(HOSTILE_WORDS), surrogates,
                         st.builds(lambda c, n: c * n, st.sampled_from(["a", "é", "\\", '"']),
                                   st.integers(100, 1500)))
keys = st.one_of(st.sampled_from(["a", "b", "instanceId", "tagSet", "items", "value", "key"]),
                 hostile_text)
scalars = st.one_of(
    st.none(), st.booleans(), hostile_text,
    st.integers(), st.integers(-(2 ** 80), 2 ** 80), st.sampled_from([2 ** 63, 2 ** 64, -(2 ** 63) - 1]),
    st.floats(), st.sampled_from([1e16, 1e-5, -0.0, 70.0, 1648282488.418]),
)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=16)


def deep(depth, leaf="deep"):
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


identity = st.fixed_dictionaries({}, optional={
    "type": scalars, "principalId": hostile_text, "arn": hostile_text, "accountId": scalars,
    "userName": json_values, "extra.key": json_values, "accessKeyId": scalars, "invokedBy": scalars,
    "onBehalfOf": json_values, "inScopeOf": json_values,
    "sessionContext": st.fixed_dictionaries({}, optional={
        "attributes": st.dictionaries(st.sampled_from(["creationDate", "mfaAuthenticated", "x"]),
                                      scalars),
        "sessionIssuer": json_values, "webIdFederationData": json_values, "assumedRoot": scalars}),
})
#: Source addresses: addresses (ECS's source.ip), service names and hostile text.
source_addresses = st.one_of(st.ip_addresses().map(str), st.just("fe80::1%eth0"),
                             st.sampled_from(["ec2.amazonaws.com", "AWS Internal"]), hostile_text)
#: Shapes the ECS outcome looks at: a failed sign-in, an error code, an Insights event.
sign_in = st.fixed_dictionaries({"eventName": st.just("ConsoleLogin"), "responseElements": st.fixed_dictionaries(
    {"ConsoleLogin": st.sampled_from(["Failure", "Success"])})})
event_ids = st.one_of(st.uuids().map(str), st.just(""), st.integers(), hostile_text,
                      st.builds(lambda n: "i" * n, st.integers(100, 700)),
                      st.builds(lambda n: "é" * n, st.integers(200, 300)))
events = st.fixed_dictionaries(
    {"eventVersion": st.just("1.08"), "eventName": hostile_text},
    optional={
        "eventID": event_ids, "eventTime": st.one_of(st.just("2024-01-15T10:00:00Z"), json_values),
        "eventSource": scalars, "awsRegion": st.lists(scalars, max_size=3), "userIdentity": st.one_of(
            identity, json_values),
        "requestParameters": json_values, "responseElements": json_values,
        "resources": st.lists(st.dictionaries(keys, json_values, max_size=3), max_size=3),
        "tlsDetails": json_values, "readOnly": scalars, "addendum": json_values,
        "sourceIPAddress": source_addresses, "userAgent": scalars, "errorMessage": scalars,
        "errorCode": st.one_of(st.just("AccessDenied"), st.just(""), scalars),
        "recipientAccountId": scalars, "sharedEventID": scalars,
        "eventType": st.one_of(st.sampled_from(["AwsApiCall", "AwsCloudTrailInsight"]), scalars),
        "insightDetails": st.one_of(json_values, st.fixed_dictionaries({}, optional={
            "state": scalars, "errorCode": scalars, "insightContext": json_values, "attributions": json_values})),
    },
).flatmap(lambda base: st.one_of(st.just({}), sign_in).map(lambda shape: {**base, **shape})).flatmap(
    lambda base: st.dictionaries(keys, json_values, max_size=3).map(lambda extra: {**extra, **base}))
