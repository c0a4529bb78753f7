"""Backfills: a prefix listing, a manifest and an S3 Inventory report over the same objects give
the same graph; two shards, one killed midway and resumed, put every image in the graph exactly
once with reports that reconcile."""
from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from urllib.parse import quote_plus

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sample_images
import services
from conftest import BUCKET, MODEL_URI
from gremlin_python.process.graph_traversal import __
from s3_inventory import put_csv_inventory, put_parquet_inventory
from s3_objects import put_objects

from imagegraph.dead_letters import FINAL
from imagegraph.infer.job import run_inference
from imagegraph.storage.selection import INVENTORY, MANIFEST, PREFIX, InputSource, Shard, shard_of

PREFIX_KEY = "backfill/"
OUT = f"s3a://{BUCKET}/backfill-out"
SPACED_KEY = "digits/7/with space+plus.png"  # URL-encoded in inventory CSV: decoding matters


@pytest.fixture(scope="module")
def objects(s3):
    """{key under backfill/: bytes}: 36 digits (one under a key with a space and a plus) and a
    truncated JPEG."""
    digits, _ = sample_images.digit_images(limit=42)
    chosen = dict(sorted(digits.items())[:35])
    chosen[SPACED_KEY] = next(iter(digits.values()))
    chosen.update(sample_images.corrupt_image())
    put_objects(s3, BUCKET, PREFIX_KEY, chosen)
    return chosen


def uri(key: str) -> str:
    return f"s3://{BUCKET}/{PREFIX_KEY}{key}"


def valid_uris(objects) -> set[str]:
    return {uri(key) for key in objects if key != sample_images.CORRUPT_KEY}


def graph_snapshot(g) -> tuple[list, list]:
    """(sorted image vertex ids, sorted (image id, class) of classified_as edges)."""
    images = sorted(g.V().has_label("image").id_().to_list())
    edges = sorted((e["image"], e["class"]) for e in
                   g.E().has_label("classified_as").project("image", "class")
                   .by(__.out_v().id_()).by(__.in_v().values("name")).to_list())
    return images, edges


def put_manifest(s3, objects) -> str:
    rows = io.StringIO()
    writer = csv.writer(rows)
    writer.writerow(["bucket", "key", "size"])
    for key, data in objects.items():
        writer.writerow([BUCKET, PREFIX_KEY + key, len(data)])
    s3.put_object(Bucket=BUCKET, Key="manifests/backfill.csv", Body=rows.getvalue().encode())
    return f"s3a://{BUCKET}/manifests/backfill.csv"


def put_inventory(s3) -> str:
    """An S3 Inventory CSV report of the prefix's objects in two data files, keys URL-encoded,
    plus a delete marker and an older version to leave out."""
    listed = {o["Key"]: o for o in
              s3.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX_KEY)["Contents"]}
    rows = [[BUCKET, quote_plus(key), "true", "false", str(entry["Size"]),
             entry["LastModified"].strftime("%Y-%m-%dT%H:%M:%S.000Z")]
            for key, entry in sorted(listed.items())]
    rows.append([BUCKET, quote_plus(PREFIX_KEY + "deleted.png"), "true", "true", "", ""])
    rows.append([BUCKET, quote_plus(PREFIX_KEY + "old-version.png"), "false", "false", "9",
                 "2020-01-01T00:00:00.000Z"])
    return put_csv_inventory(s3, BUCKET, f"inventory/{BUCKET}/backfill/", BUCKET,
                             ["Bucket", "Key", "IsLatest", "IsDeleteMarker", "Size",
                              "LastModifiedDate"], rows, files=2)


def test_prefix_manifest_and_inventory_give_the_same_graph(spark, config, trained_model, s3,
                                                           objects, graph):
    sources = [InputSource(PREFIX, f"s3a://{BUCKET}/{PREFIX_KEY}"),
               InputSource(MANIFEST, put_manifest(s3, objects)),
               InputSource(INVENTORY, put_inventory(s3))]
    snapshots = []
    for index, source in enumerate(sources):
        graph.V().drop().iterate()
        report = run_inference(spark, config, source, MODEL_URI, f"{OUT}/source-{index}")
        assert (report.listed, report.graph_written, report.dead_lettered) == (37, 36, 1)
        assert report.reconciles()
        snapshots.append(graph_snapshot(graph))
    images, edges = snapshots[0]
    assert images == sorted(valid_uris(objects))
    assert len(edges) == 36 * 3 and uri(SPACED_KEY) in images
    assert snapshots[1] == snapshots[0] and snapshots[2] == snapshots[0]


SMALL_KEY = "backfill-small/"  # a second, small prefix for the Parquet sources


def put_parquet(s3, key: str, table: pa.Table) -> str:
    """Put `table` as one Parquet file at s3://BUCKET/key; returns its s3a:// URI."""
    data = io.BytesIO()
    pq.write_table(table, data)
    s3.put_object(Bucket=BUCKET, Key=key, Body=data.getvalue())
    return f"s3a://{BUCKET}/{key}"


def small_parquet_inventory(s3, listed: dict) -> str:
    """An S3 Inventory Parquet report (keys not URL-encoded, typed columns) from `listed`
    ({key: list_objects_v2 entry}), plus a delete marker and an older version to leave out."""
    keys = sorted(listed)
    return put_parquet_inventory(s3, BUCKET, f"inventory/{BUCKET}/small/", BUCKET, {
        "bucket": [BUCKET] * (len(keys) + 2),
        "key": keys + [SMALL_KEY + "deleted.png", SMALL_KEY + "old-version.png"],
        "version_id": ["v1"] * (len(keys) + 2),
        "is_latest": [True] * len(keys) + [True, False],
        "is_delete_marker": [False] * len(keys) + [True, False],
        "size": [listed[k]["Size"] for k in keys] + [None, 9],
        "last_modified_date": [listed[k]["LastModified"] for k in keys]
        + [None, datetime(2020, 1, 1, tzinfo=timezone.utc)]})


def test_parquet_manifest_inventory_and_uri_column_give_the_same_graph(
        spark, config, trained_model, s3, graph):
    """Six objects (a digit under a key with a space and a plus, a truncated JPEG): a prefix
    listing, a Parquet manifest (bucket, key, size), a Parquet S3 Inventory report and CSV and
    Parquet manifests with a `uri` column (s3a:// URIs, made canonical) give the same graph."""
    digits, _ = sample_images.digit_images(limit=12)
    small = {**dict(sorted(digits.items())[:4]), SPACED_KEY: next(iter(digits.values())),
             **sample_images.corrupt_image()}
    put_objects(s3, BUCKET, SMALL_KEY, small)
    listed = {o["Key"]: o for o in
              s3.list_objects_v2(Bucket=BUCKET, Prefix=SMALL_KEY)["Contents"]}
    keys = sorted(listed)
    uris = [f"s3a://{BUCKET}/{key}" for key in keys]
    uri_csv = "uri\n" + "".join(f'"{u}"\n' for u in uris)
    s3.put_object(Bucket=BUCKET, Key="manifests/small-uri.csv", Body=uri_csv.encode())
    sources = [
        InputSource(PREFIX, f"s3a://{BUCKET}/{SMALL_KEY}"),
        InputSource(MANIFEST, put_parquet(s3, "manifests/small.parquet", pa.table({
            "bucket": [BUCKET] * len(keys), "key": keys,
            "size": [listed[k]["Size"] for k in keys]}))),
        InputSource(INVENTORY, small_parquet_inventory(s3, listed)),
        InputSource(MANIFEST, f"s3a://{BUCKET}/manifests/small-uri.csv"),
        InputSource(MANIFEST, put_parquet(s3, "manifests/small-uri.parquet",
                                          pa.table({"uri": uris}))),
    ]
    snapshots = []
    for index, source in enumerate(sources):
        graph.V().drop().iterate()
        report = run_inference(spark, config, source, MODEL_URI, f"{OUT}/small-{index}")
        assert (report.listed, report.graph_written, report.dead_lettered) == (6, 5, 1), source
        assert report.reconciles(), report.disagreements()
        snapshots.append(graph_snapshot(graph))
    images, edges = snapshots[0]
    assert images == sorted(f"s3://{BUCKET}/{SMALL_KEY}{key}" for key in small
                            if key != sample_images.CORRUPT_KEY)
    assert len(edges) == 5 * 3
    assert all(snapshot == snapshots[0] for snapshot in snapshots[1:])

def test_modified_filters_select_by_time(spark, config, trained_model, objects):
    future = (datetime.now(timezone.utc) + timedelta(days=1)).isoformat()
    later = replace(config, input=replace(config.input, modified_after=future),
                    graph=replace(config.graph, enabled=False))
    report = run_inference(spark, later, InputSource(PREFIX, f"s3a://{BUCKET}/{PREFIX_KEY}"),
                           MODEL_URI, f"{OUT}/filtered")
    assert (report.listed, report.classified, report.reconciles()) == (0, 0, True)


def infer_process(endpoints, *args: str) -> subprocess.Popen:
    """jobs/infer.py as its own process group (driver, JVM and Python workers)."""
    return subprocess.Popen(
        [sys.executable, str(services.ROOT / "jobs" / "infer.py"), "--config", "conf/local.yaml",
         "--input", f"s3a://{BUCKET}/{PREFIX_KEY}", "--model", MODEL_URI, "--output",
         f"{OUT}/sharded", "--set", "run.objects_per_chunk=5", "--set", "inference.partitions=2",
         *args],
        cwd=services.ROOT, env={**os.environ, **endpoints.env()}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True)


def run_ids_with_predictions(s3) -> set[str]:
    """Runs with committed prediction files (not those still under _temporary/)."""
    prefix = "backfill-out/sharded/predictions/"
    listing = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    names = [o["Key"][len(prefix):].split("/") for o in listing.get("Contents", [])]
    return {name[0].split("=", 1)[1] for name in names
            if len(name) == 2 and name[0].startswith("run_id=") and name[1].endswith(".parquet")}


def read_reports(s3) -> list[dict]:
    listing = s3.list_objects_v2(Bucket=BUCKET, Prefix="backfill-out/sharded/_reports/")
    return [json.loads(s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read())
            for o in listing.get("Contents", []) if o["Key"].endswith(".json")]


def test_two_shards_one_killed_midway_and_resumed(spark, config, trained_model, s3, objects,
                                                  graph, endpoints):
    graph.V().drop().iterate()
    shard_uris = [{u for u in map(uri, objects) if shard_of(u, 2) == index} for index in (0, 1)]
    assert shard_uris[0] and shard_uris[1]

    first = run_inference(spark, config, InputSource(PREFIX, f"s3a://{BUCKET}/{PREFIX_KEY}"),
                          MODEL_URI, f"{OUT}/sharded", shard=Shard(0, 2))
    assert first.listed == len(shard_uris[0]) and first.reconciles()

    # shard 1 in its own process, killed once its first chunk is committed; its lease (on a
    # short lifetime here) stays behind and keeps the next run out until it expires
    killed = infer_process(endpoints, "--shard", "1/2", "--set", "run.lease_ttl_s=3")
    deadline = time.monotonic() + 300
    while run_ids_with_predictions(s3) == {first.run_id}:
        assert killed.poll() is None, killed.stdout.read()
        assert time.monotonic() < deadline, "shard 1 committed no chunk in 300 s"
        time.sleep(0.2)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    killed_run = (run_ids_with_predictions(s3) - {first.run_id}).pop()
    assert all(report["run_id"] != killed_run for report in read_reports(s3))  # died unreported
    time.sleep(5)

    resumed = run_inference(spark, config, InputSource(PREFIX, f"s3a://{BUCKET}/{PREFIX_KEY}"),
                            MODEL_URI, f"{OUT}/sharded", shard=Shard(1, 2), resume=True)
    assert resumed.listed == len(shard_uris[1])
    assert 0 < resumed.skipped_done < resumed.listed  # the killed run's chunks, and only those
    assert resumed.reconciles()

    # every image in the graph exactly once, with its three edges
    images, edges = graph_snapshot(graph)
    assert images == sorted(valid_uris(objects))
    assert sorted(e[0] for e in edges) == sorted(images * 3)

    # predictions: each valid object once across the three runs; the resumed run redid none
    rows = (spark.read.parquet(f"{OUT}/sharded/predictions").select("uri", "run_id").collect())
    uris = [row["uri"] for row in rows]
    assert sorted(uris) == sorted(valid_uris(objects)), sorted(
        (row["uri"], row["run_id"], first.run_id, killed_run, resumed.run_id) for row in rows
        if uris.count(row["uri"]) > 1)
    by_run = {run: {row["uri"] for row in rows if row["run_id"] == run}
              for run in (first.run_id, killed_run, resumed.run_id)}
    assert len(by_run[killed_run]) == resumed.skipped_done
    assert by_run[first.run_id] | by_run[killed_run] | by_run[resumed.run_id] == set(uris)
    letters = spark.read.parquet(f"{OUT}/sharded/dead_letter").collect()
    assert [(row["uri"], row["stage"], row["retry_class"], row["attempt"])
            for row in letters] == [(uri(sample_images.CORRUPT_KEY), "decode", FINAL, 1)]

    # the two finished runs' reports, as written under _reports/, cover every object
    reports = {report["run_id"]: report for report in read_reports(s3)}
    assert set(reports) == {first.run_id, resumed.run_id}
    assert all(report["reconciled"] for report in reports.values())
    assert sum(report["listed"] for report in reports.values()) == len(objects)
    assert reports[resumed.run_id]["shard"] == "1/2"
    assert reports[resumed.run_id]["skipped_done"] == resumed.skipped_done
