"""EMR step templates: every template renders to a step whose job arguments the job's own
parser accepts, and the rendering rules."""
import json
import re
from pathlib import Path

import pytest

from imagegraph.emr.requests import missing_settings, render_steps
from imagegraph.emr.settings import load_settings
from imagegraph.emr.templates import check_step, load_template, render, split_spark_submit
from imagegraph.errors import JobError

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_NAMES = ("train", "infer", "backfill", "link")
CODE = "s3://code-bucket/imagegraph/0.1.0"
MODEL = "s3://models/digits/v1"
OUTPUT = "s3://results/imagegraph"
NEPTUNE = "wss://db.cluster-abc.us-east-1.neptune.amazonaws.com:8182/gremlin"
JOB_VALUES = {
    "train": {"input": "s3://images/train/", "output": MODEL},
    "infer": {"input": "s3://images/incoming/", "model": MODEL, "output": OUTPUT},
    "backfill": {"source_kind": "inventory", "source": "s3://inv/manifest.json", "shard": 3,
                 "shards": 8, "model": MODEL, "output": OUTPUT},
    "link": {"model": "digits@v1", "output": OUTPUT},
}


def settings(**overrides):
    return load_settings(str(ROOT / "emr" / "launcher.yaml"), {
        "package.code_uri": CODE, "steps.gremlin_endpoint": NEPTUNE,
        "steps.templates": str(ROOT / "emr" / "steps"), **overrides})


def rendered(name, values=None, job_options=(), target="cluster", **overrides):
    values = values or JOB_VALUES[name]
    return render_steps(settings(**overrides), target, name, [values], list(job_options),
                        "us-east-1")[0]


def job_args(step):
    _, entry, args = split_spark_submit(step["HadoopJarStep"]["Args"])
    return entry, args


def test_there_is_a_template_for_every_job_kind():
    assert sorted(p.stem for p in (ROOT / "emr" / "steps").glob("*.json")) == \
        sorted(TEMPLATE_NAMES)


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_template_is_spark_submit_in_cluster_mode_through_command_runner(name):
    step = rendered(name)
    assert step["ActionOnFailure"] == "CONTINUE"
    assert step["HadoopJarStep"]["Jar"] == "command-runner.jar"
    args = step["HadoopJarStep"]["Args"]
    assert args[:3] == ["spark-submit", "--deploy-mode", "cluster"]
    options, entry, _ = split_spark_submit(args)
    assert entry == f"{CODE}/jobs/{name if name in ('train', 'link') else 'infer'}.py"
    assert options[options.index("--archives") + 1] == \
        f"{CODE}/imagegraph-env.tar.gz#environment"
    assert options[options.index("--files") + 1] == f"{CODE}/conf/emr.yaml"
    assert "spark.executorEnv.PYSPARK_PYTHON=./environment/bin/python" in options
    assert not re.search(r"\{[a-z_]+\}", json.dumps(step))


def test_train_step_is_accepted_by_train_parser():
    entry, args = job_args(rendered("train"))
    parsed = check_step(rendered("train"))
    assert entry.endswith("/jobs/train.py")
    assert (parsed.config, parsed.input, parsed.output) == \
        ("emr.yaml", "s3://images/train/", MODEL)


def test_infer_step_is_accepted_by_infer_parser():
    parsed = check_step(rendered("infer", job_options=["--top-k", "5"]))
    assert (parsed.config, parsed.input, parsed.model, parsed.output) == \
        ("emr.yaml", "s3://images/incoming/", MODEL, OUTPUT)
    assert parsed.gremlin_endpoint == NEPTUNE
    assert parsed.top_k == 5
    assert parsed.overrides == ["graph.region=us-east-1", "s3.region=us-east-1"]


@pytest.mark.parametrize("kind, uri", [("inventory", "s3://inv/bucket/config/manifest.json"),
                                       ("manifest", "s3://lists/backfill.parquet")])
def test_backfill_step_is_a_resumable_shard_accepted_by_infer_parser(kind, uri):
    values = {**JOB_VALUES["backfill"], "source_kind": kind, "source": uri}
    step = rendered("backfill", values, job_options=["--max-failed-fraction", "0.01"])
    _, args = job_args(step)
    assert args[args.index("--shard") + 1] == "3/8"
    parsed = check_step(step)
    assert getattr(parsed, kind) == uri
    assert parsed.input is None
    assert (parsed.shard.index, parsed.shard.count) == (3, 8)
    assert parsed.resume is True
    assert parsed.max_failed_fraction == 0.01
    assert step["Name"] == "imagegraph backfill shard 3/8"


def test_backfill_renders_one_step_per_shard():
    values = [{**JOB_VALUES["backfill"], "shard": i, "shards": 4} for i in range(4)]
    steps = render_steps(settings(), "cluster", "backfill", values, [], "us-east-1")
    shards = [check_step(step).shard for step in steps]
    assert [(s.index, s.count) for s in shards] == [(0, 4), (1, 4), (2, 4), (3, 4)]


def test_a_step_the_job_would_reject_is_refused_with_the_parsers_message():
    with pytest.raises(JobError, match=r"step 'imagegraph infer': the job would reject the "
                                       r"step's arguments: infer.py: error: argument --top-k: "
                                       r"invalid int value: 'many'"):
        rendered("infer", job_options=["--top-k", "many"])


def test_bootstrap_python_env_points_driver_and_executors_at_the_node_interpreter():
    options, _, _ = split_spark_submit(
        rendered("infer", **{"package.python_env": "bootstrap"})["HadoopJarStep"]["Args"])
    assert "--archives" not in options
    assert "spark.yarn.appMasterEnv.PYSPARK_PYTHON=/usr/bin/python3.11" in options
    assert "spark.executorEnv.PYSPARK_PYTHON=/usr/bin/python3.11" in options


@pytest.mark.parametrize("template, needs", [("infer", True), ("backfill", True),
                                             ("link", True), ("train", False)])
def test_the_jobs_writing_to_neptune_need_an_endpoint(template, needs):
    settings = load_settings(None, {"steps.templates": str(ROOT / "emr" / "steps")})
    assert (("steps.gremlin_endpoint", f"empty: {template} writes to Neptune, "
             "wss://<writer endpoint>:8182/gremlin")
            in missing_settings(settings, "steps", template, "eu-west-1")) is needs


def test_list_placeholders_splice_and_empty_lists_vanish():
    template = {"Args": ["a", "{opts}", "--x", "{x}", "{none}", "pre-{x}"]}
    assert render(template, {"opts": ["-p", 1], "x": "v", "none": []}, "t") == \
        {"Args": ["a", "-p", "1", "--x", "v", "pre-v"]}


@pytest.mark.parametrize("template, values, message", [
    (["{missing}"], {}, r"t: no value for placeholder \{missing\}"),
    (["pre-{opts}"], {"opts": ["a"]}, r"list placeholder \{opts\} must be a whole argument"),
])
def test_render_errors_name_the_placeholder(template, values, message):
    with pytest.raises(JobError, match=message):
        render(template, values, "t")


def test_split_spark_submit_knows_options_with_and_without_values():
    args = ["spark-submit", "--verbose", "--conf", "a=b", "--files=x", "s3://b/jobs/infer.py",
            "--input", "s3://i/"]
    assert split_spark_submit(args) == (["--verbose", "--conf", "a=b", "--files=x"],
                                        "s3://b/jobs/infer.py", ["--input", "s3://i/"])
    with pytest.raises(JobError, match="no entry file"):
        split_spark_submit(["spark-submit", "--conf", "a=b"])


def test_missing_template_is_named(tmp_path):
    with pytest.raises(JobError, match=r"step template .*/nope.json does not exist"):
        load_template(str(tmp_path), "nope")
