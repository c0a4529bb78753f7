"""The launcher's command line: `python -m imagegraph.emr {train,infer,backfill,link} ...`.

Arguments after `--` are passed to the job itself (checked by the job's own parser), e.g.
`-- --top-k 5 --set inference.batch_size=32`.
"""
from __future__ import annotations

import argparse
import re
import sys
from typing import NoReturn

from imagegraph.cli import HintedParser, prog_name, run_job
from imagegraph.emr.launcher import Launcher, resolve_region
from imagegraph.emr.requests import build_plan, dumps
from imagegraph.emr.settings import DEFAULT_PATH, FLAGS, PYTHON_ENVS, load_settings
from imagegraph.errors import JobError
from imagegraph.sections import command_line_overrides

PROG = "python -m imagegraph.emr"
_S3_URI = re.compile(r"s3://[^/\s]+(/|$)")
_MODEL_TAG = re.compile(r"[^@\s]+@[^@\s]+")
_FLAG_KEYS = {flag[2:].replace("-", "_"): key for key, flag in FLAGS.items()}
_EPILOG = """\
Arguments after `--` go to the job itself, e.g. `-- --top-k 5 --set inference.batch_size=32`;
the job's own parser checks every step before anything is sent.

Targets: a new cluster (run_job_flow; it terminates after its steps unless cluster.keep_alive),
a running cluster (--cluster-id: add_job_flow_steps, each step carrying the job's
spark-defaults) or EMR Serverless (--serverless APP_ID: start_job_run, one run per step, at
most steps.concurrency at once: the launcher stays until the last one has started).

Exit codes: 0 launched (with --wait: every step succeeded), 1 a step failed or --wait-timeout
passed, 2 bad arguments, settings or an AWS error (one line on stderr; settings that are
missing or invalid, a line more each, with where to set it)."""


class _OneLineParser(HintedParser):
    """A parser whose usage errors are one line, `PROG COMMAND: error: ...`, exit code 2
    (`--help` shows the usage)."""

    hints = {"--resume": "every backfill step runs the job with --resume already; the job's "
                         "own options go after --, e.g. -- --resume"}

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {self.hinted(message)}\n")


def s3_uri(text: str) -> str:
    """An `--input`, `--output`, `--model` (a directory), `--inventory` or `--manifest` value:
    the steps run on EMR, where a bare `bucket/prefix` would be a path in the cluster's HDFS."""
    if not _S3_URI.match(text):
        raise argparse.ArgumentTypeError(
            f"must be an s3:// URI (s3://bucket/prefix), got {text!r}")
    return text


def model_tag(text: str) -> str:
    """link's `--model`: the model's name and version as train wrote them."""
    if not _MODEL_TAG.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"must be NAME@VERSION, e.g. digits-cnn@v1, got {text!r}")
    return text


def _options() -> _OneLineParser:
    """The options every command takes."""
    parser = _OneLineParser(add_help=False)
    parser.add_argument("--settings", metavar="PATH", default=DEFAULT_PATH,
                        help=f"launcher settings YAML (default: {DEFAULT_PATH})")
    parser.add_argument("--set", metavar="SECTION.KEY=VALUE", action="append", default=[],
                        dest="overrides",
                        help="override any settings key, e.g. --set cluster.core_instance_count=4; "
                             "repeatable; the value is read as YAML")
    parser.add_argument("--region", metavar="REGION",
                        help="AWS region (settings: aws.region; default: boto3's, "
                             "AWS_DEFAULT_REGION)")
    parser.add_argument("--endpoint-url", metavar="URL",
                        help="send S3, IAM, EMR and EMR Serverless requests to this endpoint "
                             "instead of AWS, e.g. moto's server (settings: aws.endpoint_url)")
    parser.add_argument("--code-uri", metavar="S3URI",
                        help="s3://bucket/prefix to upload the package, entry files, job "
                             "configuration and bootstrap action to (settings: package.code_uri)")
    parser.add_argument("--python-env", choices=PYTHON_ENVS,
                        help="archive: run from the packed environment (--archives, unpacked "
                             "by YARN for each application); node_archive: the same archive "
                             "unpacked once per node by the bootstrap action (new clusters); "
                             "bootstrap: from the pins the bootstrap action installs on every "
                             "node (settings: package.python_env; default archive)")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--cluster-id", metavar="ID",
                        help="add the steps to this running cluster (j-...) instead of "
                             "creating one; it must be WAITING or RUNNING, on "
                             "cluster.release_label")
    target.add_argument("--serverless", metavar="APPLICATION_ID",
                        help="start EMR Serverless job runs on this application instead")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the uploads and the exact requests as JSON; send nothing")
    parser.add_argument("--wait", action="store_true",
                        help="wait for the steps or job runs, printing each state change and "
                             "its log location")
    parser.add_argument("--poll-seconds", type=float, default=30.0, metavar="S",
                        help="seconds between polls with --wait, and on EMR Serverless while "
                             "more runs wait than steps.concurrency allows (default: 30)")
    parser.add_argument("--wait-timeout", type=float, default=0.0, metavar="S",
                        help="stop waiting after S seconds, exit code 1 (default 0: no limit)")
    return parser


def _neptune_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, type=s3_uri, metavar="URI",
                        help="model directory, as written by train (s3://...)")
    parser.add_argument("--output", required=True, type=s3_uri, metavar="URI",
                        help="where predictions/ and dead_letter/ are written (s3://...)")
    parser.add_argument("--gremlin-endpoint", metavar="URL",
                        help="Neptune's writer endpoint, wss://HOST:8182/gremlin "
                             "(settings: steps.gremlin_endpoint)")


def launcher_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The parser of `python -m imagegraph.emr` (`imagegraph-emr`)."""
    parser = _OneLineParser(
        prog=prog, epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Upload the package built by `make package` and the job entry files to S3, "
                    "then run train, infer, a sharded backfill or link on Amazon EMR.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _options()
    formatter = argparse.RawDescriptionHelpFormatter

    train = commands.add_parser("train", parents=[common], epilog=_EPILOG,
                                formatter_class=formatter,
                                help="train a model (jobs/train.py) in one step")
    train.add_argument("--input", required=True, type=s3_uri, metavar="URI",
                       help="prefix of labeled images, <input>/<label>/<image>")
    train.add_argument("--output", required=True, type=s3_uri, metavar="URI",
                       help="model directory to write")

    infer = commands.add_parser("infer", parents=[common], epilog=_EPILOG,
                                formatter_class=formatter,
                                help="classify every image under a prefix (jobs/infer.py)")
    infer.add_argument("--input", required=True, type=s3_uri, metavar="URI",
                       help="prefix of images")
    _neptune_options(infer)

    backfill = commands.add_parser(
        "backfill", parents=[common], epilog=_EPILOG, formatter_class=formatter,
        help="classify the objects of a manifest or S3 Inventory in N resumable shards, "
             "one step (or job run) per shard")
    source = backfill.add_mutually_exclusive_group(required=True)
    source.add_argument("--inventory", type=s3_uri, metavar="URI",
                        help="an S3 Inventory manifest.json listing the objects")
    source.add_argument("--manifest", type=s3_uri, metavar="URI",
                        help="a CSV or Parquet manifest of bucket,key or URIs")
    _neptune_options(backfill)
    backfill.add_argument("--shards", type=int, required=True, metavar="N",
                          help="split the objects into N shards, one step each")
    backfill.add_argument("--shard", action="append", metavar="I",
                          help="launch only shard I (0 <= I < N; or I/N, as the job writes "
                               "it), e.g. to rerun a failed one; repeatable (default: all N)")
    link = commands.add_parser("link", parents=[common], epilog=_EPILOG, formatter_class=formatter,
                               help="link the images infer wrote to each other (jobs/link.py)")
    link.add_argument("--output", required=True, type=s3_uri, metavar="URI",
                      help="infer's --output (s3://...)")
    link.add_argument("--model", required=True, type=model_tag, metavar="NAME@VERSION",
                      help="the model whose predictions to link")
    link.add_argument("--gremlin-endpoint", metavar="URL",
                      help="Neptune's writer endpoint (settings: steps.gremlin_endpoint)")
    return parser


def shard_index(text: str, shards: int) -> int:
    """`--shard`'s `I` or `I/N` (`N` must be `shards`) -> `I`, 0 <= I < `shards`."""
    index, sep, count = text.partition("/")
    try:
        number, of = int(index), int(count) if sep else shards
    except ValueError:
        raise JobError(f"--shard must be I or I/N, e.g. 3 or 3/{shards}, got {text!r}") from None
    if of != shards:
        raise JobError(f"--shard {text} is a shard of {of}, but --shards is {shards}")
    if not 0 <= number < shards:
        raise JobError(f"--shard {text} is outside 0..{shards - 1}")
    return number


def step_values(args: argparse.Namespace) -> list[dict]:
    """The job's own placeholder values, one dict per step."""
    if args.command == "train":
        return [{"input": args.input, "output": args.output}]
    if args.command in ("infer", "link"):
        return [{**({"input": args.input} if args.command == "infer" else {}),
                 "model": args.model, "output": args.output}]
    if args.shards < 1:
        raise JobError("--shards must be at least 1")
    shards = ([shard_index(text, args.shards) for text in args.shard] if args.shard
              else list(range(args.shards)))
    kind = "inventory" if args.inventory else "manifest"
    return [{"source_kind": kind, "source": args.inventory or args.manifest, "shard": shard,
             "shards": args.shards, "model": args.model, "output": args.output}
            for shard in sorted(set(shards))]


def launch(args: argparse.Namespace, job_options: list[str]) -> int:
    """Load the settings, build the plan, then print it (`--dry-run`) or send it."""
    overrides = command_line_overrides(args, _FLAG_KEYS)
    values = step_values(args)
    settings = load_settings(args.settings, overrides)
    target = "steps" if args.cluster_id else "serverless" if args.serverless else "cluster"
    region = resolve_region(settings.aws)
    plan = build_plan(settings, target, args.command, values, job_options, region,
                      args.cluster_id or args.serverless or "", args.settings)
    if args.dry_run:
        print(dumps(plan.to_json()))
        return 0
    launcher = Launcher(settings.aws, region, sys.stdout)
    launched = launcher.launch(plan, args.poll_seconds)
    if args.wait and not launcher.wait(launched, args.poll_seconds, args.wait_timeout):
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point: arguments after `--` are the job's; the rest are the launcher's."""
    argv = list(sys.argv[1:] if argv is None else argv)
    job_options: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, job_options = argv[:cut], argv[cut + 1:]
    prog = prog_name(PROG)
    args = launcher_parser(prog).parse_args(argv)
    return run_job(prog, lambda: launch(args, job_options))
