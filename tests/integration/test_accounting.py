"""Exact accounting of whole runs against the real servers: the graph holds exactly the latest
run's top-k edges of each (image, model); a committed file removed behind the job's back makes
the run not reconcile, with the term that disagrees named; a chunk left partly visible is
finished by `--resume` with every object accounted for once."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import replace

import pytest
import sample_images
import services
from conftest import BUCKET, MODEL_URI
from gremlin_python.process.graph_traversal import __
from gremlin_python.process.traversal import T
from s3_objects import put_objects

from imagegraph.dead_letters import REFUSED
from imagegraph.infer import job as infer_job
from imagegraph.infer.job import run_inference
from imagegraph.model.artifact import METADATA_FILE
from imagegraph.runs.report import RunReport
from imagegraph.storage.outputs import DEAD_LETTER_DIR, PREDICTIONS_DIR
from imagegraph.storage.selection import PREFIX, InputSource

MODEL_TAG = "digits@v1"


@pytest.fixture(scope="module")
def digits() -> dict[str, bytes]:
    """{'<digit>/<n>.png': bytes}: 12 real digits."""
    _, held_out = sample_images.digit_images(limit=72)
    return dict(sorted(held_out.items())[:12])


def edge_ids_by_image(g) -> dict[str, set[str]]:
    """{image id: ids of its classified_as edges}, read from the graph."""
    pairs = (g.E().has_label("classified_as").project("image", "id")
             .by(__.out_v().id_()).by(__.id_()).to_list())
    found: dict[str, set[str]] = {}
    for pair in pairs:
        found.setdefault(pair["image"], set()).add(pair["id"])
    return found


def predicted_edge_ids(spark, output: str, run_id: str) -> dict[str, set[str]]:
    """{image uri: the classified_as edge ids its run's prediction row implies}."""
    rows = (spark.read.parquet(f"{output}/{PREDICTIONS_DIR}").where(f"run_id = '{run_id}'")
            .select("uri", "labels").collect())
    return {row["uri"]: {f"{row['uri']}|{MODEL_TAG}|{label}" for label in row["labels"]}
            for row in rows}


def test_reruns_leave_exactly_the_latest_top_k_edges(spark, config, trained_model, s3, graph,
                                                     digits):
    """A rerun with a lower top-k, and one after an object was overwritten with another
    image, leave each image with exactly the edges of its latest prediction."""
    graph.V().drop().iterate()
    prefix = "accounting/edges/"
    put_objects(s3, BUCKET, prefix, digits)
    source = InputSource(PREFIX, f"s3a://{BUCKET}/{prefix}")
    output = f"s3a://{BUCKET}/accounting/edges-out"
    first = run_inference(spark, config, source, MODEL_URI, output)
    assert first.reconciles()
    assert edge_ids_by_image(graph) == predicted_edge_ids(spark, output, first.run_id)
    assert all(len(ids) == 3 for ids in edge_ids_by_image(graph).values())

    top_2 = replace(config, inference=replace(config.inference, top_k=2))
    second = run_inference(spark, top_2, source, MODEL_URI, output)
    assert second.reconciles()
    assert edge_ids_by_image(graph) == predicted_edge_ids(spark, output, second.run_id)
    assert graph.E().has_label("classified_as").count().next() == 2 * len(digits)

    # overwrite every "0" digit with a "1" digit: the top classes change
    keys = sorted(digits)
    zeros = [key for key in keys if key.startswith("0/")]
    one = next(digits[key] for key in keys if key.startswith("1/"))
    assert zeros
    put_objects(s3, BUCKET, prefix, {key: one for key in zeros})
    third = run_inference(spark, top_2, source, MODEL_URI, output)
    assert third.reconciles()
    latest = predicted_edge_ids(spark, output, third.run_id)
    assert edge_ids_by_image(graph) == latest
    per_image = graph.V().has_label("image").out_e("classified_as").group_count().by(
        __.out_v().id_()).next()
    assert sorted(per_image.values()) == [2] * len(digits)


def committed_part_files(s3, prefix: str, dataset: str) -> list[str]:
    listing = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}{dataset}/")
    return [o["Key"] for o in listing.get("Contents", [])
            if o["Key"].endswith(".parquet") and "/_" not in o["Key"]]


def test_a_committed_file_removed_behind_the_jobs_back_fails_reconciliation(
        endpoints, trained_model, s3, digits):
    """infer.py runs in two chunks; as soon as the first chunk's predictions are committed,
    one of its files is deleted. The run reads its commits back at the end: exit 1, and the
    summary names the equation that no longer holds."""
    prefix = "accounting/removed/"
    put_objects(s3, BUCKET, f"{prefix}in/", digits)
    output_prefix = f"{prefix}out/"
    removed: list[str] = []

    def remove_first_commit():
        deadline = time.monotonic() + 600
        while not removed and time.monotonic() < deadline:
            files = committed_part_files(s3, output_prefix, PREDICTIONS_DIR)
            if files:
                s3.delete_object(Bucket=BUCKET, Key=files[0])
                removed.append(files[0])
            time.sleep(0.1)

    watcher = threading.Thread(target=remove_first_commit, daemon=True)
    watcher.start()
    result = subprocess.run(
        [sys.executable, str(services.ROOT / "jobs" / "infer.py"), "--config", "conf/local.yaml",
         "--input", f"s3a://{BUCKET}/{prefix}in/", "--model", MODEL_URI,
         "--output", f"s3a://{BUCKET}/{output_prefix}", "--set", "run.objects_per_chunk=6",
         "--set", "inference.partitions=2", "--set", "graph.enabled=false"],
        cwd=services.ROOT, env={**os.environ, **endpoints.env()}, capture_output=True,
        text=True, timeout=600)
    watcher.join(5)
    assert removed, "no predictions file was committed"
    assert result.returncode == 1, result.stdout + result.stderr
    assert "  reconciled           NO: listed 12 = written" in result.stdout
    assert ("    disagrees: listed = committed predictions + committed dead letters + skipped: "
            "12 != ") in result.stdout
    assert "    disagrees: committed predictions = classified - graph failed: " in result.stdout


def test_resume_finishes_a_partly_visible_chunk(spark, config, trained_model, s3, graph, digits):
    """A commit cut short (one predictions file visible, the other and the dead letters not,
    as a job killed while its committer copies file by file leaves it): `--resume` skips the
    visible rows and does everything else, so each object is in the output exactly once."""
    graph.V().drop().iterate()
    prefix = "accounting/partial/"
    objects = {**digits, **sample_images.corrupt_image()}
    put_objects(s3, BUCKET, f"{prefix}in/", objects)
    source = InputSource(PREFIX, f"s3a://{BUCKET}/{prefix}in/")
    output = f"s3a://{BUCKET}/{prefix}out"
    two_files = replace(config, inference=replace(config.inference, partitions=2))
    first = run_inference(spark, two_files, source, MODEL_URI, output)
    assert first.reconciles() and (first.written, first.dead_lettered) == (12, 1)
    files = committed_part_files(s3, f"{prefix}out/", PREDICTIONS_DIR)
    assert len(files) == 2
    s3.delete_object(Bucket=BUCKET, Key=files[1])
    for key in committed_part_files(s3, f"{prefix}out/", DEAD_LETTER_DIR):
        s3.delete_object(Bucket=BUCKET, Key=key)
    visible = {row["uri"] for row in spark.read.parquet(f"{output}/{PREDICTIONS_DIR}").collect()}
    assert 0 < len(visible) < 12

    resumed = run_inference(spark, two_files, source, MODEL_URI, output, resume=True)
    assert resumed.reconciles(), resumed.disagreements()
    assert resumed.skipped_done == len(visible)
    assert (resumed.written, resumed.committed_dead_letters) == (12 - len(visible), 1)
    uris = [row["uri"] for row in spark.read.parquet(f"{output}/{PREDICTIONS_DIR}").collect()]
    assert len(uris) == len(set(uris)) == 12
    assert graph.V().has_label("image").count().next() == 12


def test_a_row_the_graph_refuses_is_dead_lettered_and_written_on_resume(
        spark, config, trained_model, s3, graph, digits):
    """Edges of another label already hold every id the victim's classified_as edges could
    take, so the graph refuses its edge request: the victim alone is dead-lettered (stage
    graph, refused: tried again), absent from predictions/, counted; once the blockers are gone,
    `--resume` writes it and nothing else."""
    graph.V().drop().iterate()
    prefix = "accounting/refused/"
    put_objects(s3, BUCKET, f"{prefix}in/", digits)
    victim = f"s3://{BUCKET}/{prefix}in/{sorted(digits)[0]}"
    blockers = graph.add_v("blocker").property(T.id, "blocker-a").as_("a") \
        .add_v("blocker").property(T.id, "blocker-b").as_("b")
    for label in range(10):
        blockers = blockers.add_e("blocker").from_("a").to("b") \
            .property(T.id, f"{victim}|{MODEL_TAG}|{label}")
    blockers.iterate()
    source = InputSource(PREFIX, f"s3a://{BUCKET}/{prefix}in/")
    output = f"s3a://{BUCKET}/{prefix}out"

    first = run_inference(spark, config, source, MODEL_URI, output)
    assert first.reconciles(), first.disagreements()
    assert (first.classified, first.graph_written, first.graph_failed) == (12, 11, 1)
    assert (first.written, first.committed_dead_letters) == (11, 1)
    assert first.graph_images == 11  # the victim's vertex was written, none of its edges
    letters = spark.read.parquet(f"{output}/{DEAD_LETTER_DIR}").collect()
    assert [(r["uri"], r["stage"], r["retry_class"], r["attempt"]) for r in letters] == [
        (victim, "graph", REFUSED, 1)]
    predicted = {r["uri"] for r in spark.read.parquet(f"{output}/{PREDICTIONS_DIR}").collect()}
    assert victim not in predicted and len(predicted) == 11

    graph.V("blocker-a", "blocker-b").drop().iterate()
    resumed = run_inference(spark, config, source, MODEL_URI, output, resume=True)
    assert resumed.reconciles(), resumed.disagreements()
    assert (resumed.skipped_done, resumed.written, resumed.dead_lettered) == (11, 1, 0)
    rows = spark.read.parquet(f"{output}/{PREDICTIONS_DIR}").where(
        f"run_id = '{resumed.run_id}'").collect()
    assert [r["uri"] for r in rows] == [victim]
    assert graph.V(victim).out_e("classified_as").count().next() == 3
    assert graph.V().has_label("image").count().next() == 12


def runs_by_image(g) -> dict[str, dict[str, set[str]]]:
    """{image id: {model: run ids of its classified_as edges of that model}}, read from the
    graph."""
    found: dict[str, dict[str, set[str]]] = {}
    for edge in (g.E().has_label("classified_as").project("image", "model", "run_id")
                 .by(__.out_v().id_()).by("model").by("run_id").to_list()):
        found.setdefault(edge["image"], {}).setdefault(edge["model"], set()).add(edge["run_id"])
    return found


def test_resume_writes_the_graph_for_objects_committed_without_it_or_to_another_endpoint(
        spark, config, trained_model, s3, graph, digits, proxied_gremlin_endpoint):
    """A `--no-graph` run, then `--resume` with the graph: every classified object is done
    again and lands in the graph (its prediction said no graph); only the undecodable one is
    skipped. `--resume` with the graph off skips everything (predictions/ holds it all), and
    `--resume` against another endpoint does the images again."""
    graph.V().drop().iterate()
    prefix = "accounting/graph-target/"
    put_objects(s3, BUCKET, f"{prefix}in/", {**digits, **sample_images.corrupt_image()})
    source = InputSource(PREFIX, f"s3a://{BUCKET}/{prefix}in/")
    output = f"s3a://{BUCKET}/{prefix}out"
    images = {f"s3://{BUCKET}/{prefix}in/{key}" for key in digits}
    no_graph = replace(config, graph=replace(config.graph, enabled=False))

    first = run_inference(spark, no_graph, source, MODEL_URI, output)
    assert first.reconciles(), first.disagreements()
    assert (first.written, first.committed_dead_letters) == (12, 1)
    assert graph.V().has_label("image").count().next() == 0

    with_graph = run_inference(spark, config, source, MODEL_URI, output, resume=True)
    assert with_graph.reconciles(), with_graph.disagreements()
    assert (with_graph.skipped_done, with_graph.written, with_graph.committed_dead_letters,
            with_graph.graph_written, with_graph.graph_images) == (1, 12, 0, 12, 12)
    assert runs_by_image(graph) == {image: {MODEL_TAG: {with_graph.run_id}} for image in images}
    assert all(len(ids) == 3 for ids in edge_ids_by_image(graph).values())

    off_again = run_inference(spark, no_graph, source, MODEL_URI, output, resume=True)
    assert off_again.reconciles(), off_again.disagreements()
    assert (off_again.skipped_done, off_again.written, off_again.classified) == (13, 0, 0)

    proxied = replace(config, graph=replace(config.graph, endpoint=proxied_gremlin_endpoint))
    other = run_inference(spark, proxied, source, MODEL_URI, output, resume=True)
    assert other.reconciles(), other.disagreements()
    assert (other.skipped_done, other.written, other.graph_images) == (1, 12, 12)
    assert runs_by_image(graph) == {image: {MODEL_TAG: {other.run_id}} for image in images}
    endpoints = (spark.read.parquet(f"{output}/{PREDICTIONS_DIR}").groupBy("graph_endpoint")
                 .count().collect())
    assert sorted((row["graph_endpoint"], row["count"]) for row in endpoints) == sorted(
        [("", 12), (config.graph.endpoint, 12), (proxied_gremlin_endpoint, 12)])


def model_copy(s3, version: str) -> str:
    """The test model exported again as `digits@<version>` (the same network, its metadata's
    version changed) beside it in S3; returns its URI."""
    source = MODEL_URI.removeprefix(f"s3a://{BUCKET}/")
    target = source.rsplit("/", 1)[0] + f"/{version}"
    for item in s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{source}/")["Contents"]:
        name = item["Key"].removeprefix(f"{source}/")
        body = s3.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()
        if name == METADATA_FILE:
            body = json.dumps({**json.loads(body), "version": version}).encode()
        s3.put_object(Bucket=BUCKET, Key=f"{target}/{name}", Body=body)
    return f"s3a://{BUCKET}/{target}"


def test_two_models_interleaved_on_the_same_images_both_reconcile(
        spark, config, trained_model, s3, graph, digits, monkeypatch):
    """A run of digits@v1 writes its images to the graph; before it reads them back, a whole
    run of digits@v2 classifies and writes the same images (the hook only puts that run
    there; both are real runs). Each model's facts are its own, on its classified_as edges:
    both reconcile, each reading back its 12 images, and every image holds three edges of each
    model with its run's id (v1's read-back used to find v2's run id on the image vertices:
    graph_images 0, reconciled NO)."""
    graph.V().drop().iterate()
    prefix = "accounting/two-models/"
    put_objects(s3, BUCKET, f"{prefix}in/", digits)
    source = InputSource(PREFIX, f"s3a://{BUCKET}/{prefix}in/")
    output = f"s3a://{BUCKET}/{prefix}out"
    v2_uri = model_copy(s3, "v2")
    runs: dict[str, RunReport] = {}
    read_back = infer_job._read_back

    def v2_runs_before_v1_reads_back(spark_, config_, report):
        if report.model == MODEL_TAG:
            runs["v2"] = run_inference(spark, config, source, v2_uri, output)
        read_back(spark_, config_, report)

    monkeypatch.setattr(infer_job, "_read_back", v2_runs_before_v1_reads_back)
    v1 = run_inference(spark, config, source, MODEL_URI, output)
    v2 = runs["v2"]
    assert (v1.model, v2.model) == (MODEL_TAG, "digits@v2")
    for run in (v1, v2):
        assert run.reconciles(), run.disagreements()
        assert (run.written, run.graph_written, run.graph_images) == (12, 12, 12)
    images = {f"s3://{BUCKET}/{prefix}in/{key}" for key in digits}
    assert runs_by_image(graph) == {image: {MODEL_TAG: {v1.run_id}, "digits@v2": {v2.run_id}}
                                    for image in images}
    assert sorted(len(ids) for ids in edge_ids_by_image(graph).values()) == [6] * 12
