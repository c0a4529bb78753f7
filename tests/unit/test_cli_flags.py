"""Every flag of infer.py and train.py reaches its configuration key: each flag is parsed by the
jobs' own parser and turned into a `Config` by `config_from_args`, over conf/local.yaml, and
the key must then hold the flag's value, which is neither its default nor conf/local.yaml's.
Every option of the parsers is in the table or named as not a configuration key."""
from __future__ import annotations

from functools import reduce
from pathlib import Path

import pytest

from imagegraph.cli import config_from_args, infer_parser, train_parser

LOCAL_YAML = str(Path(__file__).resolve().parents[2] / "conf" / "local.yaml")
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
    (infer_parser, ["--max-object-bytes", "12345"], "inference.max_image_bytes", 12345),
    (infer_parser, ["--max-failed-fraction", "0.25"], "run.max_failed_fraction", 0.25),
    (infer_parser, ["--progress-interval", "7.5"], "run.progress_interval_s", 7.5),
    (infer_parser, ["--max-concurrent-writers", "5"], "graph.max_concurrent_writers", 5),
    (infer_parser, ["--graph-load", "bulk"], "graph.load", "bulk"),
    (infer_parser, ["--max-upserts-per-second", "321.5"], "graph.max_upserts_per_s", 321.5),
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
              "--config", "--shard", "--resume", "--log-level"}


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
