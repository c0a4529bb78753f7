"""Objects overwritten in S3, against moto's server: the workers read the version listed (its
ETag, with If-Match) or dead-letter the object as changed since listed, retryable; `--resume`
classifies an object again once its listed ETag differs from the one its committed row
carries, and skips the rest. Predictions and dead letters record the VersionId read (a
versioned bucket's; none from an unversioned one)."""
from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest
import sample_images
from conftest import MODEL_URI
from s3_inventory import put_csv_inventory
from s3_objects import put_objects

from imagegraph.dead_letters import TRANSIENT, retry_class
from imagegraph.infer.job import run_inference
from imagegraph.storage.object_reader import (
    CHANGED_SINCE_LISTED,
    ObjectUnreadable,
    ReaderSettings,
    read_object,
)
from imagegraph.storage.outputs import DEAD_LETTER_DIR, PREDICTIONS_DIR
from imagegraph.storage.selection import INVENTORY, PREFIX, InputSource

BUCKET = "imagegraph-overwritten"
OUTPUT = f"s3a://{BUCKET}/results"


@pytest.fixture(scope="module")
def digits() -> list[bytes]:
    """6 real digit PNGs, all different bytes."""
    _, held_out = sample_images.digit_images(limit=60)
    return [data for _, data in sorted(held_out.items())[:6]]


def etag_of(s3, key: str) -> str:
    return s3.head_object(Bucket=BUCKET, Key=key)["ETag"].strip('"')


def test_resume_classifies_again_exactly_the_object_overwritten(spark, config, trained_model,
                                                                s3, digits):
    keys = [f"in/{n}.png" for n in range(5)]
    put_objects(s3, BUCKET, "", dict(zip(keys, digits)))
    graph_off = replace(config, graph=replace(config.graph, enabled=False))
    source = InputSource(PREFIX, f"s3a://{BUCKET}/in/")
    first = run_inference(spark, graph_off, source, MODEL_URI, OUTPUT)
    assert first.reconciles(), first.disagreements()
    assert (first.listed, first.classified, first.dead_lettered) == (5, 5, 0)

    put_objects(s3, BUCKET, "", {keys[2]: digits[5]})  # the same key, other bytes
    resumed = run_inference(spark, graph_off, source, MODEL_URI, OUTPUT, resume=True)
    assert resumed.reconciles(), resumed.disagreements()
    assert (resumed.listed, resumed.skipped_done, resumed.classified, resumed.dead_lettered) \
        == (5, 4, 1, 0)
    rows = [(r["uri"], r["sha256"], r["etag"], r["version_id"]) for r in
            spark.read.parquet(f"{OUTPUT}/{PREDICTIONS_DIR}")
            .where(f"run_id = '{resumed.run_id}'").collect()]
    new_etag = etag_of(s3, keys[2])
    assert new_etag == hashlib.md5(digits[5]).hexdigest()  # a single-part PUT's ETag
    assert rows == [(f"s3://{BUCKET}/{keys[2]}", hashlib.sha256(digits[5]).hexdigest(),
                     new_etag, None)]  # an unversioned bucket: S3 answers no VersionId
    first_rows = {r["uri"]: r["etag"] for r in spark.read.parquet(f"{OUTPUT}/{PREDICTIONS_DIR}")
                  .where(f"run_id = '{first.run_id}'").collect()}
    assert first_rows[f"s3://{BUCKET}/{keys[2]}"] == hashlib.md5(digits[2]).hexdigest()


def test_an_object_overwritten_after_listing_is_not_read(config, s3, digits):
    """The object is listed (its ETag taken), then overwritten: reading it with the listed ETag
    fails as changed since listed, transient; with the new ETag it reads the new bytes."""
    key = "race/0.png"
    put_objects(s3, BUCKET, "", {key: digits[0]})
    listed = etag_of(s3, key)
    put_objects(s3, BUCKET, "", {key: digits[1]})
    settings = ReaderSettings.from_config(config.s3, threads=1, max_bytes=10 ** 6)
    uri = f"s3://{BUCKET}/{key}"
    with pytest.raises(ObjectUnreadable) as raised:
        read_object(uri, len(digits[0]), settings, f'"{listed}"')
    assert (raised.value.reason, retry_class(raised.value.reason)) == (CHANGED_SINCE_LISTED,
                                                                        TRANSIENT)
    current = read_object(uri, None, settings, etag_of(s3, key))
    assert (current.data, current.etag) == (digits[1], hashlib.md5(digits[1]).hexdigest())


def put_inventory(s3, prefix: str) -> str:
    """An S3 Inventory CSV report (ETags unquoted, as AWS writes them) of the objects under
    `prefix` now; returns its manifest.json URI."""
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]
    return put_csv_inventory(s3, BUCKET, f"inventory/{prefix}", BUCKET,
                             ["Bucket", "Key", "Size", "ETag"],
                             [[BUCKET, o["Key"], str(o["Size"]), o["ETag"].strip('"')]
                              for o in listed])


def test_an_object_overwritten_since_the_inventory_is_dead_lettered_then_resumed(
        spark, config, trained_model, s3, digits):
    """An inventory report lists 4 objects with their ETags; one is overwritten before the run
    reads it: dead-lettered as changed since listed (transient, with the ETag listed), never
    classified from the new bytes; a `--resume` listing the prefix classifies it alone."""
    keys = [f"stale/{n}.png" for n in range(4)]
    put_objects(s3, BUCKET, "", dict(zip(keys, digits)))
    inventory = put_inventory(s3, "stale/")
    put_objects(s3, BUCKET, "", {keys[1]: digits[5]})
    graph_off = replace(config, graph=replace(config.graph, enabled=False))
    output = f"s3a://{BUCKET}/stale-results"
    first = run_inference(spark, graph_off, InputSource(INVENTORY, inventory), MODEL_URI, output)
    assert first.reconciles(), first.disagreements()
    assert (first.listed, first.classified, first.dead_lettered_by_reason) == (
        4, 3, {CHANGED_SINCE_LISTED: 1})
    assert [(r["uri"], r["stage"], r["retry_class"], r["etag"]) for r in
            spark.read.parquet(f"{output}/{DEAD_LETTER_DIR}").collect()] == [
        (f"s3://{BUCKET}/{keys[1]}", "read", TRANSIENT, hashlib.md5(digits[1]).hexdigest())]
    assert f"s3://{BUCKET}/{keys[1]}" not in {
        r["uri"] for r in spark.read.parquet(f"{output}/{PREDICTIONS_DIR}").collect()}

    resumed = run_inference(spark, graph_off, InputSource(PREFIX, f"s3a://{BUCKET}/stale/"),
                            MODEL_URI, output, resume=True)
    assert resumed.reconciles(), resumed.disagreements()
    assert (resumed.listed, resumed.skipped_done, resumed.classified, resumed.dead_lettered) \
        == (4, 3, 1, 0)
    assert [(r["uri"], r["sha256"]) for r in spark.read.parquet(f"{output}/{PREDICTIONS_DIR}")
            .where(f"run_id = '{resumed.run_id}'").collect()] == [
        (f"s3://{BUCKET}/{keys[1]}", hashlib.sha256(digits[5]).hexdigest())]


def test_predictions_and_dead_letters_record_the_version_id_read(spark, config, trained_model,
                                                                  s3, digits):
    """A versioned bucket: 3 digits, one of them overwritten (2 versions), and bytes that are
    no image. Each prediction's `version_id` is the VersionId of the object's current version
    (the overwritten one's second), exactly as head_object answers it; the undecodable object's
    dead letter (read, then failed to decode) carries its VersionId too."""
    bucket = "imagegraph-versioned"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    keys = [f"in/{n}.png" for n in range(3)]
    put_objects(s3, bucket, "", {**dict(zip(keys, digits)), "in/junk.png": b"not an image"})
    put_objects(s3, bucket, "", {keys[1]: digits[5]})
    versions = {f"s3://{bucket}/{key}": s3.head_object(Bucket=bucket, Key=key)["VersionId"]
                for key in [*keys, "in/junk.png"]}
    assert len(set(versions.values())) == 4
    assert len(s3.list_object_versions(Bucket=bucket, Prefix=keys[1])["Versions"]) == 2
    graph_off = replace(config, graph=replace(config.graph, enabled=False))
    output = f"s3a://{bucket}/results"
    report = run_inference(spark, graph_off, InputSource(PREFIX, f"s3a://{bucket}/in/"),
                           MODEL_URI, output)
    assert report.reconciles(), report.disagreements()
    assert (report.listed, report.classified, report.dead_lettered) == (4, 3, 1)
    predictions = {r["uri"]: (r["sha256"], r["version_id"])
                   for r in spark.read.parquet(f"{output}/{PREDICTIONS_DIR}").collect()}
    assert predictions == {
        f"s3://{bucket}/{key}": (hashlib.sha256(data).hexdigest(), versions[f"s3://{bucket}/{key}"])
        for key, data in zip(keys, [digits[0], digits[5], digits[2]])}
    assert [(r["uri"], r["stage"], r["version_id"]) for r in
            spark.read.parquet(f"{output}/{DEAD_LETTER_DIR}").collect()] == [
        (f"s3://{bucket}/in/junk.png", "decode", versions[f"s3://{bucket}/in/junk.png"])]
