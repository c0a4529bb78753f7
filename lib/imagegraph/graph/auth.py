"""IAM authentication for Neptune: AWS Signature Version 4 on the WebSocket handshake.

Neptune with IAM database authentication expects the HTTP GET that opens the WebSocket to be
signed for service `neptune-db`. `signed_handshake_headers` has botocore's `SigV4Auth` sign
that GET (as an `AWSRequest` to the https:// form of the endpoint, the way AWS's Neptune
samples do); a connection calls it each time it opens, with fresh credentials from boto3's
default chain (an EMR instance profile, environment variables, ...), so a backfill outlives
credential rotation. Nothing here logs a credential, a signature or a header value.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

from imagegraph.errors import JobError

SERVICE = "neptune-db"
_HTTP_SCHEMES = {"wss://": "https://", "ws://": "http://"}


class _NoSigningDetails(logging.Filter):
    """Drops botocore's DEBUG records of a signature's inputs and result: the canonical
    request holds the security token, the signature authenticates a handshake."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("CanonicalRequest", "StringToSign",
                                               "Signature"))


logging.getLogger("botocore.auth").addFilter(_NoSigningDetails())


@dataclass(frozen=True)
class AwsCredentials:
    """A frozen set of AWS credentials; `token` is empty for long-term keys."""

    access_key: str
    secret_key: str
    token: str = ""

    def __repr__(self) -> str:  # never show the secret or the token
        return f"AwsCredentials(access_key={self.access_key[:4]}…)"


def signed_handshake_headers(url: str, region: str, credentials: AwsCredentials
                             ) -> dict[str, str]:
    """SigV4 headers for the WebSocket GET to `url` (wss://host:8182/gremlin) in `region`.

    Returns X-Amz-Date, Authorization and, for temporary credentials, X-Amz-Security-Token
    signed now (the signed Host is the one the WebSocket client sends: host, and port
    unless it is the scheme's default).
    """
    http_url = url
    for ws_scheme, http_scheme in _HTTP_SCHEMES.items():
        if url.startswith(ws_scheme):
            http_url = http_scheme + url[len(ws_scheme):]
    request = AWSRequest(method="GET", url=http_url, data=None)
    SigV4Auth(credentials, SERVICE, region).add_auth(request)
    return dict(request.headers.items())


class CredentialsUnavailable(JobError):
    """boto3's default chain returned no credentials: none configured, or an instance profile's
    fetch failed this time (the metadata service refreshing, throttled)."""


def default_chain_credentials() -> AwsCredentials:
    """Current credentials from boto3's default chain; `CredentialsUnavailable` when there are
    none."""
    import boto3

    credentials = boto3.Session().get_credentials()
    if credentials is None:
        raise CredentialsUnavailable("IAM authentication to Neptune is on, but boto3 found no "
                                     "AWS credentials "
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
