"""IAM authentication for Neptune: AWS Signature Version 4 on the WebSocket handshake.

Neptune with IAM database authentication expects the HTTP GET that opens the WebSocket to be
signed for service `neptune-db`. `signed_handshake_headers` computes those headers; a
connection calls it each time it opens, with fresh credentials from boto3's default chain (an
EMR instance profile, environment variables, ...), so a backfill outlives credential rotation.
Nothing here logs a credential, a signature or a header value.
"""
from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import quote, urlsplit

from imagegraph.errors import JobError

SERVICE = "neptune-db"
_ALGORITHM = "AWS4-HMAC-SHA256"
_EMPTY_PAYLOAD_SHA256 = hashlib.sha256(b"").hexdigest()


@dataclass(frozen=True)
class AwsCredentials:
    """A frozen set of AWS credentials; `token` is empty for long-term keys."""

    access_key: str
    secret_key: str
    token: str = ""

    def __repr__(self) -> str:  # never show the secret or the token
        return f"AwsCredentials(access_key={self.access_key[:4]}…)"


def _host(url: str) -> str:
    parts = urlsplit(url)
    default_port = 443 if parts.scheme in ("wss", "https") else 80
    if parts.port and parts.port != default_port:
        return f"{parts.hostname}:{parts.port}"
    return parts.hostname or ""


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


def signed_handshake_headers(url: str, region: str, credentials: AwsCredentials,
                             now: datetime | None = None) -> dict[str, str]:
    """SigV4 headers for the WebSocket GET to `url` (wss://host:8182/gremlin) in `region`.

    Returns Host, X-Amz-Date, Authorization and, for temporary credentials,
    X-Amz-Security-Token. `now` (UTC) defaults to the current time.
    """
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    date = amz_date[:8]
    parts = urlsplit(url)
    headers = {"host": _host(url), "x-amz-date": amz_date}
    if credentials.token:
        headers["x-amz-security-token"] = credentials.token
    signed_names = sorted(headers)
    canonical_request = "\n".join([
        "GET",
        quote(parts.path or "/", safe="/~"),
        "&".join(sorted(parts.query.split("&"))) if parts.query else "",
        "".join(f"{name}:{headers[name].strip()}\n" for name in signed_names),
        ";".join(signed_names),
        _EMPTY_PAYLOAD_SHA256,
    ])
    scope = f"{date}/{region}/{SERVICE}/aws4_request"
    string_to_sign = "\n".join([_ALGORITHM, amz_date, scope,
                                hashlib.sha256(canonical_request.encode("utf-8")).hexdigest()])
    key = _hmac(_hmac(_hmac(_hmac(f"AWS4{credentials.secret_key}".encode("utf-8"), date),
                            region), SERVICE), "aws4_request")
    signature = hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    result = {
        "Host": headers["host"],
        "X-Amz-Date": amz_date,
        "Authorization": (f"{_ALGORITHM} Credential={credentials.access_key}/{scope}, "
                          f"SignedHeaders={';'.join(signed_names)}, Signature={signature}"),
    }
    if credentials.token:
        result["X-Amz-Security-Token"] = credentials.token
    return result


def default_chain_credentials() -> AwsCredentials:
    """Current credentials from boto3's default chain; `JobError` when there are none."""
    import boto3

    credentials = boto3.Session().get_credentials()
    if credentials is None:
        raise JobError("IAM authentication to Neptune is on, but boto3 found no AWS credentials "
                       "(instance profile, environment or ~/.aws); set graph.iam_auth=off for a "
                       "cluster without IAM authentication")
    frozen = credentials.get_frozen_credentials()
    return AwsCredentials(frozen.access_key, frozen.secret_key, frozen.token or "")


def resolve_region(configured: str) -> str:
    """`configured`, else the boto3 session's region; `JobError` when neither is set."""
    if configured:
        return configured
    import boto3

    region = boto3.Session().region_name
    if not region:
        raise JobError("IAM authentication to Neptune needs a region: set graph.region or "
                       "AWS_DEFAULT_REGION")
    return region


def uses_iam(endpoint: str, iam_auth: str) -> bool:
    """Whether to sign: `iam_auth` 'on' or 'off', or 'auto' (sign for wss:// endpoints)."""
    if iam_auth == "auto":
        return endpoint.startswith("wss://")
    return iam_auth == "on"
