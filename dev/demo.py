"""`make demo`: the whole pipeline, locally, against real S3 (moto), Spark and Gremlin Server.

Starts the servers, puts real labeled digits, photos, an iPhone's HEIC and an AVIF
(dev/upload_corpus.py) and one corrupt file into the local S3, runs jobs/train.py (its summary
gives the test split's accuracy, top-5 and calibration error; its confusion-matrix and
reliability plots are copied to build/demo/) and jobs/infer.py through spark-submit, reads the
graph back over Gremlin, prints what it finds (with `accuracy=<value>` on a line of its own);
then classifies photos uploaded again (a copy, resized, re-encoded, cropped), links them with
jobs/link.py and prints what `python -m imagegraph.graph.query` says of coffee.jpg. The servers
keep running with what the demo wrote: it prints, and runs once, the commands to explore it
(`EXPLORE`, as the README shows them), and `make services-down` stops them (a demo stops a
previous demo's first). Exits non-zero when held-out accuracy is under 0.9, the HEIC or the
AVIF is not classified, the corrupt file is not dead-lettered, the query does not show
coffee.jpg's copy, or an explore command fails.
`--precision int8` (`make demo PRECISION=int8`) classifies with the int8 model.

With `--cluster` (`make cluster-demo`) it also starts the Spark standalone cluster
(dev/spark_cluster.py) and submits both jobs to it as the EMR launcher renders their steps
(dev/cluster_jobs.py: the packed environment of `make package` for the executors); the
re-uploads, the link job and the query run locally as without it.
With `--yarn` (`make yarn-demo`) it starts YARN and HDFS (dev/yarn_cluster.py) and submits every
job as its EMR step runs, `--deploy-mode cluster` with the packed environment: train with
`--workers 2` and petastorm's cache on HDFS, infer (twice), link; the query runs locally.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.dataset
import pyarrow.fs
from gremlin_python.process.graph_traversal import __
from gremlin_python.process.traversal import Order, T, TextP

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cluster_jobs  # noqa: E402
import sample_images  # noqa: E402
import services  # noqa: E402
import spark_cluster  # noqa: E402
import upload_corpus  # noqa: E402
import yarn_cluster  # noqa: E402
from s3_objects import put_objects, s3_client  # noqa: E402

from imagegraph.config import GraphConfig  # noqa: E402
from imagegraph.graph.connection import remote_traversal  # noqa: E402
from imagegraph.train.evaluation import CONFUSION_PLOT, RELIABILITY_PLOT  # noqa: E402

ROOT = services.ROOT
BUCKET = "imagegraph-demo"
EXPLORE = (
    ".venv/bin/python -m imagegraph.graph.query --config conf/local.yaml "
    "image s3://imagegraph-demo/incoming/photos/coffee.jpg",
    ".venv/bin/python -m imagegraph.runs.status --config conf/local.yaml "
    "--output s3a://imagegraph-demo/results --picture build/demo/backfill.png",
    ".venv/bin/python -m imagegraph.graph.query --config conf/local.yaml class 7 --top 5",
)
"""What the demo leaves to explore: shell commands run from the repository's root against
the servers at their default ports (conf/local.yaml)."""
MIN_ACCURACY = 0.9
PHONE_UPLOADS = ("iphone-heic", "web-avif")
"""Kinds of dev/upload_corpus.py's mix the demo classifies with the photos: an iPhone's 12 MP
HEIC (EXIF orientation 6, a 320x240 thumbnail) and a 1600x1200 AVIF."""
LOG_LINE = re.compile(r"\d{2,4}[-/]\d\d[-/]\d\d \d\d:\d\d:\d\d")
"""A timestamped log line (Python's logging, Spark's log4j) rather than a summary line."""
YARN_TRAINING = ("--workers", "2", "--set", "training.cache_url=hdfs:///imagegraph-demo/petastorm")
"""train's options on YARN: data-parallel on both executors, petastorm's cache on HDFS (the
cluster's default file system, as conf/emr.yaml's is)."""
DEMO_OUT = ROOT / "build" / "demo"


def step(title: str):
    print(f"\n== {title}", flush=True)
    return time.monotonic()


def done(started: float) -> None:
    print(f"   ({time.monotonic() - started:.0f} s)", flush=True)


def spark_submit(job: str, *args: str, env: dict) -> None:
    command = [str(Path(sys.executable).parent / "spark-submit"), "--driver-java-options",
               f"-Dlog4j2.configurationFile={ROOT / 'conf' / 'log4j2.properties'}",
               str(ROOT / "jobs" / job), "--config", str(ROOT / "conf" / "local.yaml"), *args]
    print("   $ spark-submit " + " ".join([f"jobs/{job}"] + command[4:]), flush=True)
    subprocess.run(command, env=env, check=True, cwd=ROOT)


def cluster_submit(cluster: spark_cluster.Cluster, template: str, values: dict,
                   job_options: tuple, env: dict) -> None:
    """Run the EMR step `template` with `values` on `cluster` (dev/cluster_jobs.py)."""
    work_dir = Path(cluster.run_dir) / f"demo-{template}"
    submission = cluster_jobs.submission(cluster, template, values, work_dir,
                                         services_env=env, job_options=job_options)
    print("   $ " + " ".join(submission.argv), flush=True)
    subprocess.run(submission.argv, cwd=submission.cwd, env=submission.env, check=True)


def yarn_submit(yarn: yarn_cluster.YarnCluster, name: str, template: str, values: dict,
                job_options: tuple, env: dict) -> None:
    """Run the EMR step `template` with `values` on `yarn` in cluster mode, spark-submit's
    output in `<run dir>/demo-<name>/spark-submit.log`; print the driver's output (its summary,
    from the application master's container), or spark-submit's last lines when it fails."""
    work_dir = Path(yarn.run_dir) / f"demo-{name}"
    submission = cluster_jobs.yarn_submission(yarn, template, values, work_dir,
                                              services_env=env, job_options=job_options)
    log = work_dir / "spark-submit.log"
    print("   $ " + " ".join(submission.argv), flush=True)
    code = submission.run(log).wait()
    text = log.read_text(errors="replace")
    application = re.search(r"Submitted application (application_\d+_\d+)", text)
    if code != 0 or application is None:
        print("\n".join("   " + line for line in text.splitlines()[-30:]), file=sys.stderr)
        raise SystemExit(f"demo: FAILED: spark-submit of {name} exited with {code}; see {log}")
    print(f"   {application[1]} (spark-submit's output: {log.relative_to(ROOT)}); the driver's "
          "summary, from its container's stdout:")
    print("\n".join("     " + line for line in
                    yarn.driver_output(application[1], "stdout").splitlines()
                    if not LOG_LINE.match(line)))


def seed(env: dict) -> int:
    client = s3_client(env["S3_ENDPOINT"], env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])
    train, held_out = sample_images.digit_images()
    photos, corrupt = sample_images.photo_images(), sample_images.corrupt_image()
    uploads = upload_corpus.upload_corpus(kinds=PHONE_UPLOADS)
    put_objects(client, BUCKET, "train/", train)
    put_objects(client, BUCKET, "incoming/digits/", held_out)
    put_objects(client, BUCKET, "incoming/", {**photos, **uploads, **corrupt})
    print(f"   s3://{BUCKET}/train/: {len(train)} labeled digits in 10 folders")
    print(f"   s3://{BUCKET}/incoming/: {len(held_out)} held-out digits, {len(photos)} photos, "
          f"{len(uploads)} phone uploads ({', '.join(sorted(uploads))}), "
          f"{len(corrupt)} corrupt file")
    return len(held_out) + len(photos) + len(uploads) + len(corrupt)


def save_plots(env: dict) -> None:
    """Copy the trained model's confusion-matrix and reliability plots out of the local S3
    (they go with it)."""
    client = s3_client(env["S3_ENDPOINT"], env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])
    DEMO_OUT.mkdir(parents=True, exist_ok=True)
    for name in (CONFUSION_PLOT, RELIABILITY_PLOT):
        client.download_file(BUCKET, f"models/digits-cnn/v1/{name}", str(DEMO_OUT / name))
        print(f"   plot: {DEMO_OUT.relative_to(ROOT)}/{name}")


def best_edge():
    """An image's classified_as edge with the highest score (its top class)."""
    return __.out_e("classified_as").order().by("score", Order.desc).limit(1)


def under(folder: str) -> TextP:
    """Image ids (URIs) under s3://<demo bucket>/incoming/<folder>/."""
    return TextP.starting_with(f"s3://{BUCKET}/incoming/{folder}/")


def true_class(uri: str) -> str:
    """The held-out digit's class: its folder, `.../digits/<class>/<n>.png`."""
    return uri.rsplit("/", 2)[1]


def read_graph_back(endpoint: str) -> tuple[float, int]:
    """Print what the graph holds; return the held-out digits' accuracy and how many of the
    phone uploads (HEIC, AVIF) have a top class."""
    with remote_traversal(GraphConfig(endpoint=endpoint)) as g:
        print(f"   vertices: {g.V().group_count().by(__.label()).next()}")
        print(f"   edges:    {g.E().group_count().by(__.label()).next()}")
        top_counts = (g.V().has_label("image")
                      .group_count().by(best_edge().in_v().values("name")).next())
        print("   images per top class: " + ", ".join(
            f"{name}={top_counts[name]}" for name in sorted(top_counts)))
        photos, uploads = (g.V().has_label("image").has(T.id, under(folder))
                           .project("id", "class", "score").by(T.id)
                           .by(best_edge().in_v().values("name"))
                           .by(best_edge().values("score")).to_list()
                           for folder in ("photos", "uploads"))
        for image in photos + uploads:
            print(f"   {image['id']:<52} top class {image['class']} score {image['score']:.3f}")
        digits = (g.V().has_label("image").has(T.id, under("digits"))
                  .project("id", "class").by(T.id)
                  .by(best_edge().in_v().values("name")).to_list())
    correct = sum(1 for d in digits if true_class(d["id"]) == d["class"])
    for d in digits[:3]:
        print(f"   {d['id']:<52} true {true_class(d['id'])} top class {d['class']}")
    print(f"   held-out digits: {correct} of {len(digits)} correct")
    return (correct / len(digits) if digits else 0.0), len(uploads)


def dead_letters(env: dict) -> list[dict]:
    s3 = pyarrow.fs.S3FileSystem(access_key=env["AWS_ACCESS_KEY_ID"],
                                 secret_key=env["AWS_SECRET_ACCESS_KEY"],
                                 endpoint_override=env["S3_ENDPOINT"], region="us-east-1")
    dataset = pyarrow.dataset.dataset(f"{BUCKET}/results/dead_letter", filesystem=s3,
                                      format="parquet", partitioning="hive")
    return dataset.to_table(columns=["uri", "reason", "stage"]).to_pylist()


def link_reuploads(env: dict, endpoints: services.Endpoints, model_uri: str,
                   yarn: yarn_cluster.YarnCluster | None) -> str:
    """Classify the re-uploaded photos into the same output, link (jobs/link.py; both on `yarn`
    when given), print and return what the query command says of coffee.jpg."""
    started = step("classifying photos uploaded again (jobs/infer.py)")
    client = s3_client(env["S3_ENDPOINT"], env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])
    put_objects(client, BUCKET, "", sample_images.reuploaded_photos())
    infer = {"input": f"s3a://{BUCKET}/reuploads/", "model": model_uri,
             "output": f"s3a://{BUCKET}/results"}
    link = {"output": f"s3a://{BUCKET}/results", "model": "digits-cnn@v1"}
    if yarn:
        yarn_submit(yarn, "infer-reuploads", "infer", infer,
                    ("--set", "inference.embedding=true"), endpoints.env())
    else:
        spark_submit("infer.py", "--input", infer["input"], "--model", model_uri,
                     "--output", infer["output"], "--gremlin-endpoint",
                     endpoints.gremlin_endpoint, "--set", "inference.embedding=true", env=env)
    done(started)
    started = step("linking images to each other (jobs/link.py)")
    if yarn:
        yarn_submit(yarn, "link", "link", link, (), endpoints.env())
    else:
        spark_submit("link.py", "--output", link["output"], "--model", link["model"],
                     "--gremlin-endpoint", endpoints.gremlin_endpoint, env=env)
    done(started)
    started = step("querying the graph (python -m imagegraph.graph.query)")
    command = [sys.executable, "-m", "imagegraph.graph.query", "--config",
               str(ROOT / "conf" / "local.yaml"), "--gremlin-endpoint", endpoints.gremlin_endpoint,
               "image",
               f"s3://{BUCKET}/incoming/photos/coffee.jpg", "--top", "5"]
    print("   $ python -m imagegraph.graph.query " + " ".join(command[3:]), flush=True)
    output = subprocess.run(command, env=env, check=True, cwd=ROOT, capture_output=True,
                            text=True).stdout
    print("\n".join("   " + line for line in output.splitlines()))
    done(started)
    return output


def explore(env: dict) -> bool:
    """Run each `EXPLORE` command as printed; whether all succeeded."""
    step("the servers keep running: explore what the demo wrote, then `make services-down`")
    succeeded = True
    for command in EXPLORE:
        print(f"   $ {command}", flush=True)
        result = subprocess.run(command, shell=True, env=env, cwd=ROOT, capture_output=True,
                                text=True)
        lines = (result.stdout if result.returncode == 0 else result.stderr).splitlines()
        print("\n".join("     " + line for line in lines[:8]))
        succeeded = succeeded and result.returncode == 0
    print("   $ make services-down", flush=True)
    return succeeded


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--cluster", action="store_true",
                       help="run train and infer on a local Spark standalone cluster")
    where.add_argument("--yarn", action="store_true",
                       help="run every job on a local YARN and HDFS cluster, in cluster mode")
    parser.add_argument("--precision", choices=["float32", "int8"], default="float32",
                        help="inference.precision of jobs/infer.py (make demo PRECISION=int8)")
    args = parser.parse_args(argv)
    endpoints = services.ports_from_environment()
    started = step("starting S3 (moto) and Gremlin Server")
    services.stop()  # a previous demo's, left running to explore
    services.start(endpoints)
    done(started)
    try:
        cluster, yarn = None, None
        if args.cluster:
            started = step("starting a Spark standalone cluster: a master and two workers")
            cluster = spark_cluster.start()
            print(f"   {cluster.master_url} (web UI {cluster.master_ui})")
            done(started)
        if args.yarn:
            started = step("starting YARN and HDFS: a ResourceManager, two NodeManagers, a "
                           "NameNode and a DataNode")
            yarn_cluster.stop()  # a previous demo's
            yarn = yarn_cluster.start()
            print(f"   {yarn.resource_manager} (ResourceManager), {yarn.hdfs}")
            done(started)
        env = {**os.environ, **endpoints.env(), "PYSPARK_PYTHON": sys.executable,
               "SPARK_LOCAL_IP": "127.0.0.1"}  # else Spark warns twice a job about the name
        started = step("putting real images into the local S3")
        seed(env)
        done(started)
        model_uri = f"s3a://{BUCKET}/models/digits-cnn/v1"
        train = {"input": f"s3a://{BUCKET}/train/", "output": model_uri}
        infer = {"input": f"s3a://{BUCKET}/incoming/", "model": model_uri,
                 "output": f"s3a://{BUCKET}/results"}
        started = step("training (jobs/train.py)")
        if yarn:
            yarn_submit(yarn, "train", "train", train, ("--model-version", "v1", *YARN_TRAINING),
                        endpoints.env())
        elif cluster:
            cluster_submit(cluster, "train", train, ("--model-version", "v1"), endpoints.env())
        else:
            spark_submit("train.py", "--input", train["input"], "--output", model_uri,
                         "--model-version", "v1", env=env)
        save_plots(env)
        done(started)
        started = step("classifying (jobs/infer.py)")
        infer_options = ("--set", "inference.embedding=true", "--precision", args.precision)
        if yarn:
            yarn_submit(yarn, "infer", "infer", infer, infer_options, endpoints.env())
        elif cluster:
            cluster_submit(cluster, "infer", infer, infer_options, endpoints.env())
        else:
            spark_submit("infer.py", "--input", infer["input"], "--model", model_uri,
                         "--output", infer["output"], "--gremlin-endpoint",
                         endpoints.gremlin_endpoint, "--set", "inference.embedding=true",
                         "--precision", args.precision, env=env)
        done(started)
        started = step("reading the graph back over Gremlin")
        accuracy, uploads_classified = read_graph_back(endpoints.gremlin_endpoint)
        letters = dead_letters(env)
        for letter in letters:
            print(f"   dead letter: {letter['uri']} ({letter['stage']}): {letter['reason']}")
        done(started)
        coffee = link_reuploads(env, endpoints, model_uri, yarn)
        explored = explore(env)
    finally:
        if args.cluster:
            spark_cluster.stop()
        if args.yarn:
            yarn_cluster.stop()
    print(f"accuracy={accuracy:.4f}")
    if not explored:
        print("demo: FAILED: an explore command failed (above)", file=sys.stderr)
        return 1
    corrupt_uri = f"s3://{BUCKET}/incoming/{sample_images.CORRUPT_KEY}"
    if not any(letter["uri"] == corrupt_uri for letter in letters):
        print(f"demo: FAILED: {corrupt_uri} is not in the dead-letter output", file=sys.stderr)
        return 1
    if uploads_classified != len(PHONE_UPLOADS):
        print(f"demo: FAILED: {uploads_classified} of the {len(PHONE_UPLOADS)} phone uploads "
              "(HEIC, AVIF) are classified in the graph", file=sys.stderr)
        return 1
    if f"s3://{BUCKET}/reuploads/coffee-copy.jpg" not in coffee.split("same content")[1]:
        print("demo: FAILED: the query does not show coffee.jpg's copy", file=sys.stderr)
        return 1
    if accuracy < MIN_ACCURACY:
        print(f"demo: FAILED: held-out accuracy {accuracy:.4f} < {MIN_ACCURACY}", file=sys.stderr)
        return 1
    print("demo: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
