"""Shards, the --shard argument, pacing and progress lines: pure functions, and the Spark
expression of shards against the pure one in a one-core local SparkSession."""
import argparse
import hashlib

import pytest

from imagegraph.cli import parse_shard
from imagegraph.graph.pacing import Pacer
from imagegraph.runs.progress import progress_line
from imagegraph.storage.selection import Shard, shard_column, shard_of


def test_shard_of_is_the_documented_hash():
    uri = "s3://bucket/photos/a b+c.jpg"
    assert shard_of(uri, 7) == int(hashlib.sha256(uri.encode()).hexdigest()[:15], 16) % 7


def test_shards_cover_every_uri_exactly_once_and_evenly():
    uris = [f"s3://b/k/{i:05d}.jpg" for i in range(4000)]
    sizes = [sum(1 for uri in uris if shard_of(uri, 4) == index) for index in range(4)]
    assert sum(sizes) == 4000
    assert min(sizes) > 900  # 1000 each, give or take the hash's spread


def test_shard_column_is_shard_of(spark):
    """The shard Spark selects by is `shard_of` for every URI: odd characters, unicode, long
    keys, and hashes whose first 15 hex digits start with 8-f (the sign bit of a long)."""
    from pyspark.sql import functions as F
    uris = [f"s3://b/k/{i:05d}.jpg" for i in range(300)] + [
        "s3://bucket/photos/a b+c.jpg", "s3://b/ü/ñ/写真.png", "s3://b//x?y#z%41",
        "s3://b/" + "k" * 900]
    counts = (2, 7, 16, 1000)
    frame = spark.createDataFrame([(uri,) for uri in uris], "uri string").select(
        "uri", *[shard_column(F.col("uri"), count).alias(f"shard_{count}") for count in counts])
    expected = {(uri, *[shard_of(uri, count) for count in counts]) for uri in uris}
    assert {tuple(row) for row in frame.collect()} == expected


@pytest.mark.parametrize("text, shard", [("0/1", Shard(0, 1)), ("3/8", Shard(3, 8))])
def test_parse_shard(text, shard):
    assert parse_shard(text) == shard
    assert str(shard) == text


@pytest.mark.parametrize("text", ["8/8", "-1/4", "1", "a/b", "1/0", "2/4/6"])
def test_parse_shard_rejects(text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_shard(text)


class FakeClock:
    def __init__(self):
        self.now = 100.0
        self.slept = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_pacer_spaces_requests_to_the_rate():
    clock = FakeClock()
    pacer = Pacer(200.0, clock, clock.sleep)
    for _ in range(3):
        pacer.wait(100)       # 100 elements at 200/s: half a second of budget each
    assert clock.slept == [0.5, 0.5]
    clock.now += 2.0          # idle time is not banked beyond the next request
    pacer.wait(100)
    assert clock.slept == [0.5, 0.5]


def test_pacer_without_a_rate_never_waits():
    clock = FakeClock()
    pacer = Pacer(0.0, clock, clock.sleep)
    for _ in range(5):
        pacer.wait(10_000)
    assert clock.slept == []


def test_progress_line():
    assert progress_line(1200, 5000, 3, 40.0) == (
        "1200/5000 objects (24.0%), 30.0 images/s, about 2m 6s left, 3 dead-lettered")
    assert progress_line(0, 10, 0, 5.0) == (
        "0/10 objects (0.0%), 0.0 images/s, time left unknown, 0 dead-lettered")
    assert progress_line(10, 100_000, 0, 1.0).endswith("about 2h 46m left, 0 dead-lettered")


def test_pacer_pause_doubles_on_throttling_and_halves_away_on_success():
    clock = FakeClock()
    pacer = Pacer(0.0, clock, clock.sleep)       # defaults: pauses of 0.5 s to 20 s
    pauses = []
    for _ in range(8):
        pacer.slow_down()
        pauses.append(pacer.pause_s)
    assert pauses == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 20.0, 20.0]
    pacer.pause_s = 1.0
    pacer.speed_up()
    assert pacer.pause_s == 0.5                  # still at least the smallest pause
    pacer.speed_up()
    assert pacer.pause_s == 0.0                  # below it: dropped
    pacer.slow_down()
    pacer.wait(100)
    pacer.wait(100)                              # without a rate, only the pause is waited
    assert clock.slept == [0.5, 0.5]


def test_an_input_source_is_named_by_its_uri_and_kind():
    from imagegraph.storage.selection import INVENTORY, MANIFEST, PREFIX, InputSource
    assert str(InputSource(PREFIX, "s3://b/in/")) == "s3://b/in/"
    assert str(InputSource(MANIFEST, "s3://b/m.csv")) == "manifest s3://b/m.csv"
    assert str(InputSource(INVENTORY, "s3://b/manifest.json")) == "inventory s3://b/manifest.json"


def test_rows_without_a_modified_time_are_kept_for_counting_not_dropped(spark, tmp_path):
    """A manifest whose last_modified is empty or unparseable in some rows: with a bound, those
    rows come back for the run to count (`without_modified`), the others are filtered."""
    from pyspark.sql import functions as F

    from imagegraph.config import InputConfig, S3Config
    from imagegraph.storage.selection import MANIFEST, InputSource, select_objects, without_modified
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("uri,last_modified\n"
                        "s3://b/new.jpg,2026-06-01T00:00:00Z\n"
                        "s3://b/old.jpg,2020-01-01T00:00:00Z\n"
                        "s3://b/empty.jpg,\n"
                        "s3://b/garbled.jpg,last tuesday\n")
    source = InputSource(MANIFEST, manifest.as_uri())
    bounded = InputConfig(modified_after="2026-01-01T00:00:00Z")
    rows = select_objects(spark, source, bounded, S3Config(), None) \
        .select("uri", without_modified(bounded).alias("untimed")).collect()
    assert sorted((row.uri, row.untimed) for row in rows) == [
        ("s3://b/empty.jpg", True), ("s3://b/garbled.jpg", True), ("s3://b/new.jpg", False)]
    unbounded = select_objects(spark, source, InputConfig(), S3Config(), None)
    assert unbounded.where(without_modified(InputConfig())).count() == 0
    assert unbounded.where(F.col("modified").isNull()).count() == 2


@pytest.mark.parametrize("bound", [{"modified_after": "2026-01-01T00:00:00Z"},
                                   {"modified_before": "2026-01-01T00:00:00Z"}])
def test_an_inventory_without_modified_times_refuses_the_time_filters(spark, tmp_path, bound):
    import gzip
    import json

    from imagegraph.config import InputConfig, S3Config
    from imagegraph.errors import JobError
    from imagegraph.storage.selection import INVENTORY, InputSource, select_objects
    data = tmp_path / "data" / "part-0.csv.gz"
    data.parent.mkdir()
    data.write_bytes(gzip.compress(b'"b","a.jpg","10"\n"b","c.jpg","20"\n'))
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({
        "sourceBucket": "b", "destinationBucket": "arn:aws:s3:::", "fileFormat": "CSV",
        "fileSchema": "Bucket, Key, Size",
        "files": [{"key": str(data).lstrip("/"), "size": 0, "MD5checksum": ""}]}))
    source = InputSource(INVENTORY, manifest.as_uri())
    assert select_objects(spark, source, InputConfig(), S3Config(), None).count() == 2
    with pytest.raises(JobError) as refused:
        select_objects(spark, source, InputConfig(**bound), S3Config(), None)
    assert str(refused.value) == (
        f"inventory {manifest.as_uri()} has no LastModifiedDate field, so the modified-after/"
        f"-before filters cannot be applied; add that field to the inventory configuration, "
        f"or run without the filters")
