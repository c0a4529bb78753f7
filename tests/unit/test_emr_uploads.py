"""The launcher's handling of S3's answers about an object already at an upload's key."""
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from imagegraph.emr.launcher import _calling, _stored_sha256
from imagegraph.emr.package import Upload
from imagegraph.errors import JobError

UPLOAD = Upload(Path("f"), "bucket", "code/f", "ab" * 32)


class HeadObject:
    """An S3 client whose head_object answers with `code` (200: the given metadata)."""

    def __init__(self, code: str, metadata: dict | None = None):
        self.code, self.metadata = code, metadata or {}

    def head_object(self, Bucket, Key):
        if self.code != "200":
            raise ClientError({"Error": {"Code": self.code, "Message": "no"}}, "HeadObject")
        return {"Metadata": self.metadata}


@pytest.mark.parametrize("code", ["404", "403"])  # 403: no s3:ListBucket, so S3 will not say
def test_a_missing_or_unknowable_object_is_uploaded(code):
    assert _stored_sha256(HeadObject(code), UPLOAD) is None


def test_the_stored_sha256_is_read_from_metadata():
    assert _stored_sha256(HeadObject("200", {"sha256": UPLOAD.sha256}), UPLOAD) == UPLOAD.sha256
    assert _stored_sha256(HeadObject("200"), UPLOAD) is None


def test_other_errors_stop_with_one_line():
    with pytest.raises(JobError, match=r"^head failed: SlowDown: no$"):
        _calling("head", lambda: _stored_sha256(HeadObject("SlowDown"), UPLOAD))
