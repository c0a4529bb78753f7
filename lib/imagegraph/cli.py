"""Command lines of the jobs: argument parsers, logging, and turning `JobError` into one clear
line and exit code 2 (a crash into exit code 4). The parsers live here, not in `jobs/`, so
tests and the EMR step templates can check arguments against the very parser the jobs use.

Each command has one `main`, run by `spark-submit jobs/<job>.py` (or `python -m ...`) and by
its console script (setup.py: `imagegraph-infer`, ...); `prog_name` names it as it was run."""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
import sys
import traceback
import warnings
from typing import Callable, NoReturn, Sequence

import yaml

from imagegraph import __version__
from imagegraph.config import Config, load_config
from imagegraph.errors import JobError, cluster_failure
from imagegraph.logs import JSON, LOG_FORMAT_ENV, LOG_FORMATS, TEXT, formatter
from imagegraph.sections import command_line_overrides
from imagegraph.storage.selection import INVENTORY, MANIFEST, PREFIX, InputSource, Shard

_CONFIG_HELP = ("YAML configuration file (see conf/local.yaml); command-line flags override it. "
                "Default: built-in defaults only")
_SET_HELP = ("override any configuration key, e.g. --set graph.records_per_request=100; "
             "repeatable; the value is read as YAML")
CRASHED = 4
_EXIT_CODES = {
    "infer": "0 done; 1 the counts did not reconcile; 2 bad arguments, configuration or "
             "environment (nothing was processed); 3 more objects dead-lettered than "
             "run.max_failed_fraction allows",
    "train": "0 done; 2 bad arguments, configuration or environment",
    "link": "0 done (or nothing new to link); 2 bad arguments, configuration or environment, "
            "or a graph write that failed (no run is recorded as linked)",
}
CONSOLE_PREFIX = "imagegraph-"
"""The console scripts' names start with it (setup.py)."""


def prog_name(default: str) -> str:
    """The command's name as it was run: the console script's (`imagegraph-infer`), else
    `default` (`infer.py` under spark-submit, `python -m imagegraph.graph.query`)."""
    name = os.path.basename(sys.argv[0]) if sys.argv else ""
    return name if name.startswith(CONSOLE_PREFIX) else default


def run_command(default_prog: str, parser: Callable[[str], argparse.ArgumentParser],
                body: Callable[[argparse.Namespace, str], int],
                argv: Sequence[str] | None) -> int:
    """A command's main: `argv` (default: the process's) parsed by `parser(prog)`, then
    `body(args, prog)` under `run_job`; `prog` is `prog_name(default_prog)`."""
    prog = prog_name(default_prog)
    return run_job(prog, lambda: body(parser(prog).parse_args(argv), prog))


_UNRECOGNIZED = "unrecognized arguments: "


class HintedParser(argparse.ArgumentParser):
    """An argument parser whose "unrecognized arguments" error says, for each option of `hints`
    among them (option -> what to do instead), what the user meant."""

    hints: dict[str, str] = {}

    def hinted(self, message: str) -> str:
        """`message` with the hints of the unrecognized options it names."""
        if not message.startswith(_UNRECOGNIZED):
            return message
        given = {word.split("=", 1)[0] for word in message[len(_UNRECOGNIZED):].split()}
        return message + "".join(f" ({hint})" for option, hint in self.hints.items()
                                 if option in given)

    def error(self, message: str) -> NoReturn:
        super().error(self.hinted(message))


class _JobParser(HintedParser):
    hints = {"--conf": "Spark's options go to spark-submit before the script, "
                       "spark-submit --conf KEY=VALUE jobs/..., or in --set spark.conf.KEY=VALUE"}


def _parser(prog: str, job: str, description: str) -> argparse.ArgumentParser:
    """A job's parser: no abbreviated options (`--conf` is not `--config`), exit codes in the
    help's epilog."""
    return _JobParser(
        prog=prog, description=description, allow_abbrev=False,
        epilog=f"exit codes: {_EXIT_CODES[job]}; {CRASHED} crashed (an unexpected error: "
               "the traceback is printed above the last line)")


def parse_shard(text: str) -> Shard:
    """`'2/8'` -> `Shard(index=2, count=8)`; argparse reports a bad value as a usage error."""
    index, sep, count = text.partition("/")
    try:
        shard = Shard(int(index), int(count))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I/N, e.g. 0/4, got {text!r}") from None
    if not sep or not 0 <= shard.index < shard.count:
        raise argparse.ArgumentTypeError(f"expected I/N with 0 <= I < N, got {text!r}")
    return shard


_CONFIG_KEY = re.compile(r"\(config: ([a-z0-9_]+)\.([a-z0-9_]+)(?:; default [^;)]*)?(?=[;)])")


def _show_defaults(parser: argparse.ArgumentParser) -> None:
    """Give every `(config: SECTION.KEY)` in the options' help the key's default, read from
    the configuration's own fields, so that help and configuration cannot disagree."""
    defaults = Config()

    def with_default(match: re.Match[str]) -> str:
        default = getattr(getattr(defaults, match.group(1)), match.group(2))
        if default == "":
            return f"(config: {match.group(1)}.{match.group(2)}"
        return f"(config: {match.group(1)}.{match.group(2)}; default {default}"

    for action in parser._actions:
        if action.help:
            action.help = _CONFIG_KEY.sub(with_default, action.help)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="PATH", help=_CONFIG_HELP)
    parser.add_argument("--set", metavar="SECTION.KEY=VALUE", action="append", default=[],
                        dest="overrides", help=_SET_HELP)
    parser.add_argument("--log-level", default="INFO", type=str.upper,
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="log level of the job's own messages, any case (default: INFO)")
    parser.add_argument("--log-format", default=TEXT, choices=LOG_FORMATS,
                        help="the log lines on stderr: text, or json (one JSON object per line: "
                             "time, level, logger, message, and the run's run_id, shard and "
                             "chunk when known); the run summary on stdout and the last "
                             "error line stay plain text, not log lines (default: text)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the effective configuration (file, --set and flags) as "
                             "YAML and exit")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")


def infer_parser(prog: str = "infer.py") -> argparse.ArgumentParser:
    """The parser of `jobs/infer.py` (`imagegraph-infer`)."""
    parser = _parser(
        prog, "infer",
        "Classify every image under --input with the model at --model, write "
                    "predictions/ and dead_letter/ as Parquet under --output, and upsert the "
                    "results into the Gremlin graph (Amazon Neptune or Gremlin Server).")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", metavar="URI",
                        help="prefix to list images under: s3://, s3a:// or file://")
    source.add_argument("--manifest", metavar="URI",
                        help="CSV (with a header) or Parquet file or folder of objects, with "
                             "columns uri, or bucket and key; optional size and last_modified")
    source.add_argument("--inventory", metavar="URI",
                        help="an S3 Inventory report's manifest.json (CSV or Parquet data "
                             "files); nothing is listed")
    parser.add_argument("--model", required=True, metavar="URI",
                        help="model directory, as written by train.py --output, or with a "
                             "TensorFlow SavedModel in saved_model/ in place of model.keras")
    parser.add_argument("--output", required=True, metavar="URI",
                        help="where predictions/ and dead_letter/ Parquet datasets are written")
    parser.add_argument("--gremlin-endpoint", metavar="URL",
                        help="Gremlin WebSocket endpoint, ws://HOST:PORT/gremlin "
                             "(config: graph.endpoint)")
    parser.add_argument("--no-graph", action="store_true",
                        help="classify and write Parquet only (config: graph.enabled=false)")
    parser.add_argument("--glob", metavar="PATTERN",
                        help="only objects whose file name matches, e.g. '*.jpg' "
                             "(config: input.glob; default '*')")
    parser.add_argument("--modified-after", metavar="TIME",
                        help="only objects modified at or after TIME, ISO-8601, e.g. "
                             "2026-01-01T00:00:00Z (config: input.modified_after)")
    parser.add_argument("--modified-before", metavar="TIME",
                        help="only objects modified before TIME (config: input.modified_before)")
    parser.add_argument("--max-image-bytes", type=int, metavar="N",
                        help="objects larger than N bytes are dead-lettered unread "
                             "(config: inference.max_image_bytes; default 50000000)")
    parser.add_argument("--shard", type=parse_shard, metavar="I/N",
                        help="process shard I of N (0 <= I < N): the objects whose URI hashes "
                             "to I; N steps with I = 0..N-1 cover every object exactly once")
    parser.add_argument("--resume", action="store_true",
                        help="skip objects that earlier runs of this model already wrote to "
                             "--output (predictions written to the same graph endpoint, any "
                             "with --no-graph; dead letters that a retry cannot fix)")
    parser.add_argument("--max-failed-fraction", type=float, metavar="F",
                        help="exit with code 3 when more than this fraction of the objects "
                             "processed is dead-lettered (config: run.max_failed_fraction; "
                             "default 0.05)")
    parser.add_argument("--progress-interval", type=float, metavar="SECONDS",
                        help="seconds between progress lines (config: run.progress_interval_s; "
                             "default 30)")
    parser.add_argument("--graph-load", choices=["mergev", "bulk"],
                        help="mergev: upsert from Spark partitions over Gremlin; bulk: write "
                             "each chunk as Neptune Gremlin load-format CSV under --output "
                             "(_staging/) and load it with Neptune's bulk loader, which needs "
                             "an S3 --output the cluster can read, the loader's IAM role "
                             "attached to the cluster (graph.loader_iam_role_arn) and "
                             "neptune-db:StartLoaderJob, GetLoaderJobStatus and CancelLoaderJob "
                             "for the job "
                             "(config: graph.load; default mergev; docs/GRAPH.md \"Bulk load\")")
    parser.add_argument("--max-concurrent-writers", type=int, metavar="N",
                        help="connections writing to the graph at once; 0: twice the Neptune "
                             "writer's vCPUs, graph.instance_vcpus (config: "
                             "graph.max_concurrent_writers)")
    parser.add_argument("--max-upserts-per-s", type=float, metavar="N",
                        help="cap on vertex and edge upserts per second over all writers; "
                             "0: no cap (config: graph.max_upserts_per_s)")
    parser.add_argument("--top-k", type=int, metavar="N",
                        help="classes kept per image (config: inference.top_k; default 3)")
    parser.add_argument("--batch-size", type=int, metavar="N",
                        help="images per model call (config: inference.batch_size; default 64)")
    parser.add_argument("--precision", choices=["float32", "int8"],
                        help="int8: full integer quantization, checked against float32 before "
                             "the run, which falls back to float32 unless int8's answers are "
                             "within the inference.int8_ bounds (config: inference.precision; "
                             "default float32)")
    parser.add_argument("--partitions", type=int, metavar="N",
                        help="repartition the input into N partitions; 0 keeps Spark's split "
                             "(config: inference.partitions)")
    _common(parser)
    _show_defaults(parser)
    return parser


def train_parser(prog: str = "train.py") -> argparse.ArgumentParser:
    """The parser of `jobs/train.py` (`imagegraph-train`)."""
    parser = _parser(
        prog, "train",
        "Train a CNN on labeled images under --input (the label is each image's "
                    "parent folder), fed through petastorm, evaluate it on a held-out split and "
                    "export model.keras, labels.json, metadata.json, evaluation.json and its "
                    "plots (confusion_matrix.png, training_curves.png) under --output. "
                    "Checkpoints go to <output>/_checkpoints/ every epoch until the export.")
    parser.add_argument("--input", required=True, metavar="URI",
                        help="prefix of labeled images: <input>/<label>/<image>")
    parser.add_argument("--output", required=True, metavar="URI",
                        help="model directory to write (s3a://, s3://, file://)")
    parser.add_argument("--epochs", type=int, metavar="N",
                        help="passes over the training split; with pretrained weights, of the "
                             "new head on the frozen backbone (config: training.epochs)")
    parser.add_argument("--base", choices=["small_cnn", "mobilenet_v2", "efficientnet_b0",
                                           "resnet50"],
                        help="the network: a small CNN, or a Keras application without its "
                             "top under a new head, RGB input (config: training.base)")
    parser.add_argument("--weights", metavar="none|imagenet|URI",
                        help="the backbone's starting weights: none (random), imagenet "
                             "(downloaded by Keras from its usual place: needs internet "
                             "access), or the URI of a Keras weights file of the backbone "
                             "without its top, e.g. s3://models/mobilenet_v2_notop.weights.h5 "
                             "(config: training.weights)")
    parser.add_argument("--fine-tune-epochs", type=int, metavar="N",
                        help="with pretrained weights: epochs after unfreezing the top of "
                             "the backbone (config: training.fine_tune_epochs)")
    parser.add_argument("--unfreeze-layers", type=int, metavar="N",
                        help="backbone layers, from the top, that train in the fine-tuning "
                             "epochs (config: training.unfreeze_layers)")
    parser.add_argument("--early-stopping-patience", type=int, metavar="N",
                        help="stop a phase after N epochs without a lower held-out loss and "
                             "export the best epoch; 0: never (config: "
                             "training.early_stopping_patience)")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="train data-parallel on N Spark tasks at once (a barrier stage, "
                             "MultiWorkerMirroredStrategy); 1: on the driver "
                             "(config: training.workers)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the last epoch checkpointed under --output by a "
                             "run that did not finish")
    parser.add_argument("--model-name", metavar="NAME",
                        help="model name in the graph (config: training.model_name)")
    parser.add_argument("--model-version", metavar="VERSION",
                        help="model version in the graph (config: training.model_version; "
                             "default: the UTC time of the run)")
    _common(parser)
    _show_defaults(parser)
    return parser


def link_parser(prog: str = "link.py") -> argparse.ArgumentParser:
    """The parser of `jobs/link.py` (`imagegraph-link`)."""
    parser = _parser(
        prog, "link",
        "Link the images that inference runs of --model wrote under --output: "
                    "content vertices for identical bytes, near_duplicate edges from perceptual "
                    "hashes, similar_to edges from embeddings (runs with inference.embedding). "
                    "Only runs no link run has linked are new; they are linked against every "
                    "image of the model.")
    parser.add_argument("--output", required=True, metavar="URI",
                        help="the --output of jobs/infer.py (holding predictions/)")
    parser.add_argument("--model", required=True, metavar="NAME@VERSION",
                        help="the model whose predictions to link, e.g. digits-cnn@v1")
    parser.add_argument("--gremlin-endpoint", metavar="URL",
                        help="Gremlin WebSocket endpoint, ws://HOST:PORT/gremlin "
                             "(config: graph.endpoint)")
    parser.add_argument("--relink", action="store_true",
                        help="link the images of every run again, not only of the runs not "
                             "linked yet")
    _common(parser)
    _show_defaults(parser)
    return parser


_FLAG_KEYS = {
    "gremlin_endpoint": "graph.endpoint", "glob": "input.glob", "top_k": "inference.top_k",
    "modified_after": "input.modified_after", "modified_before": "input.modified_before",
    "max_image_bytes": "inference.max_image_bytes",
    "max_failed_fraction": "run.max_failed_fraction",
    "progress_interval": "run.progress_interval_s",
    "max_concurrent_writers": "graph.max_concurrent_writers", "graph_load": "graph.load",
    "max_upserts_per_s": "graph.max_upserts_per_s",
    "batch_size": "inference.batch_size", "partitions": "inference.partitions",
    "precision": "inference.precision",
    "epochs": "training.epochs", "model_name": "training.model_name",
    "base": "training.base", "weights": "training.weights",
    "fine_tune_epochs": "training.fine_tune_epochs",
    "unfreeze_layers": "training.unfreeze_layers",
    "early_stopping_patience": "training.early_stopping_patience",
    "workers": "training.workers",
    "model_version": "training.model_version",
}


def config_from_args(args: argparse.Namespace) -> Config:
    """The configuration file of `args`, then `--set` overrides, then the dedicated flags."""
    overrides = command_line_overrides(args, _FLAG_KEYS)
    if getattr(args, "no_graph", False):
        overrides["graph.enabled"] = False
    return load_config(args.config, overrides)


def input_source(args: argparse.Namespace) -> InputSource:
    """The `InputSource` named by --input, --manifest or --inventory."""
    if args.manifest:
        return InputSource(MANIFEST, args.manifest)
    if args.inventory:
        return InputSource(INVENTORY, args.inventory)
    return InputSource(PREFIX, args.input)


def setup_logging(level: str, log_format: str) -> None:
    """Log lines on stderr at `level` in `log_format` (`logs.LOG_FORMATS`; with `json`, Python
    warnings are log lines too, and `logs.LOG_FORMAT_ENV` tells the local Python workers);
    third-party chatter (deprecation notices of petastorm's pyarrow use, TensorFlow's start-up
    banner, py4j, matplotlib's notes on class names that look like numbers) kept out of the
    job's output."""
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*shuffle=True.*")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format))
    logging.basicConfig(level=level, handlers=[handler])
    logging.captureWarnings(log_format == JSON)
    os.environ[LOG_FORMAT_ENV] = log_format
    for noisy in ("py4j", "aiohttp", "absl", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # petastorm warns that each split's Parquet files are under 50 MB (one 400-character line
    # per split, on every run of a small or sharded training set)
    logging.getLogger("petastorm").setLevel(logging.ERROR)
    # botocore logs each request's headers at DEBUG, Authorization (the access key id) included:
    # the driver's S3 listings and lease writes would put them in the job's log
    for chatty in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(chatty).setLevel(logging.INFO)


def start_job(args: argparse.Namespace) -> Config | None:
    """Logging at `args.log_level` in `args.log_format`, then the job's configuration
    (`config_from_args`); None once `--print-config` has printed it (the job then exits 0)."""
    setup_logging(args.log_level, args.log_format)
    config = config_from_args(args)
    if args.print_config:
        print(config_yaml(config), end="")
        return None
    return config


def config_yaml(config: Config) -> str:
    """The effective configuration as the YAML a `--config` file would hold, secrets masked."""
    sections = dataclasses.asdict(config)
    for section in sections.values():
        for key in section:
            if "secret" in key and section[key]:
                section[key] = "***"
    return yaml.safe_dump(sections, sort_keys=False)


def run_job(name: str, body: Callable[[], int]) -> int:
    """Run `body`; a `JobError` or a cluster failure the user can act on (`cluster_failure`)
    becomes `<name>: error: <message>` on stderr and exit code 2, any other exception its
    traceback, `<name>: crashed: ...` and exit code 4, so a crash is never taken for exit 1
    (counts that do not reconcile)."""
    try:
        return body()
    except JobError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - the job's last word on anything unexpected
        if explained := cluster_failure(exc):
            print(f"{name}: error: {explained}", file=sys.stderr)
            return 2
        traceback.print_exc()
        print(f"{name}: crashed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return CRASHED
