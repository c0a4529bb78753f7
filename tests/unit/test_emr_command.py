"""The launcher's command line: locations that are not s3:// URIs, a link model without its
version and a wrong --shard are refused with one line and exit code 2 before any settings,
package or AWS request is read or sent."""
from pathlib import Path

import pytest

from imagegraph.emr.command import launcher_parser, main, step_values

NEPTUNE = "wss://db.cluster-abc.us-east-1.neptune.amazonaws.com:8182/gremlin"
MODEL = "s3://my-bucket/models/digits-cnn/v1"
BACKFILL = ["backfill", "--dry-run", "--inventory", "s3://inv/manifest.json", "--model", MODEL,
            "--output", "s3://my-bucket/out", "--gremlin-endpoint", NEPTUNE, "--shards", "8"]
NOT_S3 = "must be an s3:// URI (s3://bucket/prefix), got"
ROOT = Path(__file__).resolve().parents[2]
NOT_A_TAG = "must be NAME@VERSION, e.g. digits-cnn@v1, got"


def run(argv):
    """`main(argv)`'s exit code, whether the parser or the launch stopped it."""
    try:
        return main(argv)
    except SystemExit as stopped:
        return stopped.code


@pytest.mark.parametrize("argv, line", [
    (["infer", "--dry-run", "--input", "my-bucket/images/", "--output", "my-bucket/out"],
     f"python -m imagegraph.emr infer: error: argument --input: {NOT_S3} 'my-bucket/images/'"),
    (["infer", "--dry-run", "--input", "s3://my-bucket/images/", "--output", "my-bucket/out",
      "--model", MODEL],
     f"python -m imagegraph.emr infer: error: argument --output: {NOT_S3} 'my-bucket/out'"),
    (["infer", "--dry-run", "--input", "s3://my-bucket/images/", "--output", "s3://b/out",
      "--model", "models/digits-cnn/v1"],
     f"python -m imagegraph.emr infer: error: argument --model: {NOT_S3} "
     "'models/digits-cnn/v1'"),
    (["infer", "--dry-run", "--input", "s3://my-bucket/images/", "--output", "s3://b/out"],
     "python -m imagegraph.emr infer: error: the following arguments are required: --model"),
    (["train", "--dry-run", "--input", "s3:///train/", "--output", MODEL],
     f"python -m imagegraph.emr train: error: argument --input: {NOT_S3} 's3:///train/'"),
    (["train", "--dry-run", "--input", "s3a://my-bucket/train/", "--output", MODEL],
     f"python -m imagegraph.emr train: error: argument --input: {NOT_S3} "
     "'s3a://my-bucket/train/'"),
    (["backfill", "--dry-run", "--manifest", "/tmp/manifest.csv", "--model", MODEL,
      "--output", "s3://b/out", "--shards", "2"],
     f"python -m imagegraph.emr backfill: error: argument --manifest: {NOT_S3} "
     "'/tmp/manifest.csv'"),
    (["backfill", "--dry-run", "--inventory", "inv/manifest.json", "--model", MODEL,
      "--output", "s3://b/out", "--shards", "2"],
     f"python -m imagegraph.emr backfill: error: argument --inventory: {NOT_S3} "
     "'inv/manifest.json'"),
    (["link", "--dry-run", "--output", "s3://my-bucket/out", "--model", "digits-cnn"],
     f"python -m imagegraph.emr link: error: argument --model: {NOT_A_TAG} 'digits-cnn'"),
    (["link", "--dry-run", "--output", "s3://my-bucket/out", "--model", MODEL],
     f"python -m imagegraph.emr link: error: argument --model: {NOT_A_TAG} {MODEL!r}"),
    (["link", "--dry-run", "--output", "my-bucket/out", "--model", "digits-cnn@v1"],
     f"python -m imagegraph.emr link: error: argument --output: {NOT_S3} 'my-bucket/out'"),
    ([*BACKFILL, "--shard", "8"], "python -m imagegraph.emr: error: --shard 8 is outside 0..7"),
    ([*BACKFILL, "--shard", "2/4"],
     "python -m imagegraph.emr: error: --shard 2/4 is a shard of 4, but --shards is 8"),
    ([*BACKFILL, "--shard", "two"],
     "python -m imagegraph.emr: error: --shard must be I or I/N, e.g. 3 or 3/8, got 'two'"),
    ([*BACKFILL, "--shard", "1/"],
     "python -m imagegraph.emr: error: --shard must be I or I/N, e.g. 3 or 3/8, got '1/'"),
    ([*BACKFILL, "--resume"],
     "python -m imagegraph.emr: error: unrecognized arguments: --resume (every backfill step "
     "runs the job with --resume already; the job's own options go after --, e.g. -- --resume)"),
])
def test_wrong_invocations_stop_with_one_line(capsys, argv, line):
    assert run(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == line + "\n"


def test_shard_may_be_written_as_the_job_writes_it():
    args = launcher_parser().parse_args([*BACKFILL, "--shard", "5/8", "--shard", "2",
                                         "--shard", "2/8"])
    assert [values["shard"] for values in step_values(args)] == [2, 5]


ENV_CLEARED = ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE", "IMAGEGRAPH_CODE_URI",
               "IMAGEGRAPH_LOG_URI", "IMAGEGRAPH_OS_RELEASE_LABEL", "GREMLIN_ENDPOINT",
               "IMAGEGRAPH_SERVERLESS_ROLE_ARN")
INFER = ["infer", "--dry-run", "--input", "s3://my-bucket/images/", "--model", MODEL,
         "--output", "s3://my-bucket/out"]
REGION = ("  aws.region: empty, and boto3 has none: the region of every request; pass --region, "
          "set it in emr/launcher.yaml or export AWS_DEFAULT_REGION")
CODE_URI = ("pass --code-uri or export IMAGEGRAPH_CODE_URI (which emr/launcher.yaml reads for "
            "it)")


@pytest.mark.parametrize("argv, lines", [
    (INFER, [
        "python -m imagegraph.emr: error: 5 setting(s) that a new cluster needs are missing or "
        "invalid:",
        REGION,
        "  package.code_uri: empty: the s3://bucket/prefix the package and the jobs are uploaded "
        f"to; {CODE_URI}",
        "  steps.gremlin_endpoint: empty: infer writes to Neptune, wss://<writer endpoint>:8182/"
        "gremlin; pass --gremlin-endpoint or export GREMLIN_ENDPOINT (which emr/launcher.yaml "
        "reads for it)",
        "  cluster.log_uri: empty: s3://bucket/prefix/ that keeps the cluster's step and "
        "container logs once it terminates; pass --set cluster.log_uri=VALUE or export "
        "IMAGEGRAPH_LOG_URI (which emr/launcher.yaml reads for it)",
        "  cluster.os_release_label: empty: the nodes' Amazon Linux release, pinned (`aws emr "
        "describe-release-label --release-label emr-7.12.0` lists them under "
        "AvailableOSReleases), or `latest`; pass --set cluster.os_release_label=VALUE or export "
        "IMAGEGRAPH_OS_RELEASE_LABEL (which emr/launcher.yaml reads for it)"]),
    (["train", "--dry-run", "--input", "s3://my-bucket/train/", "--output", MODEL,
      "--serverless", "00fabc", "--code-uri", "my-bucket/code", "--set",
      "serverless.execution_role_arn="], [
        "python -m imagegraph.emr: error: 3 setting(s) that EMR Serverless needs are missing or "
        "invalid:",
        REGION,
        f"  package.code_uri: 'my-bucket/code' is not an s3://bucket/prefix URI; {CODE_URI}",
        "  serverless.execution_role_arn: empty: the role EMR Serverless runs a job under; pass "
        "--set serverless.execution_role_arn=VALUE or export IMAGEGRAPH_SERVERLESS_ROLE_ARN "
        "(which emr/launcher.yaml reads for it)"]),
    (["link", "--dry-run", "--output", "s3://my-bucket/out", "--model", "digits-cnn@v1",
      "--cluster-id", "j-ABC", "--region", "eu-west-1", "--settings", "{settings}"], [
        "python -m imagegraph.emr: error: 1 setting(s) that steps on a running cluster needs "
        "are missing or invalid:",
        "  steps.gremlin_endpoint: empty: link writes to Neptune, wss://<writer endpoint>:8182/"
        "gremlin; pass --gremlin-endpoint or set it in {settings}"]),
], ids=["new cluster", "serverless", "running cluster, own settings file"])
def test_every_missing_setting_is_named_once_with_where_to_set_it(
        tmp_path, monkeypatch, capsys, argv, lines):
    """One run names every setting the launch lacks (not one per run), each with its flag or
    `--set`, and the variable the settings file reads it from or the file itself."""
    for name in ENV_CLEARED:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.chdir(ROOT)
    own = tmp_path / "launcher.yaml"
    own.write_text("package:\n  code_uri: s3://code/imagegraph\n")
    argv = [arg.format(settings=own) for arg in argv]
    assert run(argv) == 2
    assert capsys.readouterr().err.splitlines() == [line.format(settings=own) for line in lines]
