"""Photos with planted duplicates through inference (embeddings on), then the link job, against
the real S3 and Gremlin servers; `python -m imagegraph.graph.query` prints the planted groups;
reruns change no count; a later run's images are linked to the earlier ones without relinking
those."""
import io
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import services
import skimage.data
from conftest import BUCKET, LOCAL_YAML, MODEL_URI
from gremlin_python.process.graph_traversal import __
from gremlin_python.process.traversal import T
from near_duplicate_photos import copies
from PIL import Image
from s3_objects import put_objects

from imagegraph.errors import JobError
from imagegraph.infer.job import run_inference
from imagegraph.link import job as link_job
from imagegraph.link.job import run_link
from imagegraph.link.pairs import similar_images
from imagegraph.storage.selection import PREFIX, InputSource

OUTPUT = f"s3a://{BUCKET}/link-results"
PREFIX_URI = f"s3://{BUCKET}/link-incoming"
MODEL = "digits@v1"


def _jpeg(pixels: np.ndarray, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _photos() -> dict[str, bytes]:
    """Three unrelated photos and planted groups: astronaut and its byte-for-byte copy (same
    content), coffee re-encoded and halved, rocket stored turned with the EXIF orientation that
    turns it back (near duplicates; a crop of 2.5% a side is 12 bits from it at 32x32, beyond
    `link.near_duplicate_max_distance`)."""
    astronaut, coffee, rocket = (skimage.data.astronaut(), skimage.data.coffee(),
                                 skimage.data.rocket())
    half = np.asarray(Image.fromarray(coffee).resize((coffee.shape[1] // 2,
                                                      coffee.shape[0] // 2)))
    return {
        "astronaut.jpg": _jpeg(astronaut), "copies/astronaut.jpg": _jpeg(astronaut),
        "coffee.jpg": _jpeg(coffee), "coffee-q40.jpg": _jpeg(coffee, 40),
        "coffee-half.jpg": _jpeg(half),
        "rocket.jpg": _jpeg(rocket),
        "rocket-rotated.jpg": copies(rocket, ("exif-rotated",))["exif-rotated"],
        "camera.jpg": _jpeg(np.stack([skimage.data.camera()] * 3, axis=-1)),
        "clock.jpg": _jpeg(np.stack([skimage.data.clock()] * 3, axis=-1)),
        "chelsea.jpg": _jpeg(skimage.data.chelsea()),
    }


def uri(name: str) -> str:
    return f"{PREFIX_URI}/{name}"


@pytest.fixture(scope="module")
def embedding_config(config):
    return replace(config, inference=replace(config.inference, embedding=True))


@pytest.fixture(scope="module")
def linked(spark, embedding_config, trained_model, graph, s3):
    put_objects(s3, BUCKET, "link-incoming/", _photos())
    inferred = run_inference(spark, embedding_config,
                             InputSource(PREFIX, f"s3a://{BUCKET}/link-incoming/"), MODEL_URI,
                             OUTPUT)
    assert inferred.graph_written == 10
    return run_link(spark, embedding_config, OUTPUT, MODEL)


def counts(graph) -> tuple[dict, dict]:
    return (graph.V().group_count().by(T.label).next(),
            graph.E().group_count().by(T.label).next())


def query(config, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "imagegraph.graph.query", "--config", LOCAL_YAML,
                           "--gremlin-endpoint", config.graph.endpoint, *args],
                          capture_output=True, text=True, timeout=120, cwd=services.ROOT,
                          env=os.environ)
    assert done.returncode == 0, done.stderr
    return done.stdout


def section(output: str, title: str) -> list[str]:
    """The image names listed under the section of `output` whose title starts `title`."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"  {title}"))
    listed = []
    for line in lines[start + 1:]:
        if not line.startswith("    "):
            break
        listed.append(next(word for word in line.split() if word.startswith("s3://"))
                      .removeprefix(PREFIX_URI + "/"))
    return listed


def test_the_link_run_reports_what_it_found(linked):
    assert linked.new_images == linked.images == 10
    assert linked.same_content_images == 2
    assert 0 < linked.near_duplicate_pairs_compared < 10 * 10
    assert linked.near_duplicate_edges >= 4  # coffee's three, rocket's pair
    assert linked.similar_to_edges > 0


def test_query_prints_the_planted_groups(linked, config):
    astronaut = query(config, "image", uri("astronaut.jpg"))
    assert section(astronaut, "same content") == ["copies/astronaut.jpg"]
    assert section(astronaut, "near duplicates")[0] == "copies/astronaut.jpg"
    assert section(astronaut, "most similar")[0] == "copies/astronaut.jpg"
    coffee = query(config, "image", uri("coffee.jpg"))
    assert section(coffee, "same content") == []
    assert set(section(coffee, "near duplicates")) == {"coffee-q40.jpg", "coffee-half.jpg"}
    rocket = query(config, "image", uri("rocket-rotated.jpg"))
    assert section(rocket, "near duplicates") == ["rocket.jpg"]


def test_no_unrelated_photo_is_a_near_duplicate(linked, graph):
    groups = [{"astronaut.jpg", "copies/astronaut.jpg"},
              {"coffee.jpg", "coffee-q40.jpg", "coffee-half.jpg"},
              {"rocket.jpg", "rocket-rotated.jpg"}]
    pairs = (graph.E().has_label("near_duplicate").project("out", "in")
             .by(__.out_v().id_()).by(__.in_v().id_()).to_list())
    for pair in pairs:
        names = {pair["out"].removeprefix(PREFIX_URI + "/"),
                 pair["in"].removeprefix(PREFIX_URI + "/")}
        assert any(names <= group for group in groups), names


def test_reruns_change_no_count(linked, spark, embedding_config, graph):
    before = counts(graph)
    assert before[0]["content"] == 9
    assert before[1]["has_content"] == 10
    again = run_link(spark, embedding_config, OUTPUT, MODEL)
    assert again.runs_linked == () and "nothing to do" in again.summary_lines()[0]
    relinked = run_link(spark, embedding_config, OUTPUT, MODEL, relink=True)
    assert relinked.runs_linked == linked.runs_linked
    assert counts(graph) == before


def test_the_similar_join_reads_the_signatures_staged_by_the_run(linked, spark,
                                                                 embedding_config, monkeypatch):
    """Each of the similar join's actions reads the signatures from the link run's staging
    area, written once; none signs the embeddings again (the pandas UDF that signs them is in
    neither frame the join is given)."""
    given = []

    def similar_images_seen(new, every, *args):
        given.extend((frame._jdf.queryExecution().executedPlan().toString(),
                      frame.inputFiles()) for frame in (new, every))
        return similar_images(new, every, *args)

    monkeypatch.setattr(link_job, "similar_images", similar_images_seen)
    relinked = run_link(spark, embedding_config, OUTPUT, MODEL, relink=True)
    assert len(given) == 2
    staged = f"{OUTPUT}/_staging/link-{relinked.link_id}/signed/"
    for plan, files in given:
        assert "ArrowEvalPython" not in plan
        assert files and all(name.startswith(staged) for name in files)


def test_a_later_run_is_linked_to_the_earlier_images_alone(linked, spark, embedding_config,
                                                           graph, s3):
    before = counts(graph)
    put_objects(s3, BUCKET, "link-later/", {"rocket-again.jpg": _photos()["rocket.jpg"]})
    run_inference(spark, embedding_config, InputSource(PREFIX, f"s3a://{BUCKET}/link-later/"),
                  MODEL_URI, OUTPUT)
    later = run_link(spark, embedding_config, OUTPUT, MODEL)
    assert (later.new_images, later.images) == (1, 11)
    assert later.same_content_images == 1
    again = f"s3://{BUCKET}/link-later/rocket-again.jpg"
    assert set(graph.V(again).both("near_duplicate").id_().to_list()) == {
        uri("rocket.jpg"), uri("rocket-rotated.jpg")}
    after = counts(graph)
    assert after[1]["has_content"] == before[1]["has_content"] + 1
    assert after[0]["content"] == before[0]["content"]


def test_a_run_without_its_report_is_not_linked_until_it_has_one(linked, spark,
                                                                  embedding_config, graph, s3):
    """A run still committing (no run report yet) is neither linked nor marked linked; once
    its report is there, the next link run links it."""
    put_objects(s3, BUCKET, "link-unfinished/", {"coffee-again.jpg": _photos()["coffee.jpg"]})
    unfinished = run_inference(spark, embedding_config,
                               InputSource(PREFIX, f"s3a://{BUCKET}/link-unfinished/"),
                               MODEL_URI, OUTPUT)
    report_key = OUTPUT.removeprefix(f"s3a://{BUCKET}/") + f"/_reports/{unfinished.run_id}.json"
    report = s3.get_object(Bucket=BUCKET, Key=report_key)["Body"].read()
    s3.delete_object(Bucket=BUCKET, Key=report_key)
    waiting = run_link(spark, embedding_config, OUTPUT, MODEL)
    assert unfinished.run_id not in waiting.runs_linked
    again = f"s3://{BUCKET}/link-unfinished/coffee-again.jpg"
    assert graph.V(again).both_e("near_duplicate").count().next() == 0
    s3.put_object(Bucket=BUCKET, Key=report_key, Body=report)
    finished = run_link(spark, embedding_config, OUTPUT, MODEL)
    assert finished.runs_linked == (unfinished.run_id,) and finished.new_images == 1
    assert graph.V(again).both_e("near_duplicate").count().next() > 0


def test_an_output_without_predictions_stops_with_one_line(spark, config, tmp_path):
    with pytest.raises(JobError, match=r"^file://.*/predictions does not exist: run "
                                       r"jobs/infer.py with this --output first$"):
        run_link(spark, config, f"file://{tmp_path}", MODEL)
