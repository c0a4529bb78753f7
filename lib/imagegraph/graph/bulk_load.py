"""Bulk load (`graph.load: bulk`): a chunk's image vertices and classified_as edges written as
Neptune's Gremlin load-format CSV to S3 and loaded by Neptune's bulk loader, instead of upserted.

render (pure: records in, CSV lines out; columns and types derived from the records) -> Spark
writes one vertex file and one edge file per partition under `files_uri` -> the driver starts
the loader with boto3's `neptunedata` client: the vertices, then the edges queued behind them as
a dependency -> polls the status (with errors) until both end, resuming a load that ended with
write conflicts -> each error the loader reports for one record becomes a failed row (the
image's uri and the loader's error line); an error no record explains (a header, S3 access, a
cancelled load, no answer in `graph.loader_timeout_s`) stops the run, and the loads not ended
are cancelled -> over Gremlin, the chunk's written images lose the classified_as edges of the
model that their new top-k does not keep (the loader only adds; `OwnedEdges`), and are read
back: one the graph lacks in part is a failed row too, whatever record numbers (or counters)
the loader gave -> the failed rows are staged at `outcome_uri` and read back: a
`GraphLoad`, as `load.load_predictions` returns.

The same deterministic ids as the upserts, so a bulk load and a mergeV run of the same objects
give one graph. The loader's role, IAM actions and network needs: docs/GRAPH.md "Bulk load".
"""
from __future__ import annotations

import csv
import io
import logging
import math
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable, Iterator, Mapping, Sequence
from urllib.parse import urlsplit

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from imagegraph.config import GraphConfig
from imagegraph.errors import JobError
from imagegraph.graph.auth import uses_iam
from imagegraph.graph.connection import GremlinConnection
from imagegraph.graph.elements import EdgeRecord, VertexRecord, classified_as_edges, image_vertex
from imagegraph.graph.load import GraphLoad
from imagegraph.graph.traversals import drop_stale_edges, run_images
from imagegraph.graph.writer import GraphWriter, RequestFailed, WriterStopped, WriteStats, chunks

log = logging.getLogger(__name__)

FAILED_ROWS = StructType([StructField("uri", StringType(), False),
                          StructField("reason", StringType(), False)])
_LONG_MIN, _LONG_MAX = -2 ** 63, 2 ** 63 - 1
_NOT_IN_HEADERS = (" ", ",", "\r", "\n")


# --- Neptune's Gremlin load format (docs: bulk-load-tutorial-format-gremlin) ----------------

@dataclass(frozen=True)
class Column:
    """A property column: the property's name and its loader type (`String`, `Double`, ...)."""

    name: str
    type: str


def gremlin_type(value: object) -> str:
    """The loader type of a Python property value: bool Bool, int Long, float Double, str String,
    datetime Date; `TypeError` for anything else."""
    if isinstance(value, bool):
        return "Bool"
    for python_type, name in ((int, "Long"), (float, "Double"), (str, "String"),
                              (datetime, "Date")):
        if isinstance(value, python_type):
            return name
    raise TypeError(f"no Gremlin load-format type for {type(value).__name__} {value!r}")


def property_columns(elements: Sequence[VertexRecord | EdgeRecord]) -> tuple[Column, ...]:
    """Every property of `elements`, in order of first appearance, with its type; `ValueError`
    when one property has values of two types."""
    columns: dict[str, Column] = {}
    for element in elements:
        for name, value in element.properties.items():
            column = Column(name, gremlin_type(value))
            if columns.setdefault(name, column) != column:
                raise ValueError(f"property {name!r} has values of types "
                                 f"{columns[name].type} and {column.type}")
    return tuple(columns.values())


def column_header(column: Column, cardinality: str = "") -> str:
    """`name:Type` or `name:Type(cardinality)`, a colon in the name escaped as `\\:`;
    `ValueError` for a name the header cannot hold (space, comma, CR, LF, a leading `~`)."""
    if not column.name or column.name.startswith("~") or \
            any(char in column.name for char in _NOT_IN_HEADERS):
        raise ValueError(f"property name {column.name!r} cannot be a load-format column "
                         f"(empty, a leading ~, space, comma, CR or LF)")
    suffix = f"({cardinality})" if cardinality else ""
    return f"{column.name.replace(':', chr(92) + ':')}:{column.type}{suffix}"


def csv_field(value: object) -> str:
    """One field: None blank (no property); strings always quoted, `"` doubled (a quoted `""`
    is the empty string, not a blank); Bool `true`/`false`; Long in range; Double as Python's
    shortest round-trip text, `Infinity`, `-Infinity`, `NaN`; Date as UTC
    `yyyy-MM-ddTHH:mm:ssZ` (the loader's formats have no fractions: `ValueError` for one)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if not _LONG_MIN <= value <= _LONG_MAX:
            raise ValueError(f"{value} is outside the loader's Long range")
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace('"', '""') + '"'
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        if moment.microsecond:
            raise ValueError(f"{value.isoformat()} has a fraction of a second, which the "
                             f"loader's Date formats cannot carry")
        return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    raise TypeError(f"no Gremlin load-format field for {type(value).__name__} {value!r}")


def _label(label: str, kind: str) -> str:
    """A label field; `ValueError` for an empty one or (vertices) one with `;`, which the
    loader reads as several labels."""
    if not label or (kind == "vertex" and ";" in label):
        raise ValueError(f"{kind} label {label!r} cannot be loaded (empty, or ; in a vertex "
                         f"label)")
    return csv_field(label)


def vertex_lines(vertices: Sequence[VertexRecord]) -> list[str]:
    """A vertex file's lines (no line ends): the header `~id,~label,<name>:<Type>(single),...`
    (Neptune's default cardinality is set) and one line per vertex; a property a vertex lacks
    is blank."""
    columns = property_columns(vertices)
    lines = [",".join(["~id", "~label", *(column_header(c, "single") for c in columns)])]
    lines += [",".join([csv_field(v.id), _label(v.label, "vertex"),
                        *(csv_field(v.properties.get(c.name)) for c in columns)])
              for v in vertices]
    return lines


def edge_lines(edges: Sequence[EdgeRecord]) -> list[str]:
    """An edge file's lines (no line ends): the header `~id,~from,~to,~label,<name>:<Type>,...`
    (edge properties are single-valued; the loader refuses a cardinality other than single)
    and one line per edge."""
    columns = property_columns(edges)
    lines = [",".join(["~id", "~from", "~to", "~label", *(column_header(c) for c in columns)])]
    lines += [",".join([csv_field(e.id), csv_field(e.out_id), csv_field(e.in_id),
                        _label(e.label, "edge"),
                        *(csv_field(e.properties.get(c.name)) for c in columns)])
              for e in edges]
    return lines


# --- the loader endpoint ---------------------------------------------------------------------

COMPLETED = "LOAD_COMPLETED"
FAILED = "LOAD_FAILED"  # with failOnError false: the records it names failed, the rest loaded
DEPENDENCY_FAILED = "LOAD_FAILED_BECAUSE_DEPENDENCY_NOT_SATISFIED"
WRITE_CONFLICTS = "LOAD_COMMITTED_W_WRITE_CONFLICTS"
WRITE_CONFLICT_RESUMES = 3  # resumes of a load that ended with write conflicts, at most
RUNNING = ("LOAD_NOT_STARTED", "LOAD_IN_QUEUE", "LOAD_IN_PROGRESS")
MISSING_VERTEX = "FROM_OR_TO_VERTEX_ARE_MISSING"
_MISSING_VERTEX_MESSAGE = re.compile(r"Either from vertex, '(.*)', or to vertex, '(.*)', is "
                                     r"not present\.", re.DOTALL)
COUNTERS = ("parsingErrors", "datatypeMismatchErrors", "insertErrors")
ERRORS_PER_PAGE = 500
ERRORS_KEPT = 10_000  # Neptune keeps the last 10,000 error details of a job


class LoadStopped(Exception):
    """The loader failed as a whole (not record by record); the message is the run's one
    line."""


def loader_endpoint(graph: GraphConfig) -> str:
    """`graph.loader_endpoint`, else the Gremlin endpoint's host and port over HTTPS (HTTP for
    a ws:// endpoint): wss://host:8182/gremlin -> https://host:8182."""
    if graph.loader_endpoint:
        return graph.loader_endpoint.rstrip("/")
    parts = urlsplit(graph.endpoint)
    return f"{'https' if parts.scheme == 'wss' else 'http'}://{parts.netloc}"


def loader_source(files_uri: str) -> str:
    """The `s3://bucket/key` the loader reads for a Hadoop URI (s3://, s3a://); `JobError` for
    a URI Neptune cannot read (file://, hdfs://)."""
    scheme, sep, rest = files_uri.partition("://")
    if scheme not in ("s3", "s3a") or not sep:
        raise JobError(f"graph.load=bulk stages the load files under --output, which Neptune's "
                       f"loader reads from S3: {files_uri} is not an s3:// URI")
    return f"s3://{rest}"


def check_bulk_settings(graph: GraphConfig, output_uri: str) -> None:
    """`JobError` unless a bulk load can start: an S3 output and the loader's role."""
    loader_source(output_uri)
    if not graph.loader_iam_role_arn:
        raise JobError("graph.load=bulk needs graph.loader_iam_role_arn: the IAM role attached "
                       "to the Neptune cluster that lets the loader read the staging prefix "
                       "(docs/GRAPH.md \"Bulk load\")")


def loader_region(graph: GraphConfig) -> str:
    """The cluster's region (the loader's `s3BucketRegion`): `graph.region`, else boto3's."""
    import boto3

    region = graph.region or boto3.Session().region_name
    if not region:
        raise JobError("graph.load=bulk needs the cluster's region: set graph.region or "
                       "AWS_DEFAULT_REGION")
    return region


def loader_client(graph: GraphConfig):
    """boto3's `neptunedata` client for the loader endpoint, SigV4-signed (service
    neptune-db) when IAM authentication is on (`graph.iam_auth`), unsigned otherwise; boto3's
    standard retries (throttling, 5xx, lost connections) up to `graph.max_attempts` tries."""
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config as BotoConfig

    signing = {} if uses_iam(graph.endpoint, graph.iam_auth) else {
        "signature_version": UNSIGNED}
    return boto3.client("neptunedata", endpoint_url=loader_endpoint(graph),
                        region_name=loader_region(graph),
                        config=BotoConfig(retries={"mode": "standard",
                                                   "max_attempts": graph.max_attempts},
                                          connect_timeout=graph.connect_timeout_s,
                                          read_timeout=graph.request_timeout_s, **signing))


@dataclass(frozen=True)
class LoaderJob:
    """How one loader job ended: its id, the source it read, its final status, the errors it
    logged (the loader's `errorLogs` entries: errorCode, errorMessage, fileName, recordNum) and
    the errors its counters count (`parsingErrors` + `datatypeMismatchErrors` +
    `insertErrors`)."""

    load_id: str
    source: str
    status: str
    errors: tuple[dict, ...]
    counted: int


class Loader:
    """Starts and follows loader jobs through one client, counting its requests; `unfinished`
    holds the ids of the jobs it started and has not seen end."""

    def __init__(self, client, graph: GraphConfig, sleep=time.sleep, clock=time.monotonic):
        self.client, self.graph = client, graph
        self.region = loader_region(graph)
        self.requests = 0
        self.unfinished: list[str] = []
        self._sleep, self._clock = sleep, clock

    def _call(self, what: str, method, **request) -> dict:
        from botocore.exceptions import BotoCoreError, ClientError

        self.requests += 1
        try:
            return method(**request)
        except ClientError as failed:
            body = failed.response
            code = body.get("code") or body.get("Error", {}).get("Code", "")
            message = body.get("detailedMessage") or body.get("Error", {}).get("Message", "")
            raise LoadStopped(f"Neptune's bulk loader at {loader_endpoint(self.graph)} refused "
                              f"to {what}: {code}: {message}") from None
        except BotoCoreError as failed:
            raise LoadStopped(f"cannot reach Neptune's bulk loader at "
                              f"{loader_endpoint(self.graph)} to {what}: {failed}") from None

    def start(self, source: str, dependencies: Sequence[str] = (), mode: str = "NEW") -> str:
        """Start (queue) a load of every file under `source` (`mode` RESUME: of those the last
        load of `source` did not load); its load id."""
        request = dict(source=source, format="csv", s3BucketRegion=self.region,
                       iamRoleArn=self.graph.loader_iam_role_arn, mode=mode,
                       failOnError=False, parallelism=self.graph.loader_parallelism,
                       updateSingleCardinalityProperties=True, queueRequest=True)
        if dependencies:
            request["dependencies"] = list(dependencies)
        answer = self._call(f"start a load of {source}", self.client.start_loader_job,
                            **request)
        load_id = answer["payload"]["loadId"]
        self.unfinished.append(load_id)
        log.info("bulk load %s of %s started (%s)%s", load_id, source, mode,
                 f" (after {', '.join(dependencies)})" if dependencies else "")
        return load_id

    def wait(self, load_id: str, source: str) -> LoaderJob:
        """Poll `load_id` every `graph.loader_poll_interval_s` until it ends, logging progress;
        its final status and every error it logged. `LoadStopped` after
        `graph.loader_timeout_s`."""
        deadline = self._clock() + self.graph.loader_timeout_s
        while True:
            status = self._call(f"report load {load_id}", self.client.get_loader_job_status,
                                loadId=load_id, details=True)["payload"]["overallStatus"]
            if status["status"] not in RUNNING:
                self.unfinished.remove(load_id)
                break
            log.info("bulk load %s: %s, %s records", load_id, status["status"],
                     status.get("totalRecords", 0))
            if self._clock() >= deadline:
                raise LoadStopped(f"bulk load {load_id} of {source} still {status['status']} "
                                  f"after graph.loader_timeout_s={self.graph.loader_timeout_s:g}"
                                  f" s; the chunk is not committed (--resume loads it again)")
            self._sleep(self.graph.loader_poll_interval_s)
        log.info("bulk load %s: %s, %s records, %s parsing, %s datatype, %s insert errors",
                 load_id, status["status"], status.get("totalRecords", 0),
                 status.get("parsingErrors", 0), status.get("datatypeMismatchErrors", 0),
                 status.get("insertErrors", 0))
        counted = sum(status.get(name, 0) for name in COUNTERS)
        return LoaderJob(load_id, source, status["status"], tuple(self._errors(load_id)),
                         counted)

    def finish(self, load_id: str, source: str) -> LoaderJob:
        """`wait` for `load_id`; while it ends LOAD_COMMITTED_W_WRITE_CONFLICTS, resume it (a load
        of `source` in mode RESUME, which loads again the files not loaded), as Neptune's
        documentation advises, at most `WRITE_CONFLICT_RESUMES` times; how the last load
        ended. Only the last load's errors are kept: a record one of the earlier loads skipped
        without a later error naming it is found missing by the read-back."""
        job = self.wait(load_id, source)
        for _ in range(WRITE_CONFLICT_RESUMES):
            if job.status != WRITE_CONFLICTS:
                break
            log.warning("bulk load %s of %s: %s, resumed", job.load_id, source, job.status)
            job = self.wait(self.start(source, mode="RESUME"), source)
        return job

    def cancel_unfinished(self) -> None:
        """Cancel the jobs the run gives up on (`unfinished`), so that none loads a chunk the
        run did not commit; a refusal (a job that ended meanwhile) is logged."""
        while self.unfinished:
            load_id = self.unfinished.pop()
            try:
                self._call(f"cancel load {load_id}", self.client.cancel_loader_job,
                           loadId=load_id)
                log.warning("bulk load %s cancelled", load_id)
            except LoadStopped as refused:
                log.warning("%s", refused)

    def _errors(self, load_id: str) -> Iterator[dict]:
        for page in range(1, ERRORS_KEPT // ERRORS_PER_PAGE + 1):
            payload = self._call(f"list the errors of load {load_id}",
                                 self.client.get_loader_job_status, loadId=load_id,
                                 errors=True, page=page,
                                 errorsPerPage=ERRORS_PER_PAGE)["payload"]
            logs = payload.get("errors", {}).get("errorLogs", [])
            yield from logs
            if len(logs) < ERRORS_PER_PAGE:
                return


def record_errors(job: LoaderJob) -> tuple[dict, ...]:
    """The errors of a finished job, each naming one record; `LoadStopped` when the job failed
    as a whole (any status but completed or failed record by record), or logged an error that
    names no record (a header, S3 access), or more errors than Neptune keeps. Another number
    of errors than its counters count is only logged: AWS does not document which errors the
    counters count, and the read-back (`missing_from_graph`) does not rely on them."""
    if job.status not in (COMPLETED, FAILED):
        first = f" ({job.errors[0]['errorCode']}: {job.errors[0]['errorMessage']})" \
            if job.errors else ""
        raise LoadStopped(f"Neptune's bulk loader ended load {job.load_id} of {job.source} with "
                          f"{job.status}{first}; the chunk is not committed (--resume loads it "
                          f"again)")
    if len(job.errors) >= ERRORS_KEPT:
        raise LoadStopped(f"bulk load {job.load_id} of {job.source} logged {len(job.errors)} or "
                          f"more errors, more than Neptune keeps: the failed records cannot all "
                          f"be named")
    if len(job.errors) != job.counted:
        log.warning("bulk load %s of %s listed %d errors and counted %d (%s), which AWS does "
                    "not document as equal; the read-back over Gremlin finds any image a "
                    "record left out without an error naming it", job.load_id, job.source,
                    len(job.errors), job.counted, " + ".join(COUNTERS))
    for error in job.errors:
        if not _names_record(error):
            raise LoadStopped(f"bulk load {job.load_id} of {job.source} failed: "
                              f"{error.get('errorCode')}: {error.get('errorMessage')} "
                              f"({error.get('fileName')}); no record named, the chunk is not "
                              f"committed")
    if job.status == FAILED and not job.errors:
        raise LoadStopped(f"Neptune's bulk loader ended load {job.load_id} of {job.source} with "
                          f"{FAILED} and no error details")
    return job.errors


def _names_record(error: Mapping) -> bool:
    return (error.get("recordNum", 0) > 0 and bool(error.get("fileName"))) or (
        error.get("errorCode") == MISSING_VERTEX
        and _MISSING_VERTEX_MESSAGE.fullmatch(error.get("errorMessage", "")) is not None)


def rejected_uri(error: Mapping, records: Mapping[str, list[list[str]]]) -> str | None:
    """The image uri of the record `error` names: the `~id` (vertex files) or `~from` (edge
    files) of data row `recordNum` (from 1, after the header) of its file, whose parsed rows
    are `records[fileName]`; else, for a missing vertex, the from-vertex of the message; else
    None."""
    rows = records.get(error.get("fileName", ""))
    number = error.get("recordNum", 0)
    if rows and 0 < number < len(rows):
        header = rows[0]
        return rows[number][header.index("~from") if "~from" in header else 0]
    missing = _MISSING_VERTEX_MESSAGE.fullmatch(error.get("errorMessage", "")) \
        if error.get("errorCode") == MISSING_VERTEX else None
    return missing.group(1) if missing else None


def rejection_reason(error: Mapping) -> str:
    """The dead letter's reason: the loader's error line."""
    where = f" ({error.get('fileName')} record {error.get('recordNum', 0)})" \
        if error.get("fileName") else ""
    return (f"graph bulk load rejected the record: {error.get('errorCode')}: "
            f"{error.get('errorMessage')}{where}")


# --- the load ------------------------------------------------------------------------------

def bulk_load_predictions(spark: SparkSession, graph: GraphConfig, predictions: DataFrame,
                          model_tag: str, run_id: str, outcome_uri: str,
                          files_uri: str) -> GraphLoad:
    """Load `predictions` (rows of the predictions Parquet) into the graph with Neptune's bulk
    loader, staging the CSV under `files_uri` (an s3:// or s3a:// folder) and the failed rows at
    `outcome_uri` (a new Parquet dataset); what `load_predictions` returns: the totals, the
    (uri, reason) of the rows not written, and the one line that stopped the run (empty: none).
    `requests` counts the loader's and the stale-edge pass's requests."""
    check_bulk_settings(graph, files_uri)
    rows, edge_rows = predictions.agg(F.count(F.lit(1)),
                                      F.coalesce(F.sum(F.size("labels")), F.lit(0))).first()
    _write_csv(spark, predictions, model_tag, run_id, files_uri)
    loader = Loader(loader_client(graph), graph)
    failed: dict[str, str] = {}
    rejected = {"vertices": 0, "edges": 0}
    try:
        for kind, errors in load_vertices_then_edges(loader, files_uri).items():
            records = _read_rejected_files(spark, errors, files_uri)
            for error in errors:
                uri = rejected_uri(error, records)
                if uri is None:
                    raise LoadStopped(f"bulk load error names no record of the chunk: "
                                      f"{rejection_reason(error)}")
                failed.setdefault(uri, rejection_reason(error))
            rejected[kind] = len(errors)
        failed_rows = spark.createDataFrame(sorted(failed.items()), FAILED_ROWS)
        if failed_rows.join(predictions.select("uri"), "uri", "left_anti").count():
            raise LoadStopped("Neptune's bulk loader rejected records that are not this "
                              "chunk's images; the chunk is not committed")
        stale_failed, requests, retries = _drop_stale_and_read_back(
            predictions, failed_rows, graph, model_tag, run_id)
    except LoadStopped as stopped:
        log.error("%s", stopped)
        return GraphLoad(WriteStats(requests=loader.requests),
                         spark.createDataFrame([], FAILED_ROWS), (str(stopped),))
    for uri, reason in stale_failed:
        failed.setdefault(uri, reason)
    spark.createDataFrame(sorted(failed.items()), FAILED_ROWS).write.parquet(outcome_uri)
    outcome = spark.read.parquet(outcome_uri)
    totals = WriteStats(rows_written=rows - len(failed), vertices=rows - rejected["vertices"],
                        edges=edge_rows - rejected["edges"], requests=loader.requests + requests,
                        retries=retries, failed_rows=len(failed))
    return GraphLoad(totals, outcome, ())


def _write_csv(spark: SparkSession, predictions: DataFrame, model_tag: str, run_id: str,
               files_uri: str) -> None:
    """One vertex file under `<files_uri>/vertices/` and one edge file under
    `<files_uri>/edges/` per partition, each with its own header."""
    def vertex_file(rows: Iterable) -> list[tuple[str]]:
        return [(line,) for line in vertex_lines(
            [image_vertex(row.asDict(), model_tag) for row in rows])]

    def edge_file(rows: Iterable) -> list[tuple[str]]:
        return [(line,) for line in edge_lines(
            [edge for row in rows for edge in classified_as_edges(row.asDict(), model_tag,
                                                                  run_id)])]

    for folder, render in (("vertices", vertex_file), ("edges", edge_file)):
        spark.createDataFrame(predictions.rdd.mapPartitions(render), "value string") \
            .write.text(f"{files_uri}/{folder}")


def load_vertices_then_edges(loader: Loader, files_uri: str) -> dict[str, tuple[dict, ...]]:
    """Load the vertex files under `<files_uri>/vertices/`, then the edge files under
    `<files_uri>/edges/` (queued with the vertex load as dependency: Neptune starts them only
    once the vertices are in); {'vertices': record errors, 'edges': record errors}, or
    `LoadStopped` (`record_errors`). Each load that ends with write conflicts is resumed
    (`Loader.finish`). A vertex load that failed record by record or was resumed makes Neptune
    fail the edge load for its dependency: the edges are then loaded again without it. The
    part- prefix keeps the committer's _SUCCESS marker out of the load. A job not seen ending
    (a timeout, the vertex load failed as a whole, any exception) is cancelled on the way out
    (`Loader.cancel_unfinished`)."""
    vertices_source = f"{loader_source(files_uri)}/vertices/part-"
    edges_source = f"{loader_source(files_uri)}/edges/part-"
    try:
        vertices_id = loader.start(vertices_source)
        edges_id = loader.start(edges_source, dependencies=[vertices_id])
        vertices = loader.finish(vertices_id, vertices_source)
        vertex_errors = record_errors(vertices)
        edges = loader.finish(edges_id, edges_source)
        if edges.status == DEPENDENCY_FAILED:
            # the vertex load failed only record by record, or was resumed: the rest of the
            # vertices are in
            edges = loader.finish(loader.start(edges_source), edges_source)
        return {"vertices": vertex_errors, "edges": record_errors(edges)}
    finally:
        loader.cancel_unfinished()


def _read_rejected_files(spark: SparkSession, errors: Sequence[Mapping],
                         files_uri: str) -> dict[str, list[list[str]]]:
    """The parsed rows (header first) of each file an error names a record of, read through
    Spark with the scheme of `files_uri` (s3a:// locally)."""
    scheme = files_uri.partition("://")[0]
    records = {}
    for name in sorted({e["fileName"] for e in errors
                        if e.get("recordNum", 0) > 0 and e.get("fileName")}):
        texts = spark.sparkContext.wholeTextFiles(f"{scheme}://{name.partition('://')[2]}") \
            .values().collect()
        records[name] = list(csv.reader(io.StringIO(texts[0]))) if texts else []
    return records


def missing_from_graph(vertex: VertexRecord, found: Mapping | None) -> str:
    """What the graph lacks of an image as the run loaded it: its vertex `vertex` with its
    sha256 and the classified_as edges it keeps (`vertex.owned_edges.keep`), read back as
    `found` (a `traversals.run_images` map, None when no image vertex has its id); '' when
    nothing is missing."""
    if found is None:
        return "no image vertex"
    lacking = []
    if found["sha256"] != [vertex.properties["sha256"]]:
        lacking.append(f"sha256 {found['sha256']} instead of {vertex.properties['sha256']}")
    edges = [edge for edge in vertex.owned_edges.keep if edge not in found["edges"]] \
        if vertex.owned_edges else []
    if edges:
        lacking.append(f"no classified_as edge {', '.join(edges)} of the run")
    return "; ".join(lacking)


def _drop_stale_and_read_back(predictions: DataFrame, failed_rows: DataFrame,
                              graph: GraphConfig, model_tag: str,
                              run_id: str) -> tuple[list[tuple[str, str]], int, int]:
    """Drop, over Gremlin, the classified_as edges of `model_tag` that the written images' new
    likely classes (`elements.likely_classes`: rows without `min_score` have no threshold) do
    not keep, then read those images back (`traversals.run_images`), a request each per
    `graph.records_per_request` images, from at most `graph.writers` partitions; (the rows
    whose edges could not be dropped, or that the graph lacks in part although no loader
    error named them (`missing_from_graph`), with the reason, requests, retries). The
    read-back is what makes an image written: the loader's `recordNum` is not trusted to name
    every record it skipped. `LoadStopped` when a writer stopped."""
    kept_by = [name for name in ("labels", "scores", "min_score") if name in predictions.columns]
    written = predictions.join(failed_rows, "uri", "left_anti").select("uri", "sha256", *kept_by)
    if written.rdd.getNumPartitions() > graph.writers:
        written = written.coalesce(graph.writers)

    def drop(rows: Iterable) -> Iterator[tuple]:
        """(kind, uri, text, requests, retries): a 'failed' row per image whose stale edges
        could not be dropped, a 'stopped' row with the writer's line, a 'stats' row."""
        connection = GremlinConnection(graph)
        writer = GraphWriter(connection, graph)
        try:
            for batch in chunks((image_vertex(row.asDict(), model_tag) for row in rows),
                                graph.records_per_request):
                try:
                    writer.submit(drop_stale_edges, batch)
                    found = {image["id"]: image for image in
                             writer.run(run_images([vertex.id for vertex in batch], run_id))}
                except RequestFailed as failure:
                    yield from (("failed", vertex.id, f"graph write failed: stale "
                                 f"{vertex.owned_edges.label} edges not dropped or not read "
                                 f"back: {failure}", 0, 0) for vertex in batch)
                    continue
                for vertex in batch:
                    lacking = missing_from_graph(vertex, found.get(vertex.id))
                    if lacking:
                        yield ("failed", vertex.id, f"graph bulk load: not in the graph as "
                               f"loaded, and no loader error named it: {lacking}", 0, 0)
        except WriterStopped as stopped:
            yield ("stopped", None, str(stopped), 0, 0)
        finally:
            connection.close()
        yield ("stats", None, None, writer.stats.requests, writer.stats.retries)

    outcome = written.rdd.mapPartitions(drop).collect()
    stopped = sorted({text for kind, _, text, _, _ in outcome if kind == "stopped"})
    if stopped:
        raise LoadStopped("; ".join(stopped))
    return ([(uri, text) for kind, uri, text, _, _ in outcome if kind == "failed"],
            sum(row[3] for row in outcome), sum(row[4] for row in outcome))
