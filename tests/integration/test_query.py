"""`python -m imagegraph.graph.query` as a process against the test Gremlin Server, over a small
graph written with the writers' own records: what it prints for an image, a class and a run, and
its one-line errors."""
import os
import subprocess
import sys

import pytest
import services
from conftest import LOCAL_YAML

from imagegraph.graph.connection import GremlinConnection
from imagegraph.graph.elements import (
    classified_as_edges,
    content_elements,
    image_vertex,
    model_elements,
    near_duplicate_edge,
    similar_to_edge,
)
from imagegraph.graph.writer import GraphWriter
from imagegraph.model.artifact import ModelMetadata

METADATA = ModelMetadata(name="digits", version="v1", input_height=32, input_width=32,
                         channels=1, preprocessing="scale_0_1", classes=("cat", "dog", "fox"),
                         uri="s3a://b/models/digits/v1")
A, B, C, D = (f"s3://b/photos/{name}.jpg" for name in ("a", "a-copy", "a-small", "other"))
ROWS = [
    {"uri": A, "sha256": "1" * 64, "labels": ["cat", "dog"], "scores": [0.8, 0.15]},
    {"uri": B, "sha256": "1" * 64, "labels": ["cat", "fox"], "scores": [0.7, 0.2]},
    {"uri": C, "sha256": "2" * 64, "labels": ["dog", "cat"], "scores": [0.6, 0.3]},
    {"uri": D, "sha256": "3" * 64, "labels": ["fox", "cat"], "scores": [0.9, 0.05]},
]


@pytest.fixture(scope="module")
def small_graph(graph, config):
    """The model, four images of run `run-1` with their classes, content, near-duplicate and
    similar_to edges; the last image also classified by digits@v2's run `run-2`."""
    writer = GraphWriter(GremlinConnection(config.graph), config.graph)
    writer.write_elements(*model_elements(METADATA))
    writer.write_elements([image_vertex(row, METADATA.tag) for row in ROWS],
                          [e for row in ROWS for e in classified_as_edges(row, METADATA.tag,
                                                                          "run-1")])
    writer.write_elements([], classified_as_edges(
        {**ROWS[3], "labels": ["fox"], "scores": [0.5]}, "digits@v2", "run-2"))
    contents = [content_elements(row["uri"], row["sha256"]) for row in ROWS]
    writer.write_elements(list({v.id: v for v, _ in contents}.values()),
                          [e for _, e in contents])
    writer.write_elements([], [near_duplicate_edge(A, C, 3, METADATA.tag),
                               near_duplicate_edge(B, C, 3, METADATA.tag),
                               similar_to_edge(C, A, 0.05, METADATA.tag),
                               similar_to_edge(A, D, 0.4, METADATA.tag),
                               similar_to_edge(A, B, 0.0, METADATA.tag)])
    writer.connection.close()
    return graph


def query(config, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "imagegraph.graph.query", "--config", LOCAL_YAML,
                           "--gremlin-endpoint", config.graph.endpoint, *args],
                          capture_output=True, text=True, timeout=120, cwd=services.ROOT,
                          env=os.environ)


def test_image_prints_its_classes_duplicates_and_neighbours_nearest_first(small_graph, config):
    done = query(config, "image", A)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"image {A}",
        f"  sha256 {'1' * 64}, last written by run run-1 (digits@v1)",
        "  classes (2):",
        "    0.800  cat  (digits@v1)",
        "    0.150  dog  (digits@v1)",
        "  same content (1):",
        f"    {B}",
        "  near duplicates (1, perceptual-hash distance in bits of 64):",
        f"        3  {C}",
        "  most similar (3, embedding distance 0..2):",
        f"    0.000  {B}  (digits@v1)",
        f"    0.050  {C}  (digits@v1)",
        f"    0.400  {D}  (digits@v1)",
    ]


def test_image_names_each_models_last_run(small_graph, config):
    both = query(config, "image", D)
    v2 = query(config, "image", D, "--model", "digits@v2")
    assert (both.returncode, v2.returncode) == (0, 0), both.stderr + v2.stderr
    assert both.stdout.splitlines()[1:5] == [
        f"  sha256 {'3' * 64}, last written by run run-1 (digits@v1), run run-2 (digits@v2)",
        "  classes (3):", "    0.900  fox  (digits@v1)", "    0.500  fox  (digits@v2)"]
    assert v2.stdout.splitlines()[1:4] == [
        f"  sha256 {'3' * 64}, last written by run run-2 (digits@v2)",
        "  classes (1):", "    0.500  fox  (digits@v2)"]


def test_top_bounds_every_section(small_graph, config):
    done = query(config, "image", A, "--top", "1")
    assert done.returncode == 0, done.stderr
    assert "    0.150  dog  (digits@v1)" not in done.stdout
    assert f"    0.050  {C}  (digits@v1)" not in done.stdout
    assert f"    0.000  {B}  (digits@v1)" in done.stdout


def test_class_lists_its_images_best_score_first(small_graph, config):
    done = query(config, "class", "cat", "--top", "3", "--model", "digits@v1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "class cat (digits@v1): 3 image(s), best score first (at most 3)",
        f"  0.800  {A}  (digits@v1)", f"  0.700  {B}  (digits@v1)",
        f"  0.300  {C}  (digits@v1)"]


def test_run_counts_what_it_wrote(small_graph, config):
    done = query(config, "run", "run-1", "--top", "2")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:2] == ["run run-1: 4 image(s), 8 classified_as edge(s) of digits@v1",
                         "  images (2 of 4):"]
    listed = [line.strip() for line in lines[2:]]
    assert len(listed) == 2 and set(listed) < {A, B, C, D} and listed == sorted(listed)


@pytest.mark.parametrize("args, line", [
    (["image", "s3://b/nothing.jpg"], "no image vertex s3://b/nothing.jpg"),
    (["class", "zebra"], "no class vertex class:zebra"),
    (["run", "run-0"], "no classified_as edge of run run-0"),
])
def test_what_the_graph_does_not_hold_is_one_line_and_exit_1(small_graph, config, args, line):
    done = query(config, *args)
    assert (done.returncode, done.stdout, done.stderr) == (
        1, "", f"python -m imagegraph.graph.query: {line}\n")


def test_an_unreachable_endpoint_is_one_line_and_exit_2(config):
    port = services.free_port()
    done = subprocess.run([sys.executable, "-m", "imagegraph.graph.query", "--config", LOCAL_YAML,
                           "--gremlin-endpoint", f"ws://127.0.0.1:{port}/gremlin",
                           "--set", "graph.connect_timeout_s=2", "run", "run-1"],
                          capture_output=True, text=True, timeout=120, env=os.environ)
    assert done.returncode == 2
    assert done.stderr.startswith(f"python -m imagegraph.graph.query: error: cannot read the graph "
                                  f"at ws://127.0.0.1:{port}/gremlin: ")
    assert done.stderr.count("\n") == 1


def test_help_names_the_three_commands():
    done = subprocess.run([sys.executable, "-m", "imagegraph.graph.query", "--help"],
                          capture_output=True, text=True, timeout=60, env=os.environ)
    assert done.returncode == 0
    assert all(f"\n    {command}  " in done.stdout for command in ("image", "class", "run"))
