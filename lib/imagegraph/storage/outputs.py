"""The output location of inference runs, the record of what is done:

    <output>/predictions/run_id=<run>/   a row per classified object written (Parquet), with
                                          the graph it was written to (`graph_endpoint`) and
                                          the object's ETag read (`etag`)
    <output>/dead_letter/run_id=<run>/   a row per object that could not be, with the stage
                                          (read, decode, graph), the reason, whether a later
                                          run may succeed (`retryable`) and the ETag (`etag`)
    <output>/_reports/<run>.json         the run report
    <output>/_reports/<run>.png          its picture (`runs.picture`)
    <output>/_staging/<run>/             the run's working copies (see `staging_uri`), removed
                                          when the run ends, succeeded or failed; a killed
                                          run's by a later run
    <output>/_staging/link-<link run>/   a link run's, removed when it ends

Runs append, so one location holds every run of a backfill, and `done_uris` tells `--resume`
what earlier runs finished for a model and a graph, and of which version of each object
(`etag`; see `split_done`).
"""
from __future__ import annotations

import json
import logging
from datetime import datetime

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from imagegraph.storage import hadoop_fs

log = logging.getLogger(__name__)

PREDICTIONS_DIR = "predictions"
DEAD_LETTER_DIR = "dead_letter"
REPORTS_DIR = "_reports"
STAGING_DIR = "_staging"
LINK_STAGING_PREFIX = "link-"
DEAD_LETTER_COLUMNS = ("uri", "etag", "stage", "reason", "retryable", "bytes", "model",
                       "recorded_at", "run_id")


def run_rows_uri(output_uri: str, dataset: str, run_id: str) -> str:
    """Where run `run_id`'s rows of `dataset` (`PREDICTIONS_DIR`, `DEAD_LETTER_DIR`) are:
    `<output>/<dataset>/run_id=<run>`."""
    return f"{output_uri}/{dataset}/run_id={run_id}"


def _append(rows: DataFrame, output_uri: str, dataset: str, run_id: str) -> None:
    """Append `rows` (all of run `run_id`) to their run's partition of `dataset`
    (`run_rows_uri`).

    Each run writes only inside its own partition, so a run killed while committing leaves
    its uncommitted files in its own `_temporary/`, where no later or concurrent run's commit
    picks them up (Hadoop's FileOutputCommitter commits every task folder it finds there).
    """
    rows.drop("run_id").write.mode("append").parquet(run_rows_uri(output_uri, dataset, run_id))


def write_predictions(rows: DataFrame, output_uri: str, run_id: str,
                      graph_endpoint: str) -> None:
    """Append run `run_id`'s prediction rows to `<output>/predictions/`, each with the Gremlin
    endpoint it was written to as `graph_endpoint` ("" with the graph off)."""
    _append(rows.withColumn("graph_endpoint", F.lit(graph_endpoint)), output_uri,
            PREDICTIONS_DIR, run_id)


def write_dead_letters(rows: DataFrame, output_uri: str, run_id: str,
                       recorded_at: datetime) -> None:
    """Append run `run_id`'s dead-letter rows (`DEAD_LETTER_COLUMNS` but `recorded_at`) to
    `<output>/dead_letter/`."""
    _append(rows.withColumn("recorded_at", F.lit(recorded_at)).select(*DEAD_LETTER_COLUMNS),
            output_uri, DEAD_LETTER_DIR, run_id)


def done_uris(spark: SparkSession, output_uri: str, model_tag: str,
              graph_endpoint: str) -> DataFrame:
    """Distinct (`uri`, `etag`)s that earlier runs of `model_tag` finished under `output_uri`
    (`etag` null in rows written before it was recorded) for a run
    writing to `graph_endpoint` ("": the graph off): written to predictions/ with that
    endpoint (with the graph off, with any endpoint or none: predictions/ is all such a run
    writes), or dead-lettered for a reason no retry fixes (a read or decode failure, whatever
    the graph). Prediction rows without an endpoint (written before it was recorded) are done
    only for runs with the graph off."""
    done = []
    predictions = f"{output_uri}/{PREDICTIONS_DIR}"
    if hadoop_fs.exists(spark, predictions):
        rows = (spark.read.schema("uri string, etag string, model string, graph_endpoint string")
                .parquet(predictions).where(F.col("model") == model_tag))
        if graph_endpoint:
            rows = rows.where(F.col("graph_endpoint") == graph_endpoint)
        done.append(rows.select("uri", "etag"))
    dead_letters = f"{output_uri}/{DEAD_LETTER_DIR}"
    if hadoop_fs.exists(spark, dead_letters):
        done.append(spark.read.schema("uri string, etag string, model string, retryable boolean")
                    .parquet(dead_letters)
                    .where((F.col("model") == model_tag) & ~F.col("retryable"))
                    .select("uri", "etag"))
    if not done:
        return spark.createDataFrame([], "uri string, etag string")
    union = done[0]
    for frame in done[1:]:
        union = union.unionByName(frame)
    return union.distinct()


def split_done(objects: DataFrame, done: DataFrame) -> tuple[DataFrame, DataFrame]:
    """(done, not done) rows of `objects` (columns `uri`, `etag`) against `done_uris` `done`:
    an object is done when a row of `done` has its uri and its etag, or either etag is null
    (a row from before etags were recorded, a source that lists none); an object overwritten
    since (another ETag) is not done. Each row of `objects` is in exactly one of the two."""
    listed, finished = objects.alias("listed"), done.alias("done")
    matches = (F.col("listed.uri") == F.col("done.uri")) & (
        F.col("done.etag").isNull() | F.col("listed.etag").isNull()
        | (F.col("done.etag") == F.col("listed.etag")))
    return (listed.join(finished, matches, "left_semi"),
            listed.join(finished, matches, "left_anti"))


def staging_uri(output_uri: str, run_id: str) -> str:
    """Where run `run_id` keeps what it computed once and reads many times: the objects it
    selected, those left to do, and each chunk's classification results and graph outcome.
    Spark never recomputes those from S3 or the listing. The run removes it when it ends
    (`remove_staging`); a run killed midway leaves it behind, for a later inference run to
    remove once no lease names the killed run (`staged_runs`)."""
    return f"{output_uri}/{STAGING_DIR}/{run_id}"


def link_staging_uri(output_uri: str, link_id: str) -> str:
    """Where link run `link_id` keeps its working copies: `<output>/_staging/link-<id>`."""
    return staging_uri(output_uri, LINK_STAGING_PREFIX + link_id)


def staged_runs(spark: SparkSession, output_uri: str) -> list[str]:
    """The ids of the inference runs with a staging area under `output_uri`, sorted (link
    runs' areas are not listed)."""
    return [name for name in hadoop_fs.list_directories(spark, f"{output_uri}/{STAGING_DIR}")
            if not name.startswith(LINK_STAGING_PREFIX)]


def remove_staging(spark: SparkSession, uri: str) -> bool:
    """Delete the staging area `uri` (`staging_uri`, `link_staging_uri`); False, with a
    warning, when that fails (a later inference run removes an inference run's), so that the
    run's own outcome or error stands."""
    try:
        hadoop_fs.delete(spark, uri)
    except Exception as exc:  # the store or Spark itself may be what failed the run
        log.warning("could not remove the staging area %s: %s: %s", uri, type(exc).__name__,
                    exc)
        return False
    return True


def committed_rows(spark: SparkSession, output_uri: str, run_id: str) -> tuple[int, int]:
    """(prediction rows, dead-letter rows) of run `run_id` committed under `output_uri`, read
    back from the datasets (a folder without data files holds none)."""
    counts = []
    for dataset in (PREDICTIONS_DIR, DEAD_LETTER_DIR):
        uri = run_rows_uri(output_uri, dataset, run_id)
        counts.append(spark.read.schema("uri string").parquet(uri).count()
                      if hadoop_fs.exists(spark, uri) else 0)
    return counts[0], counts[1]


def report_uri(output_uri: str, run_id: str) -> str:
    """Where run `run_id`'s report is: `<output>/_reports/<run_id>.json`."""
    return f"{output_uri}/{REPORTS_DIR}/{run_id}.json"


def write_report(spark: SparkSession, uri: str, report: dict) -> None:
    """Write `report` as JSON to `uri` (its `report_uri`)."""
    hadoop_fs.write_text(spark, uri, json.dumps(report, indent=2, sort_keys=True) + "\n")
