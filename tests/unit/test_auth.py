import datetime as real_datetime
import types
from dataclasses import replace

import botocore.auth
import pytest
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from imagegraph.graph.auth import AwsCredentials, signed_handshake_headers, uses_iam

FIXED = real_datetime.datetime(2026, 11, 26, 20, 15, 30)
URL = "wss://db.cluster-abc.us-east-1.neptune.amazonaws.com:8182/gremlin"


@pytest.fixture
def frozen_botocore_clock(monkeypatch):
    class FrozenDatetime(real_datetime.datetime):
        @classmethod
        def utcnow(cls):
            return FIXED

        @classmethod
        def now(cls, tz=None):
            return FIXED.replace(tzinfo=tz) if tz else FIXED

    monkeypatch.setattr(botocore.auth, "datetime",
                        types.SimpleNamespace(datetime=FrozenDatetime,
                                              timezone=real_datetime.timezone))


def botocore_headers(url: str, region: str, access: str, secret: str, token: str | None):
    request = AWSRequest(method="GET", url=url.replace("wss://", "https://"), data=None)
    botocore.auth.SigV4Auth(Credentials(access, secret, token), "neptune-db", region) \
        .add_auth(request)
    return dict(request.headers.items())


@pytest.mark.parametrize("token", ["", "FQoGZXIvYXdzEXAMPLETOKEN//////////"])
def test_headers_match_botocore_signer(frozen_botocore_clock, token):
    ours = signed_handshake_headers(
        URL, "us-east-1", AwsCredentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG", token),
        now=FIXED.replace(tzinfo=real_datetime.timezone.utc))
    theirs = botocore_headers(URL, "us-east-1", "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG",
                              token or None)
    assert ours["Authorization"] == theirs["Authorization"]
    assert ours["X-Amz-Date"] == theirs["X-Amz-Date"] == "20261126T201530Z"
    assert ours.get("X-Amz-Security-Token") == theirs.get("X-Amz-Security-Token")
    assert ours["Host"] == "db.cluster-abc.us-east-1.neptune.amazonaws.com:8182"
    assert "neptune-db/aws4_request" in ours["Authorization"]


def test_signature_changes_with_time_and_region():
    credentials = AwsCredentials("AKID", "secret")
    at = FIXED.replace(tzinfo=real_datetime.timezone.utc)
    one = signed_handshake_headers(URL, "us-east-1", credentials, now=at)
    assert one == signed_handshake_headers(URL, "us-east-1", credentials, now=at)
    later = at + real_datetime.timedelta(seconds=1)
    assert one["Authorization"] != signed_handshake_headers(URL, "us-east-1", credentials,
                                                            now=later)["Authorization"]
    assert one["Authorization"] != signed_handshake_headers(URL, "eu-west-1", credentials,
                                                            now=at)["Authorization"]


def test_credentials_repr_hides_secrets():
    text = repr(AwsCredentials("AKIDEXAMPLE", "topsecret", "tokenvalue"))
    assert "topsecret" not in text and "tokenvalue" not in text


@pytest.mark.parametrize("endpoint, setting, expected", [
    ("wss://h:8182/gremlin", "auto", True), ("ws://h:8182/gremlin", "auto", False),
    ("ws://h:8182/gremlin", "on", True), ("wss://h:8182/gremlin", "off", False),
])
def test_uses_iam(endpoint, setting, expected):
    assert uses_iam(endpoint, setting) is expected


def test_iam_auth_is_on_by_default_for_wss_endpoints(monkeypatch):
    """The shipped EMR configuration and the built-in default sign a wss:// handshake."""
    from imagegraph.config import GraphConfig, load_config
    from imagegraph.graph.connection import _handshake_headers

    monkeypatch.delenv("GREMLIN_ENDPOINT", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDDEFAULTON")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    emr = load_config("conf/emr.yaml").graph
    assert emr.endpoint.startswith("wss://") and emr.iam_auth == GraphConfig().iam_auth == "auto"
    headers = _handshake_headers(replace(emr, region="us-east-1"))
    assert headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDDEFAULTON/")
    assert _handshake_headers(replace(emr, endpoint="ws://h:8182/gremlin")) is None
