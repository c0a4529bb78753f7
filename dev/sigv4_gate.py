"""A local stand-in for Neptune's IAM database authentication: a `HandshakeRecorder` in front of
Gremlin Server that verifies the SigV4 signature of each WebSocket handshake and relays only
the handshakes signed with the credentials it was given; any other is answered as Neptune
answers it, 403 with the JSON body `{"requestId", "code": "AccessDeniedException",
"detailedMessage"}`.

    with SigV4Gate(gremlin_host, gremlin_port, credentials, "us-east-1") as gate:
        ...  # connect to ws://127.0.0.1:{gate.port}/gremlin, signed for neptune-db
    gate.accepted, gate.refusals   # how many were relayed; why each other was refused

The check: Authorization holds AWS4-HMAC-SHA256 with the credential scope
`<access key>/<X-Amz-Date's day>/<region>/neptune-db/aws4_request`; host and x-amz-date are among
its SignedHeaders; X-Amz-Date is within 5 minutes of now; the session token, when the
credentials have one, is the one sent; and the signature equals the one botocore's `SigV4Auth`
computes from the signed headers as received (Host included), the method and the path.
"""
from __future__ import annotations

import hmac
import uuid
from datetime import datetime, timezone
from urllib.parse import urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from handshake_recorder import HandshakeRecorder
from neptune_errors_server import neptune_error_body

SERVICE = "neptune-db"
ALGORITHM = "AWS4-HMAC-SHA256"
MAX_SKEW_S = 300
MISMATCH = ("The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method.")


def parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    """(method, target, {lower-case header name: value}) of an HTTP request head."""
    request_line, *lines = head.decode("latin-1").split("\r\n")
    method, target, _ = request_line.split(" ", 2)
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return method, target, headers


def signature_problem(head: bytes, credentials: Credentials, region: str,
                      now: datetime) -> str | None:
    """Why the request with head `head` is not signed by `credentials` for `SERVICE` in
    `region` at `now` (a UTC time), or None when it is."""
    method, target, headers = parse_head(head)
    authorization = headers.get("authorization", "")
    if not authorization.startswith(ALGORITHM + " "):
        return "Missing Authentication Token"
    fields = dict(part.strip().partition("=")[::2]
                  for part in authorization[len(ALGORITHM) + 1:].split(","))
    signed = fields.get("SignedHeaders", "").split(";")
    if not {"host", "x-amz-date"} <= set(signed) or not set(signed) <= set(headers):
        return f"SignedHeaders {fields.get('SignedHeaders')!r} must name host and x-amz-date, " \
               "and only headers that were sent"
    amz_date = headers["x-amz-date"]
    try:
        signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return f"X-Amz-Date {amz_date!r} is not a SigV4 time"
    if abs((now - signed_at).total_seconds()) > MAX_SKEW_S:
        return "Signature expired"
    scope = f"{credentials.access_key}/{amz_date[:8]}/{region}/{SERVICE}/aws4_request"
    if fields.get("Credential") != scope:
        return f"credential scope {fields.get('Credential')!r} is not {scope!r}"
    if credentials.token and headers.get("x-amz-security-token") != credentials.token:
        return "The security token included in the request is invalid"
    request = AWSRequest(method=method, url=f"http://{headers['host']}{urlsplit(target).path}",
                         headers={name: headers[name] for name in signed})
    request.context["timestamp"] = amz_date
    signer = SigV4Auth(credentials, SERVICE, region)
    expected = signer.signature(
        signer.string_to_sign(request, signer.canonical_request(request)), request)
    if not hmac.compare_digest(fields.get("Signature", ""), expected):
        return MISMATCH
    return None


def access_denied(detailed_message: str) -> bytes:
    """Neptune's answer to a handshake it does not authenticate: HTTP 403, JSON body."""
    body = neptune_error_body(uuid.uuid4(), "AccessDeniedException", detailed_message).encode()
    return (b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)) + body


class SigV4Gate(HandshakeRecorder):
    """Relays to Gremlin Server at (`upstream_host`, `upstream_port`) the connections whose
    handshake `credentials` signed for `region`; `accepted` counts them, `refusals` holds the
    reason for each one refused."""

    def __init__(self, upstream_host: str, upstream_port: int, credentials: Credentials,
                 region: str):
        super().__init__(upstream_host, upstream_port)
        self.credentials = credentials
        self.region = region
        self.accepted = 0
        self.refusals: list[str] = []

    def refusal(self, head: bytes) -> bytes | None:
        problem = signature_problem(head, self.credentials, self.region,
                                    datetime.now(timezone.utc))
        with self._lock:
            if problem is None:
                self.accepted += 1
                return None
            self.refusals.append(problem)
        return access_denied(problem)
