"""Putting objects into the local S3 server with boto3 (demo and tests)."""
from __future__ import annotations

import boto3


def s3_client(endpoint: str, access_key: str, secret_key: str):
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access_key,
                        aws_secret_access_key=secret_key, region_name="us-east-1")


def put_objects(client, bucket: str, prefix: str, objects: dict[str, bytes]) -> None:
    """Create `bucket` if needed and put each {key: bytes} under `prefix`."""
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        client.create_bucket(Bucket=bucket)
    for key, body in objects.items():
        client.put_object(Bucket=bucket, Key=f"{prefix}{key}", Body=body)
