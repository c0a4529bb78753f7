"""dev/sigv4_gate.py's check, on handshake heads signed by the job's own signer: it lets in
exactly the heads signed with its credentials, service and region, for the Host sent, at a
time near now, and names why it refuses any other."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from botocore.credentials import Credentials
from sigv4_gate import MISMATCH, signature_problem

from imagegraph.graph.auth import AwsCredentials, signed_handshake_headers

KEYS = Credentials("AKIDGATEUNIT00000001", "GateUnitSecret0123456789abcdefghijKLMNOP",
                   "GateUnitToken0123")
HOST = "127.0.0.1:8182"


def head(url: str = f"ws://{HOST}/gremlin", region: str = "us-east-1",
         secret: str = KEYS.secret_key, token: str = KEYS.token, host: str = HOST,
         signed: bool = True) -> bytes:
    """A WebSocket handshake head as aiohttp sends it, signed by the job's signer."""
    headers = {"Host": host, "Upgrade": "websocket", "Connection": "Upgrade",
               "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    if signed:
        headers.update(signed_handshake_headers(
            url, region, AwsCredentials(KEYS.access_key, secret, token)))
    return ("GET /gremlin HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            ).rstrip("\r\n").encode("latin-1")


def now() -> datetime:
    return datetime.now(timezone.utc)


def test_a_head_signed_with_the_gates_credentials_is_let_in():
    assert signature_problem(head(), KEYS, "us-east-1", now()) is None


@pytest.mark.parametrize("changed, problem", [
    (dict(secret="wrong" + KEYS.secret_key[5:]), MISMATCH),
    (dict(url="ws://127.0.0.1:9999/gremlin"), MISMATCH),  # signed for another Host
    (dict(region="eu-west-1"), "credential scope"),
    (dict(token="AnotherToken"), "security token"),
    (dict(signed=False), "Missing Authentication Token"),
], ids=["wrong secret", "other host", "other region", "other token", "unsigned"])
def test_any_other_head_is_refused_with_its_reason(changed, problem):
    assert problem in signature_problem(head(**changed), KEYS, "us-east-1", now())


def test_a_signature_older_than_five_minutes_is_refused():
    assert signature_problem(head(), KEYS, "us-east-1", now() + timedelta(minutes=6)) == \
        "Signature expired"
