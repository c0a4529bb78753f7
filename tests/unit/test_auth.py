import datetime as real_datetime
import hashlib
import hmac
import types
from dataclasses import replace

import botocore.auth
import pytest

from imagegraph.graph.auth import AwsCredentials, signed_handshake_headers, uses_iam

FIXED = real_datetime.datetime(2026, 11, 26, 20, 15, 30)
URL = "wss://db.cluster-abc.us-east-1.neptune.amazonaws.com:8182/gremlin"


def freeze_botocore_clock(monkeypatch, at: real_datetime.datetime) -> None:
    class FrozenDatetime(real_datetime.datetime):
        @classmethod
        def utcnow(cls):
            return at

        @classmethod
        def now(cls, tz=None):
            return at.replace(tzinfo=tz) if tz else at

    monkeypatch.setattr(botocore.auth, "datetime",
                        types.SimpleNamespace(datetime=FrozenDatetime,
                                              timezone=real_datetime.timezone))


def sigv4_by_the_spec(host: str, path: str, amz_date: str, region: str, access: str,
                      secret: str, token: str) -> str:
    """The Authorization header of a GET with an empty body, computed step by step as AWS's
    Signature Version 4 documentation describes it, independently of botocore."""
    headers = {"host": host, "x-amz-date": amz_date}
    if token:
        headers["x-amz-security-token"] = token
    names = sorted(headers)
    canonical = "\n".join(["GET", path, "", "".join(f"{n}:{headers[n]}\n" for n in names),
                           ";".join(names), hashlib.sha256(b"").hexdigest()])
    scope = f"{amz_date[:8]}/{region}/neptune-db/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = f"AWS4{secret}".encode()
    for part in (amz_date[:8], region, "neptune-db", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return (f"AWS4-HMAC-SHA256 Credential={access}/{scope}, "
            f"SignedHeaders={';'.join(names)}, Signature={signature}")


@pytest.mark.parametrize("token", ["", "FQoGZXIvYXdzEXAMPLETOKEN//////////"])
def test_headers_are_sigv4_for_neptune_db(monkeypatch, token):
    freeze_botocore_clock(monkeypatch, FIXED)
    headers = signed_handshake_headers(
        URL, "us-east-1", AwsCredentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG", token))
    assert headers["X-Amz-Date"] == "20261126T201530Z"
    assert headers.get("X-Amz-Security-Token") == (token or None)
    assert headers["Authorization"] == sigv4_by_the_spec(
        "db.cluster-abc.us-east-1.neptune.amazonaws.com:8182", "/gremlin", "20261126T201530Z",
        "us-east-1", "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG", token)


def test_signature_changes_with_time_and_region(monkeypatch):
    credentials = AwsCredentials("AKID", "secret")
    freeze_botocore_clock(monkeypatch, FIXED)
    one = signed_handshake_headers(URL, "us-east-1", credentials)
    assert one == signed_handshake_headers(URL, "us-east-1", credentials)
    other_region = signed_handshake_headers(URL, "eu-west-1", credentials)
    freeze_botocore_clock(monkeypatch, FIXED + real_datetime.timedelta(seconds=1))
    later = signed_handshake_headers(URL, "us-east-1", credentials)
    assert len({one["Authorization"], other_region["Authorization"],
                later["Authorization"]}) == 3


def test_signing_logs_no_secret_token_or_signature(caplog):
    caplog.set_level("DEBUG")
    headers = signed_handshake_headers(URL, "us-east-1",
                                       AwsCredentials("AKIDEXAMPLE", "topsecret", "tokenvalue"))
    signature = headers["Authorization"].rsplit("Signature=", 1)[1]
    assert "topsecret" not in caplog.text and "tokenvalue" not in caplog.text
    assert signature not in caplog.text


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
    assert "/us-east-1/neptune-db/aws4_request" in headers["Authorization"]
    assert headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDDEFAULTON/")
    assert _handshake_headers(replace(emr, endpoint="ws://h:8182/gremlin")) is None
