"""The launcher's command line: locations that are not s3:// URIs, a link model without its
version and a wrong --shard are refused with one line and exit code 2 before any settings,
package or AWS request is read or sent."""
import pytest

from imagegraph.emr.command import launcher_parser, main, step_values

NEPTUNE = "wss://db.cluster-abc.us-east-1.neptune.amazonaws.com:8182/gremlin"
MODEL = "s3://my-bucket/models/digits-cnn/v1"
BACKFILL = ["backfill", "--dry-run", "--inventory", "s3://inv/manifest.json", "--model", MODEL,
            "--output", "s3://my-bucket/out", "--gremlin-endpoint", NEPTUNE, "--shards", "8"]
NOT_S3 = "must be an s3:// URI (s3://bucket/prefix), got"
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
