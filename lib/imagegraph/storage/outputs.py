"""The output location of inference runs, the record of what is done:

    <output>/predictions/run_id=<run>/   a row per classified object written (Parquet), with
                                          the graph it was written to (`graph_endpoint`), the
                                          object's ETag read (`etag`) and S3 VersionId read
                                          (`version_id`, null when S3 gave none)
    <output>/dead_letter/run_id=<run>/   a row per object that could not be, with the stage
                                          (read, decode, graph), the reason, its retry class
                                          (`retry_class`, see `imagegraph.dead_letters`), the
                                          object's attempt it ended (`attempt`, from 1), the
                                          ETag (`etag`) and the VersionId read (`version_id`,
                                          null when the read failed or S3 gave none)
    <output>/_reports/<run>.json         the run report
    <output>/_reports/<run>.png          its picture (`runs.picture`)
    <output>/_staging/<run>/             the run's working copies (see `staging_uri`), removed
                                          when the run ends, succeeded or failed; a killed
                                          run's by a later run
    <output>/_staging/link-<link run>/   a link run's, removed when it ends

Runs append, so one location holds every run of a backfill: `finished_uris` tells `--resume`
what earlier runs wrote for a model and a graph, and of which version of each object (`etag`;
see `split_done`), and `with_attempts` how often earlier runs dead-lettered each object
(`split_out_of_attempts`). Rows written before a column was recorded (`etag`, `version_id`)
lack it: the readers here name the columns they read (`spark.read.schema`), so such rows read
it as null.
"""
from __future__ import annotations

import json
import logging
from datetime import datetime

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType

from imagegraph.dead_letters import RETRY_CLASSES, max_attempts, retry_class
from imagegraph.storage import hadoop_fs

log = logging.getLogger(__name__)

PREDICTIONS_DIR = "predictions"
DEAD_LETTER_DIR = "dead_letter"
REPORTS_DIR = "_reports"
STAGING_DIR = "_staging"
LINK_STAGING_PREFIX = "link-"
DEAD_LETTER_COLUMNS = ("uri", "etag", "version_id", "stage", "reason", "retry_class",
                       "attempt", "bytes", "model", "recorded_at", "run_id")
_RETRY_CLASS = F.udf(retry_class, StringType())


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
    """Append run `run_id`'s dead-letter rows (`DEAD_LETTER_COLUMNS` but `retry_class`, the
    reason's, and `recorded_at`) to `<output>/dead_letter/`."""
    _append(rows.withColumn("retry_class", _RETRY_CLASS("reason"))
            .withColumn("recorded_at", F.lit(recorded_at)).select(*DEAD_LETTER_COLUMNS),
            output_uri, DEAD_LETTER_DIR, run_id)


def finished_uris(spark: SparkSession, output_uri: str, model_tag: str,
                  graph_endpoint: str) -> DataFrame:
    """Distinct (`uri`, `etag`)s that earlier runs of `model_tag` wrote under `output_uri`
    (`etag` null in rows written before it was recorded) for a run writing to
    `graph_endpoint` ("": the graph off): in predictions/ with that endpoint (with the graph
    off, with any endpoint or none: predictions/ is all such a run writes). Prediction rows
    without an endpoint (written before it was recorded) are finished only for runs with the
    graph off."""
    predictions = f"{output_uri}/{PREDICTIONS_DIR}"
    if not hadoop_fs.exists(spark, predictions):
        return spark.createDataFrame([], "uri string, etag string")
    rows = (spark.read.schema("uri string, etag string, model string, graph_endpoint string")
            .parquet(predictions).where(F.col("model") == model_tag))
    if graph_endpoint:
        rows = rows.where(F.col("graph_endpoint") == graph_endpoint)
    return rows.select("uri", "etag").distinct()


def _same_version(listed: str, earlier: str) -> Column:
    """Rows of DataFrames aliased `listed` and `earlier` that are of the same object version:
    the same uri, and the same etag or either null (a row from before etags were recorded, a
    source that lists none)."""
    return (F.col(f"{listed}.uri") == F.col(f"{earlier}.uri")) & (
        F.col(f"{earlier}.etag").isNull() | F.col(f"{listed}.etag").isNull()
        | (F.col(f"{earlier}.etag") == F.col(f"{listed}.etag")))


def split_done(objects: DataFrame, done: DataFrame) -> tuple[DataFrame, DataFrame]:
    """(done, not done) rows of `objects` (columns `uri`, `etag`) against `finished_uris`
    `done`: an object is done when a row of `done` is of the same version (`_same_version`);
    an object overwritten since (another ETag) is not done. Each row of `objects` is in
    exactly one of the two."""
    listed, finished = objects.alias("listed"), done.alias("done")
    matches = _same_version("listed", "done")
    return (listed.join(finished, matches, "left_semi"),
            listed.join(finished, matches, "left_anti"))


def with_attempts(spark: SparkSession, output_uri: str, model_tag: str,
                  objects: DataFrame) -> DataFrame:
    """`objects` (columns `uri`, `etag`, ...) with `attempts_before`, the dead-letter rows of
    `model_tag` under `output_uri` of each object's version (`_same_version`), and
    `latest_class`, the retry class of the latest of them (null when there is none; rows
    written before `retry_class` was recorded take their reason's)."""
    dead_letters = f"{output_uri}/{DEAD_LETTER_DIR}"
    if not hadoop_fs.exists(spark, dead_letters):
        return (objects.withColumn("attempts_before", F.lit(0))
                .withColumn("latest_class", F.lit(None).cast("string")))
    earlier = (spark.read.schema("uri string, etag string, model string, reason string, "
                                 "retry_class string, recorded_at timestamp")
               .parquet(dead_letters).where(F.col("model") == model_tag)
               .select("uri", "etag", "recorded_at",
                       F.coalesce("retry_class", _RETRY_CLASS("reason")).alias("retry_class")))
    versions = objects.select("uri", "etag").distinct()
    counted = (versions.alias("listed").join(earlier.alias("earlier"),
                                             _same_version("listed", "earlier"))
               .groupBy(F.col("listed.uri").alias("counted_uri"),
                        F.col("listed.etag").alias("counted_etag"))
               .agg(F.count(F.lit(1)).alias("attempts_before"),
                    F.max_by("earlier.retry_class", "earlier.recorded_at")
                    .alias("latest_class")))
    return (objects.join(counted, (objects["uri"] == counted["counted_uri"])
                         & objects["etag"].eqNullSafe(counted["counted_etag"]), "left")
            .drop("counted_uri", "counted_etag")
            .fillna(0, subset=["attempts_before"]))


def split_out_of_attempts(objects: DataFrame,
                          configured: int) -> tuple[DataFrame, DataFrame]:
    """(out of attempts, not) rows of `objects` (`with_attempts`'s columns): out of attempts
    when `attempts_before` reached the cap of `latest_class` (`dead_letters.max_attempts`,
    `configured` being `inference.max_attempts`). Each row is in exactly one of the two."""
    cap: Column = F.lit(configured)
    for cls in RETRY_CLASSES:
        cap = F.when(F.col("latest_class") == cls, max_attempts(cls, configured)).otherwise(cap)
    out = F.col("attempts_before") >= cap
    return objects.where(out), objects.where(~out)


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
