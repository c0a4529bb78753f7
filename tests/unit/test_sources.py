import pytest

from imagegraph.sources import bucket_and_key, canonical_uri


@pytest.mark.parametrize("path, uri", [
    ("s3a://bucket/a/b.jpg", "s3://bucket/a/b.jpg"),
    ("s3://bucket/a/b.jpg", "s3://bucket/a/b.jpg"),
    ("s3n://bucket/k", "s3://bucket/k"),
    ("file:/tmp/x/y.png", "file:///tmp/x/y.png"),
    ("file:///tmp/x/y.png", "file:///tmp/x/y.png"),
    ("hdfs://nn/a.png", "hdfs://nn/a.png"),
])
def test_canonical_uri(path, uri):
    assert canonical_uri(path) == uri


def test_bucket_and_key():
    assert bucket_and_key("s3://bucket/a/b.jpg") == ("bucket", "a/b.jpg")
    assert bucket_and_key("file:///tmp/x.png") == ("", "/tmp/x.png")
