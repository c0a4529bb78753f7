"""Which version of an object `read_object` says it read: the ETag and the VersionId S3 answered
the GET with, against moto's S3 in process (a versioned and an unversioned bucket) and, for the
"null" VersionId moto never answers with (S3's for objects written while versioning was off or
suspended), a stubbed answer."""
from __future__ import annotations

import hashlib
import io

import boto3
from botocore.response import StreamingBody
from botocore.stub import Stubber
from moto import mock_aws

from imagegraph.storage.object_reader import ObjectRead, ReaderSettings, read_object, s3_client


def settings(endpoint: str = "") -> ReaderSettings:
    return ReaderSettings(endpoint=endpoint, region="us-east-1", path_style_access=True,
                          max_attempts=1, threads=1, max_bytes=1000, access_key="a",
                          secret_key="b")


def test_a_versioned_object_is_read_with_the_version_id_s3_answered():
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1", aws_access_key_id="a",
                          aws_secret_access_key="b")
        s3.create_bucket(Bucket="versioned")
        s3.put_bucket_versioning(Bucket="versioned",
                                 VersioningConfiguration={"Status": "Enabled"})
        first = s3.put_object(Bucket="versioned", Key="in/a.png", Body=b"first")
        second = s3.put_object(Bucket="versioned", Key="in/a.png", Body=b"second")
        head = s3.head_object(Bucket="versioned", Key="in/a.png")
        read = read_object("s3://versioned/in/a.png", 6, settings(), head["ETag"])
    assert first["VersionId"] != second["VersionId"]
    assert read == ObjectRead(b"second", hashlib.md5(b"second").hexdigest(),
                              second["VersionId"])
    assert read.version_id == head["VersionId"]


def test_an_unversioned_object_is_read_without_a_version_id():
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1", aws_access_key_id="a",
                          aws_secret_access_key="b")
        s3.create_bucket(Bucket="unversioned")
        s3.put_object(Bucket="unversioned", Key="in/a.png", Body=b"bytes")
        read = read_object("s3://unversioned/in/a.png", None, settings())
    assert read == ObjectRead(b"bytes", hashlib.md5(b"bytes").hexdigest(), None)


def test_the_null_version_id_is_kept_as_s3_answers_it():
    reader = settings("http://127.0.0.1:9")  # a client of its own; the stub answers
    with Stubber(s3_client(reader)) as stub:
        stub.add_response("get_object",
                          {"Body": StreamingBody(io.BytesIO(b"old"), 3), "ETag": '"e1"',
                           "VersionId": "null"},
                          {"Bucket": "b", "Key": "in/old.png"})
        read = read_object("s3://b/in/old.png", None, reader)
    assert read == ObjectRead(b"old", "e1", "null")


def test_a_local_file_has_no_version_id(tmp_path):
    (tmp_path / "a.png").write_bytes(b"local")
    assert read_object(f"file://{tmp_path}/a.png", None, settings()) == ObjectRead(
        b"local", None, None)
