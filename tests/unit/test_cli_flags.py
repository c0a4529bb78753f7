"""Every flag of infer.py and train.py reaches its configuration key: each flag is parsed by the
jobs' own parser and turned into a `Config` by `config_from_args`, over conf/local.yaml, and
the key must then hold the flag's value, which is neither its default nor conf/local.yaml's.
Every option of the parsers is in the table or named as not a configuration key."""
from __future__ import annotations

import re
from functools import reduce
from pathlib import Path

import pytest
import yaml

from imagegraph import __version__
from imagegraph.cli import (
    _FLAG_KEYS,
    config_from_args,
    config_yaml,
    infer_parser,
    link_parser,
    run_job,
    train_parser,
)
from imagegraph.config import Config
from imagegraph.errors import JobError
from imagegraph.graph.query import query_parser

ROOT = Path(__file__).resolve().parents[2]
LOCAL_YAML = str(ROOT / "conf" / "local.yaml")
INFER_REQUIRED = ["--input", "s3a://b/in/", "--model", "s3a://b/model", "--output", "s3a://b/out",
                  "--config", LOCAL_YAML]
TRAIN_REQUIRED = ["--input", "s3a://b/train/", "--output", "s3a://b/model", "--config", LOCAL_YAML]

# (parser, flag and its arguments, dotted configuration key, the value the key must then hold)
FLAGS = [
    (infer_parser, ["--gremlin-endpoint", "ws://graph.example:8182/gremlin"], "graph.endpoint",
     "ws://graph.example:8182/gremlin"),
    (infer_parser, ["--no-graph"], "graph.enabled", False),
    (infer_parser, ["--glob", "*.webp"], "input.glob", "*.webp"),
    (infer_parser, ["--modified-after", "2026-01-02T03:04:05Z"], "input.modified_after",
     "2026-01-02T03:04:05Z"),
    (infer_parser, ["--modified-before", "2026-06-07T08:09:10Z"], "input.modified_before",
     "2026-06-07T08:09:10Z"),
    (infer_parser, ["--max-image-bytes", "12345"], "inference.max_image_bytes", 12345),
    (infer_parser, ["--max-failed-fraction", "0.25"], "run.max_failed_fraction", 0.25),
    (infer_parser, ["--progress-interval", "7.5"], "run.progress_interval_s", 7.5),
    (infer_parser, ["--max-concurrent-writers", "5"], "graph.max_concurrent_writers", 5),
    (infer_parser, ["--graph-load", "bulk"], "graph.load", "bulk"),
    (infer_parser, ["--max-upserts-per-s", "321.5"], "graph.max_upserts_per_s", 321.5),
    (infer_parser, ["--top-k", "2"], "inference.top_k", 2),
    (infer_parser, ["--batch-size", "17"], "inference.batch_size", 17),
    (infer_parser, ["--partitions", "9"], "inference.partitions", 9),
    (infer_parser, ["--precision", "int8"], "inference.precision", "int8"),
    (infer_parser, ["--set", "graph.rows_per_flush=77"], "graph.rows_per_flush", 77),
    (train_parser, ["--epochs", "11"], "training.epochs", 11),
    (train_parser, ["--model-name", "flowers"], "training.model_name", "flowers"),
    (train_parser, ["--model-version", "v42"], "training.model_version", "v42"),
    (train_parser, ["--base", "resnet50"], "training.base", "resnet50"),
    (train_parser, ["--weights", "s3://m/w.weights.h5"], "training.weights", "s3://m/w.weights.h5"),
    (train_parser, ["--fine-tune-epochs", "3"], "training.fine_tune_epochs", 3),
    (train_parser, ["--unfreeze-layers", "7"], "training.unfreeze_layers", 7),
    (train_parser, ["--early-stopping-patience", "2"], "training.early_stopping_patience", 2),
    (train_parser, ["--workers", "4"], "training.workers", 4),
]
# options that are not configuration keys: where to read and write, what to run, logging
NOT_CONFIG = {"-h", "--help", "--input", "--manifest", "--inventory", "--model", "--output",
              "--config", "--shard", "--resume", "--log-level", "--log-format",
              "--print-config", "--version"}


def key_of(config, dotted: str):
    return reduce(getattr, dotted.split("."), config)


def required_of(parser) -> list[str]:
    return INFER_REQUIRED if parser is infer_parser else TRAIN_REQUIRED


@pytest.mark.parametrize("parser, flag, key, value", FLAGS,
                         ids=[" ".join(flag) for _, flag, _, _ in FLAGS])
def test_flag_reaches_its_config_key(parser, flag, key, value):
    without = config_from_args(parser().parse_args(required_of(parser)))
    assert key_of(without, key) != value  # else the test could not tell the flag was used
    config = config_from_args(parser().parse_args(required_of(parser) + flag))
    assert key_of(config, key) == value
    # ...and no other key changed
    for other in {k for _, _, k, _ in FLAGS} - {key}:
        assert key_of(config, other) == key_of(without, other), other


@pytest.mark.parametrize("parser", [infer_parser, train_parser])
def test_every_option_is_in_the_table(parser):
    options = {option for action in parser()._actions for option in action.option_strings}
    tested = {flag[0] for p, flag, _, _ in FLAGS if p is parser} | {"--set"}
    assert options - NOT_CONFIG == tested


def test_flags_override_the_file_and_set():
    """The dedicated flag wins over both the file and a --set of the same key."""
    args = infer_parser().parse_args(INFER_REQUIRED + ["--set", "inference.top_k=4",
                                                       "--top-k", "1"])
    assert config_from_args(args).inference.top_k == 1


# Wrong invocations a Spark user makes, each with the line it must print (argparse: exit 2).
@pytest.mark.parametrize("argv, line", [
    (["--conf", "spark.executor.memory=4g"],
     "infer.py: error: unrecognized arguments: --conf spark.executor.memory=4g (Spark's options "
     "go to spark-submit before the script, spark-submit --conf KEY=VALUE jobs/..., or in --set "
     "spark.conf.KEY=VALUE)"),
    (["--log-level", "verbose"], "argument --log-level: invalid choice: 'VERBOSE'"),
    (["--shard", "3"], "argument --shard: expected I/N, e.g. 0/4, got '3'"),
], ids=["--conf is not --config", "unknown log level", "shard without N"])
def test_wrong_invocations_are_usage_errors(capsys, argv, line):
    with pytest.raises(SystemExit) as stop:
        infer_parser().parse_args(INFER_REQUIRED + argv)
    assert stop.value.code == 2
    assert line in capsys.readouterr().err


def test_log_level_is_read_in_any_case():
    assert infer_parser().parse_args(INFER_REQUIRED + ["--log-level", "debug"]).log_level == "DEBUG"


@pytest.mark.parametrize("parser, required", [(infer_parser, INFER_REQUIRED),
                                              (train_parser, TRAIN_REQUIRED),
                                              (link_parser, ["--output", "o", "--model", "m@1"])])
def test_log_format_is_text_json_or_one_usage_error(capsys, parser, required):
    assert "the run summary on stdout and the last error line stay plain text, not log lines" \
        in " ".join(parser().format_help().split())
    assert parser().parse_args(required).log_format == "text"
    assert parser().parse_args(required + ["--log-format", "json"]).log_format == "json"
    assert parser().parse_args(required + ["--log-format", "text"]).log_format == "text"
    with pytest.raises(SystemExit) as stop:
        parser().parse_args(required + ["--log-format", "xml"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"{parser().prog}: error: argument --log-format: invalid choice: 'xml' "
        "(choose from 'text', 'json')")


@pytest.mark.parametrize("parser, prog", [(infer_parser, "infer.py"), (train_parser, "train.py"),
                                          (link_parser, "link.py")])
def test_help_lists_the_exit_codes_and_version_prints_one_line(capsys, parser, prog):
    text = " ".join(parser().format_help().split())
    assert "exit codes: 0 done" in text
    assert "4 crashed (an unexpected error" in text
    with pytest.raises(SystemExit) as stop:
        parser().parse_args(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out == f"{prog} {__version__}\n"


def test_a_crash_is_exit_4_with_its_traceback_and_one_last_line(capsys):
    def body() -> int:
        raise IsADirectoryError("[Errno 21] Is a directory: 'conf'")

    assert run_job("infer.py", body) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "Traceback (most recent call last):"
    assert err[-1] == "infer.py: crashed: IsADirectoryError: [Errno 21] Is a directory: 'conf'"


def test_a_job_error_is_exit_2_and_one_line(capsys):
    def body() -> int:
        raise JobError("config file conf is a directory: name a YAML file")

    assert run_job("infer.py", body) == 2
    assert capsys.readouterr().err == ("infer.py: error: config file conf is a directory: "
                                       "name a YAML file\n")


def test_an_executor_killed_by_yarn_for_memory_is_exit_2_and_one_line(capsys):
    # the failed job's message as py4j carries it, trimmed of its stack frames
    failure = ("An error occurred while calling o212.parquet.\n"
               ": org.apache.spark.SparkException: Job aborted due to stage failure: Task 0 in "
               "stage 4.0 failed 1 times, most recent failure: Lost task 0.0 in stage 4.0 (TID "
               "7) (127.0.0.1 executor 2): ExecutorLostFailure (executor 2 exited caused by one "
               "of the running tasks) Reason: Container killed by YARN for exceeding physical "
               "memory limits. 1.1 GB of 1 GB physical memory used. Consider boosting "
               "spark.executor.memoryOverhead.\n\tat org.apache.spark.scheduler.DAGScheduler")

    def body() -> int:
        raise RuntimeError(failure)

    assert run_job("infer.py", body) == 2
    assert capsys.readouterr().err == (
        "infer.py: error: YARN killed a Spark executor for exceeding its container's physical "
        "memory limit (1.1 GB of 1 GB physical memory used); the Python workers' memory counts "
        "in spark.executor.memoryOverhead: raise it, or lower inference.batch_size\n")


def test_print_config_shows_overrides_and_masks_secrets():
    args = infer_parser().parse_args(INFER_REQUIRED + ["--print-config", "--top-k", "7",
        "--set", "spark.conf.spark.ui.enabled=true"])
    printed = yaml.safe_load(config_yaml(config_from_args(args)))
    assert args.print_config
    assert printed["inference"]["top_k"] == 7
    assert printed["spark"]["conf"]["spark.ui.enabled"] is True
    assert printed["spark"]["conf"]["spark.sql.shuffle.partitions"] == 4  # the file's, kept
    assert printed["s3"]["secret_key"] == "***"


@pytest.mark.parametrize("argv", [
    ["--config", "a.yaml", "--gremlin-endpoint", "ws://g:8182/gremlin", "image", "s3://b/k"],
    ["image", "s3://b/k", "--config", "a.yaml", "--gremlin-endpoint", "ws://g:8182/gremlin"],
    ["--config", "a.yaml", "image", "s3://b/k", "--gremlin-endpoint", "ws://g:8182/gremlin"],
], ids=["before the command", "after the command", "on both sides"])
def test_query_takes_the_connection_options_before_or_after_the_command(argv):
    args = query_parser().parse_args(argv)
    assert (args.config, args.gremlin_endpoint, args.uri) == ("a.yaml", "ws://g:8182/gremlin",
                                                              "s3://b/k")
    assert args.overrides == []


@pytest.mark.parametrize("parser", [infer_parser, train_parser, link_parser])
def test_help_gives_each_config_keys_default_from_the_configuration(parser):
    defaults = Config()
    named = 0
    for action in parser()._actions:
        for section, key in re.findall(r"\(config: ([a-z0-9_]+)\.([a-z0-9_]+)[;)]",
                                       action.help or ""):
            default = getattr(getattr(defaults, section), key)
            if default != "":
                assert f"(config: {section}.{key}; default {default}" in action.help
            named += 1
    assert named >= 1


# flags whose name says more than their key's: the endpoint is Gremlin's, the load the graph's,
# and --progress-interval takes SECONDS by its metavar
NAMED_OTHERWISE = {"gremlin_endpoint": "graph.endpoint", "graph_load": "graph.load",
                   "progress_interval": "run.progress_interval_s"}


def test_a_flag_is_named_as_its_configuration_key():
    """`--max-image-bytes` sets `inference.max_image_bytes`: a flag and its key differ only in
    dashes, except the few named above, so a user who knows one can guess the other."""
    drifted = {flag: key for flag, key in _FLAG_KEYS.items()
               if key.split(".", 1)[1] != flag and NAMED_OTHERWISE.get(flag) != key}
    assert drifted == {}
