"""Every object read from its own key, whatever characters the key holds: different images under
keys that URL parsing or Hadoop's Path would confuse (`img` and `img?v=2.jpg`, `a` and
`a#b.jpg`, `//`, a leading `/`, `..`), keys that look alike (NFC and NFD of `café.jpg`, and
one with a trailing space) and keys from every class of S3's object key naming
guidelines, through a prefix listing, a manifest and an S3 Inventory report, each a whole run
of the job against the real S3 server; each object's sha256 and labels in predictions/ are those
of its own bytes (a copy under a plain key is classified beside it)."""
from __future__ import annotations

import csv
import hashlib
import io
import unicodedata
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from urllib.parse import quote_plus

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sample_images
from conftest import BUCKET, MODEL_URI
from s3_inventory import put_csv_inventory, put_parquet_inventory
from s3_objects import put_objects

from imagegraph.infer.job import run_inference
from imagegraph.storage.outputs import DEAD_LETTER_DIR, PREDICTIONS_DIR
from imagegraph.storage.selection import INVENTORY, MANIFEST, PREFIX, InputSource, select_objects

ODD_BUCKET = "imagegraph-odd-keys"  # listed from its root, so a key may start with '/'
OUT = f"s3a://{BUCKET}/odd-keys-out"
NFC_CAFE, NFD_CAFE = (unicodedata.normalize(form, "café.jpg") for form in ("NFC", "NFD"))
# pairs a URL parser folds into one object come first, then keys that look alike (NFD and NFC
# of one name, and the NFC one with a trailing space): each differs from the one it could be
# taken for in its digit's class
ODD_KEYS = [
    "img", "img?v=2.jpg", "a", "a#b.jpg", NFD_CAFE, NFC_CAFE, NFC_CAFE + " ",
    "q?x=1&y=2#frag.jpg",
    "odd//double.jpg", "/leading.jpg", "dots/../up.png", "ünïcödé/日本語 ✓.png",
    "safe/Abc-1_x.y*z'(1)!.png",                          # safe characters
    "special/&$@=;:+ ,?.png", "special/ctl\x01\x1f\x7f\t.png", "special/cr\r.png",
    "special/nul\x00.png",                                # special handling, ASCII 0-31 and 127
    "avoid/\\{}^%`[]\"<>~#|.png", "avoid/high\x80\xff.png",  # to avoid, non-printable
    "pct%2Fx%zz.png", "plus+and space.png",
]


def canonical(key: str) -> str:
    return f"s3://{ODD_BUCKET}/{key}"


def control_key(index: int) -> str:
    return f"control/{index:02d}.png"


@pytest.fixture(scope="module")
def objects(s3) -> dict[str, bytes]:
    """{key: bytes} put into ODD_BUCKET: a different digit under each odd key, the same bytes
    again under a plain control key. The digits alternate between 0 and 1 so that `img` and
    `img?v=2.jpg` (and `a`, `a#b.jpg`) hold digits of different classes."""
    digits, _ = sample_images.digit_images(limit=300)
    zeros = [data for key, data in sorted(digits.items()) if key.startswith("0/")]
    ones = [data for key, data in sorted(digits.items()) if key.startswith("1/")]
    chosen = [(zeros if index % 2 == 0 else ones)[index // 2] for index in range(len(ODD_KEYS))]
    placed = {key: data for key, data in zip(ODD_KEYS, chosen)}
    placed.update({control_key(index): data for index, data in enumerate(chosen)})
    put_objects(s3, ODD_BUCKET, "", placed)
    put_objects(s3, BUCKET, "", {})  # where manifests and inventory reports go
    return placed


def aws_url_encoded(key: str) -> str:
    """A key as S3 Inventory writes it in CSV reports: URL-encoded the way HTML forms are
    (Java's URLEncoder: letters, digits and `*-._` kept, a space as '+', every other UTF-8
    byte as %XX)."""
    return quote_plus(key, safe="*").replace("~", "%7E")


def put_manifest(s3, keys) -> str:
    """A CSV manifest (bucket, key) as Python's csv module writes it (RFC 4180)."""
    rows = io.StringIO()
    writer = csv.writer(rows)
    writer.writerow(["bucket", "key"])
    writer.writerows([ODD_BUCKET, key] for key in keys)
    s3.put_object(Bucket=BUCKET, Key="odd-keys/manifest.csv", Body=rows.getvalue().encode())
    return f"s3a://{BUCKET}/odd-keys/manifest.csv"


def put_parquet(s3, key: str, columns: dict[str, list]) -> str:
    buffer = io.BytesIO()
    pq.write_table(pa.table(columns), buffer)
    s3.put_object(Bucket=BUCKET, Key=key, Body=buffer.getvalue())
    return key


def put_inventory(s3, name: str, file_format: str, malformed: str = "") -> str:
    """An S3 Inventory report of ODD_BUCKET: CSV with keys URL-encoded (plus `malformed`, a
    field no encoder writes, when given), or Parquet with keys as they are."""
    listed = [o for page in s3.get_paginator("list_objects_v2").paginate(Bucket=ODD_BUCKET)
              for o in page["Contents"]]
    prefix = f"odd-keys/inventory/{name}/"
    if file_format == "Parquet":
        return put_parquet_inventory(s3, BUCKET, prefix, ODD_BUCKET, {
            "bucket": [ODD_BUCKET] * len(listed), "key": [o["Key"] for o in listed],
            "size": [o["Size"] for o in listed],
            "last_modified_date": [o["LastModified"] for o in listed]})
    rows = [[ODD_BUCKET, aws_url_encoded(o["Key"]), str(o["Size"]),
             o["LastModified"].strftime("%Y-%m-%dT%H:%M:%S.000Z")] for o in listed]
    if malformed:
        rows.append([ODD_BUCKET, malformed, "1", "2026-01-01T00:00:00.000Z"])
    return put_csv_inventory(s3, BUCKET, prefix, ODD_BUCKET,
                             ["Bucket", "Key", "Size", "LastModifiedDate"], rows)


def assert_each_object_read_from_its_own_key(spark, report, output: str, objects):
    """Every object classified once, with the sha256 of its own bytes and the labels of the
    copy of those bytes under a plain key; nothing else classified or dead-lettered."""
    rows = (spark.read.parquet(f"{output}/{PREDICTIONS_DIR}")
            .where(f"run_id = '{report.run_id}'").select("uri", "bucket", "key", "sha256",
                                                         "labels").collect())
    by_uri = {row["uri"]: row for row in rows}
    assert len(rows) == len(by_uri) == len(objects)
    assert set(by_uri) == {canonical(key) for key in objects}
    for index, key in enumerate(ODD_KEYS):
        row = by_uri[canonical(key)]
        assert (row["bucket"], row["key"]) == (ODD_BUCKET, key)
        assert row["sha256"] == hashlib.sha256(objects[key]).hexdigest(), key
        assert row["labels"] == by_uri[canonical(control_key(index))]["labels"], key
    # the pairs a URL parser folds into one object hold digits of different classes
    assert by_uri[canonical("img")]["labels"][0] != by_uri[canonical("img?v=2.jpg")]["labels"][0]
    assert by_uri[canonical("a")]["labels"][0] != by_uri[canonical("a#b.jpg")]["labels"][0]
    assert by_uri[canonical(NFC_CAFE)]["labels"][0] != \
        by_uri[canonical(NFD_CAFE)]["labels"][0]
    assert by_uri[canonical(NFC_CAFE)]["labels"][0] != \
        by_uri[canonical(NFC_CAFE + " ")]["labels"][0]


def test_prefix_listing_reads_every_key_and_names_graph_vertices_exactly(
        spark, config, trained_model, s3, objects, graph):
    report = run_inference(spark, config, InputSource(PREFIX, f"s3a://{ODD_BUCKET}/"),
                           MODEL_URI, f"{OUT}/prefix")
    assert (report.listed, report.classified, report.dead_lettered) == (len(objects),
                                                                        len(objects), 0)
    assert report.graph_written == len(objects) and report.reconciles()
    assert_each_object_read_from_its_own_key(spark, report, f"{OUT}/prefix", objects)
    assert sorted(graph.V().has_label("image").id_().to_list()) == sorted(
        canonical(key) for key in objects)


@pytest.mark.parametrize("kind", [MANIFEST, INVENTORY])
def test_manifest_and_inventory_read_every_key(spark, config, trained_model, s3, objects, kind):
    """The CSV kinds; the inventory holds one more entry, malformed as no S3 Inventory writes
    it: dead-lettered, not fatal."""
    malformed = "img%zz"
    uri = put_manifest(s3, objects) if kind == MANIFEST else \
        put_inventory(s3, "csv", "CSV", malformed)
    output = f"{OUT}/{kind}"
    report = run_inference(spark, replace(config, graph=replace(config.graph, enabled=False)),
                           InputSource(kind, uri), MODEL_URI, output)
    assert_each_object_read_from_its_own_key(spark, report, output, objects)
    letters = [(row["uri"], row["reason"]) for row in
               spark.read.parquet(f"{output}/{DEAD_LETTER_DIR}")
               .where(f"run_id = '{report.run_id}'").collect()]
    assert letters == ([] if kind == MANIFEST else [(canonical(malformed), "object not found")])
    assert report.listed == len(objects) + len(letters) and report.reconciles()


def test_parquet_manifest_and_inventory_select_every_key(spark, config, s3, objects):
    """A Parquet manifest of `uri`s (as s3a:// URIs) and a Parquet S3 Inventory report name
    exactly the keys S3 holds."""
    expected = sorted(canonical(key) for key in objects)
    manifest = put_parquet(s3, "odd-keys/manifest.parquet",
                           {"uri": [f"s3a://{ODD_BUCKET}/{key}" for key in objects]})
    sources = [InputSource(MANIFEST, f"s3a://{BUCKET}/{manifest}"),
               InputSource(INVENTORY, put_inventory(s3, "parquet", "Parquet"))]
    for source in sources:
        selected = select_objects(spark, source, config.input, config.s3, None).collect()
        assert sorted(row["uri"] for row in selected) == expected, source


def test_zero_byte_object_is_selected_by_modified_time_and_dead_lettered(
        spark, config, trained_model, s3):
    """An empty object under --modified-after is listed with its real modified time (size 0)
    and dead-lettered as empty, not filtered out uncounted."""
    put_objects(s3, BUCKET, "odd-keys-empty/", {"empty.png": b""})
    an_hour_ago = (datetime.now(timezone.utc) - timedelta(hours=1)).isoformat()
    recent = replace(config, input=replace(config.input, modified_after=an_hour_ago),
                     graph=replace(config.graph, enabled=False))
    report = run_inference(spark, recent, InputSource(PREFIX, f"s3a://{BUCKET}/odd-keys-empty/"),
                           MODEL_URI, f"{OUT}/empty")
    assert (report.listed, report.dead_lettered_by_reason) == (1, {"empty object (0 bytes)": 1})
    assert report.reconciles()


def test_prefix_options_and_single_objects(spark, config, objects):
    """A non-recursive listing with a glob keeps the matching keys directly under the prefix;
    an input URI naming an object (no trailing '/', no folder of that name) lists it alone."""
    top_jpgs = replace(config.input, recursive=False, glob="*.jpg")
    selected = select_objects(spark, InputSource(PREFIX, f"s3a://{ODD_BUCKET}/"), top_jpgs,
                              config.s3, None).collect()
    assert sorted(row["uri"] for row in selected) == sorted(
        canonical(key) for key in objects if key.endswith(".jpg") and "/" not in key)
    for key in ("img", "img?v=2.jpg", "a#b.jpg"):
        selected = select_objects(spark, InputSource(PREFIX, f"s3a://{ODD_BUCKET}/{key}"),
                                  config.input, config.s3, None).collect()
        assert [(row["uri"], row["size"]) for row in selected] == [
            (canonical(key), len(objects[key]))]
