"""A stand-in for Neptune's bulk loader: its documented HTTP endpoints, loading Neptune's Gremlin
load-format CSV from the local S3 (moto, through boto3) into Gremlin Server (gremlinpython
mergeV/mergeE by id), as strict about the format as Neptune's documentation.

    with NeptuneLoader(LoaderSettings(s3_endpoint, access_key, secret_key, gremlin_endpoint)) \\
            as loader:
        ...  # boto3.client("neptunedata", endpoint_url=loader.endpoint, ...)

POST /loader (the JSON boto3's `start_loader_job` sends) -> parameters checked (required ones,
format csv, the cluster's region, a role ARN, parallelism, known dependencies) and the source
listed in S3 -> queued, FIFO, one load at a time (a request without queueRequest while another
load waits or runs is refused) -> the worker: a load whose dependencies did not complete fails
with LOAD_FAILED_BECAUSE_DEPENDENCY_NOT_SATISFIED -> each object under the source prefix is a
feed: its header parsed (system columns, types, cardinality, escapes) or the feed fails as a
whole; each record parsed and converted by its column's type, then upserted by id (what is
present read once a feed, 50 records written a request) -> a record that cannot be loaded is
logged (errorCode, errorMessage, fileName, recordNum: its data row, from 1 after the header)
and skipped, or with failOnError stops the load -> LOAD_COMPLETED, or LOAD_FAILED when any
feed logged an error.
`mode` RESUME or AUTO (the default) loads again only the files that the latest ended load of the
same source did not complete (RESUME with no such load is refused); NEW loads them all.
DELETE /loader/{loadId} (or /loader?loadId=): a queued or running load ends
LOAD_CANCELLED_BY_USER (a running one after the feed it is loading), 200 with no body; any
other load id is refused with 404, as Neptune refuses one that does not exist or is not active.
GET /loader/{loadId}?details&errors&page&errorsPerPage -> {"status": "200 OK", "payload":
{feedCount, overallStatus[, failedFeeds][, errors]}} as AWS documents it. Errors are JSON
bodies {"code", "requestId", "detailedMessage"} with the HTTP status of botocore's model.

Not Neptune: one label per vertex (Gremlin Server's TinkerGraph), one feed at a time, and
whatever Neptune does that its documentation does not say. Two hooks for tests, not part of the
API: `running` (a `threading.Event`, set; cleared, the worker takes up no load until it is set
again), `record_number_shift` (0; added to each logged record's recordNum, to number records
otherwise than from 1 after the header) and `write_conflicts` (0; the next that many feeds load
only their first half of records, and end LOAD_COMMITTED_W_WRITE_CONFLICTS). Run it alone:
`python dev/neptune_loader.py --help`.
"""
from __future__ import annotations

import argparse
import json
import math
import queue
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

HOST = "127.0.0.1"
PARALLELISM = ("LOW", "MEDIUM", "HIGH", "OVERSUBSCRIBE")
QUEUE_LIMIT = 64
ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::\d{12}:role/\S+")
TYPES = {"bool": "Bool", "boolean": "Bool", "byte": "Byte", "short": "Short", "int": "Int",
         "long": "Long", "float": "Float", "double": "Double", "string": "String",
         "date": "Date", "datetime": "Date"}
WHOLE_RANGES = {"Byte": 2 ** 7, "Short": 2 ** 15, "Int": 2 ** 31, "Long": 2 ** 63}
DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?Infinity|NaN")
DATE_FORMATS = ("%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%SZ")
VERTEX_SYSTEM = ("~id", "~label")
EDGE_SYSTEM = ("~id", "~from", "~to", "~label")
RUNNING = ("LOAD_NOT_STARTED", "LOAD_IN_QUEUE", "LOAD_IN_PROGRESS")
COMPLETED = "LOAD_COMPLETED"
CANCELLED = "LOAD_CANCELLED_BY_USER"
WRITE_CONFLICTS = "LOAD_COMMITTED_W_WRITE_CONFLICTS"
MODES = ("RESUME", "NEW", "AUTO")

# the documented errorLogs codes
PARSING_ERROR = "PARSING_ERROR"
S3_ACCESS_DENIED_ERROR = "S3_ACCESS_DENIED_ERROR"
MISSING_VERTEX = "FROM_OR_TO_VERTEX_ARE_MISSING"
ID_ON_MULTIPLE_EDGES = "ID_ASSIGNED_TO_MULTIPLE_EDGES"
CARDINALITY_VIOLATION = "SINGLE_CARDINALITY_VIOLATION"
# the overallStatus counters an error adds to
PARSING, DATATYPE, INSERT = "parsingErrors", "datatypeMismatchErrors", "insertErrors"


# --- the format ---------------------------------------------------------------------------------

class FileRejected(Exception):
    """A feed the loader cannot read at all (a header that does not parse, CSV that breaks
    RFC 4180 outside a record's fields)."""


@dataclass(frozen=True)
class Field:
    """A CSV field's text and whether it was quoted (a quoted "" is the empty string, an
    unquoted empty field is blank: no value)."""

    text: str
    quoted: bool = False

    @property
    def blank(self) -> bool:
        return not self.text and not self.quoted


@dataclass(frozen=True)
class Column:
    """A property column: its name (escapes removed), type, cardinality and array flag."""

    name: str
    type: str
    cardinality: str = "set"
    array: bool = False


@dataclass(frozen=True)
class Header:
    """A feed's header: 'vertex' or 'edge', the index of each system column, and the property
    columns by index."""

    kind: str
    system: dict
    properties: dict


@dataclass(frozen=True)
class Record:
    """A parsed data row: its number (from 1), ids, label, and {name: (column, [values])}."""

    number: int
    id: str
    label: str
    from_id: str = ""
    to_id: str = ""
    properties: dict = field(default_factory=dict)


@dataclass(frozen=True)
class RecordError:
    """A record the loader skips: the errorLogs entry's code and message, its number, and
    the overallStatus counter it adds to."""

    code: str
    message: str
    number: int
    counter: str = PARSING


def parse_csv(text: str) -> list[list[Field]]:
    """RFC 4180 records (\\n or \\r\\n ends; quoted fields with "" for a quote, line breaks and
    commas inside; spaces around unquoted fields ignored; blank lines skipped). `FileRejected`
    for a quote inside an unquoted field, text after a closing quote, or an unterminated
    quoted field: the loader aborts such a file."""
    records: list[list[Field]] = []
    record: list[Field] = []
    chars: list[str] = []
    quoted = in_quotes = after_quote = False
    line = 1

    def end_field() -> None:
        nonlocal chars, quoted, after_quote
        text_ = "".join(chars)
        record.append(Field(text_ if quoted else text_.strip(" "), quoted))
        chars, quoted, after_quote = [], False, False

    def end_record() -> None:
        nonlocal record
        end_field()
        if record != [Field("")]:
            records.append(record)
        record = []

    index, size = 0, len(text)
    while index < size:
        char = text[index]
        if in_quotes:
            if char == '"' and text[index + 1:index + 2] == '"':
                chars.append('"')
                index += 2
                continue
            if char == '"':
                in_quotes, after_quote = False, True
            else:
                chars.append(char)
                line += char == "\n"
        elif char == ",":
            end_field()
        elif char in "\r\n":
            end_record()
            line += 1
            if char == "\r" and text[index + 1:index + 2] == "\n":
                index += 1
        elif after_quote:
            if char not in " \t":
                raise FileRejected(f"line {line}: text after a closing quote")
        elif char == '"':
            if "".join(chars).strip(" "):
                raise FileRejected(f"line {line}: a double quote inside an unquoted field "
                                   f"(fields with quotes, commas or line breaks must be quoted)")
            chars, quoted, in_quotes = [], True, True
        else:
            chars.append(char)
        index += 1
    if in_quotes:
        raise FileRejected(f"line {line}: a quoted field is not closed")
    if chars or record or quoted:
        end_record()
    return records


def _split_unescaped(text: str, separator: str) -> list[str]:
    """`text` split at each `separator` not preceded by a backslash, escapes removed."""
    parts, current, index = [], [], 0
    while index < len(text):
        if text[index] == "\\" and text[index + 1:index + 2] == separator:
            current.append(separator)
            index += 2
            continue
        if text[index] == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(text[index])
        index += 1
    parts.append("".join(current))
    return parts


def parse_column(text: str, kind: str) -> Column:
    """A property column header `name[:Type[(single|set)][[]]]` (a colon in the name escaped
    as `\\:`; no type: String); `FileRejected` for a name with a space, comma or line break,
    an unknown type, a cardinality other than single or set, `(single)[]`, and on an edge any
    cardinality but single or an array."""
    if any(char in text for char in " ,\r\n") or not text:
        raise FileRejected(f"Invalid column header {text!r}: space, comma, carriage return and "
                           f"newline are not allowed")
    parts = _split_unescaped(text, ":")
    name, spec = (parts[0], "String") if len(parts) == 1 else (":".join(parts[:-1]), parts[-1])
    match = re.fullmatch(r"([A-Za-z]+)(?:\(([^)]*)\))?(\[\])?", spec)
    if not name or not match:
        raise FileRejected(f"Invalid column header {text!r}")
    type_name, cardinality, array = match.group(1), match.group(2), bool(match.group(3))
    if type_name.lower() not in TYPES:
        raise FileRejected(f"Invalid data type {type_name!r} in column header {text!r}")
    if cardinality is not None and cardinality not in ("single", "set"):
        raise FileRejected(f"Invalid cardinality {cardinality!r} in column header {text!r}: "
                           f"single or set")
    if cardinality == "single" and array:
        raise FileRejected(f"Column header {text!r}: single cardinality and an array type "
                           f"contradict each other")
    if kind == "edge" and (cardinality == "set" or array):
        raise FileRejected(f"Column header {text!r}: edge properties are single-valued")
    default = "single" if kind == "edge" else "set"
    return Column(name, TYPES[type_name.lower()], cardinality or default, array)


def parse_header(fields: list[Field]) -> Header:
    """A feed's header; `FileRejected` for an unknown or repeated system column, a missing
    ~id, an edge header without both ~from and ~to, or a bad property column."""
    names = [f.text for f in fields]
    system = {name: index for index, name in enumerate(names) if name.startswith("~")}
    for name in system:
        if name not in EDGE_SYSTEM:
            raise FileRejected(f"Invalid system column header {name!r}")
        if names.count(name) > 1:
            raise FileRejected(f"System column {name!r} appears more than once in the header")
    if "~id" not in system:
        raise FileRejected("Header has no ~id column, which is required")
    if ("~from" in system) != ("~to" in system):
        missing = "~to" if "~from" in system else "~from"
        raise FileRejected(f"Edge header has no {missing} column, which is required")
    kind = "edge" if "~from" in system else "vertex"
    properties = {index: parse_column(name, kind) for index, name in enumerate(names)
                  if not name.startswith("~")}
    if len({c.name for c in properties.values()}) < len(properties):
        raise FileRejected("A property column appears more than once in the header")
    return Header(kind, system, properties)


def convert(text: str, column: Column) -> object:
    """A field's value by its column's type; `ValueError` naming the mismatch."""
    if column.type == "Bool":
        return text.lower() == "true"  # documented: any value other than true is false
    if column.type in WHOLE_RANGES:
        bound = WHOLE_RANGES[column.type]
        if not re.fullmatch(r"[+-]?\d+", text) or not -bound <= int(text) < bound:
            raise ValueError(f"{text!r} is not a {column.type}")
        return int(text)
    if column.type in ("Float", "Double"):
        if not DECIMAL.fullmatch(text):
            raise ValueError(f"{text!r} is not a {column.type}")
        return float(text.replace("Infinity", "inf"))
    if column.type == "Date":
        for pattern in DATE_FORMATS:
            try:
                return datetime.strptime(text, pattern).replace(tzinfo=timezone.utc)
            except ValueError:
                continue
        raise ValueError(f"{text!r} is not a Date in a supported format")
    return text


def parse_record(fields: list[Field], header: Header, number: int) -> Record | RecordError:
    """Data row `number` of a feed as a `Record`, or the `RecordError` the loader logs: a
    wrong field count, a blank required column, an empty label, a value of the wrong type,
    several values on a single-cardinality column."""
    width = len(header.system) + len(header.properties)
    if len(fields) != width:
        return RecordError(PARSING_ERROR, f"Record has {len(fields)} fields, the header "
                                          f"{width}", number)
    system = {name: fields[index] for name, index in header.system.items()}
    for name in ("~id", "~from", "~to"):
        if name in system and system[name].blank:
            return RecordError(PARSING_ERROR, f"Blank field in required column {name}", number)
    label = system.get("~label", Field("vertex" if header.kind == "vertex" else "edge"))
    if not label.text:
        return RecordError(PARSING_ERROR, "Labels cannot be empty", number)
    if header.kind == "vertex" and ";" in label.text:
        return RecordError(PARSING_ERROR, "Several labels on one vertex: the stand-in's graph "
                                          "holds one label per vertex", number)
    properties = {}
    for index, column in header.properties.items():
        if fields[index].blank:
            continue
        texts = _split_unescaped(fields[index].text, ";") if column.array else \
            [fields[index].text]
        try:
            values = [convert(text, column) for text in texts]
        except ValueError as mismatch:
            return RecordError(PARSING_ERROR, f"Data type mismatch in column {column.name}: "
                                              f"{mismatch}", number, DATATYPE)
        properties[column.name] = (column, values)
    return Record(number, system["~id"].text, label.text,
                  system["~from"].text if "~from" in system else "",
                  system["~to"].text if "~to" in system else "", properties)


def parse_feed(text: str) -> tuple[Header, list[Record | RecordError]]:
    """A feed's header and each data row parsed; `FileRejected` when the feed cannot be read
    at all."""
    rows = parse_csv(text)
    if not rows:
        raise FileRejected("The file has no header row")
    header = parse_header(rows[0])
    return header, [parse_record(row, header, number)
                    for number, row in enumerate(rows[1:], start=1)]


# --- loading into Gremlin Server ---------------------------------------------------------------

def _same(existing: list, values: list) -> bool:
    return len(existing) == len(values) and all(
        a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a)
                   and math.isnan(b)) for a, b in zip(existing, values))


WRITES_PER_REQUEST = 50


def load_vertices(g, records: list[Record], update_single: bool) -> list[RecordError]:
    """mergeV each record by id, then its properties (single: replaced only with
    `update_single`, else a different value already there is a violation; set: added). The
    vertices present are read in one request, the records written 50 a request."""
    from gremlin_python.process.traversal import Cardinality, Merge, T

    existing = {v["id"]: v["properties"] for v in g.V(*{r.id for r in records}).project(
        "id", "properties").by(T.id).by(_value_map()).to_list()} if records else {}
    errors, accepted = [], []
    for record in records:
        present = existing.setdefault(record.id, {})
        violation = next((name for name, (column, values) in record.properties.items()
                          if column.cardinality == "single" and (len(values) > 1 or (
                              name in present and not update_single
                              and not _same(present[name], values)))), None)
        if violation:
            errors.append(RecordError(CARDINALITY_VIOLATION, f"Vertex {record.id!r} already has "
                                                             f"a value for single-cardinality "
                                                             f"property {violation!r}",
                                      record.number, INSERT))
            continue
        present.update({name: values for name, (_, values) in record.properties.items()})
        accepted.append(record)
    for batch in _batches(accepted):
        traversal = g
        for record in batch:
            traversal = traversal.merge_v({T.id: record.id}).option(
                Merge.on_create, {T.id: record.id, T.label: record.label}) \
                .option(Merge.on_match, {})
            for name, (column, values) in record.properties.items():
                cardinality = Cardinality.single if column.cardinality == "single" \
                    else Cardinality.set_
                for value in values:
                    traversal = traversal.property(cardinality, name, value)
        traversal.iterate()
    return errors


def load_edges(g, records: list[Record], update_single: bool) -> list[RecordError]:
    """mergeE each record by id between vertices present; a missing end vertex, an id already
    on an edge with other ends or label, and (without `update_single`) a different value of a
    property are errors. Vertices and edges present are read in one request each, the
    records written 50 a request."""
    from gremlin_python.process.graph_traversal import __
    from gremlin_python.process.traversal import Direction, Merge, T

    ends = {end for r in records for end in (r.from_id, r.to_id)}
    present = set(g.V(*ends).id_().to_list()) if ends else set()
    existing = {e["id"]: e for e in g.E(*{r.id for r in records}).project(
        "id", "label", "from", "to", "properties").by(T.id).by(T.label).by(__.out_v().id_())
        .by(__.in_v().id_()).by(_value_map()).to_list()} if records else {}
    errors, accepted = [], []
    for record in records:
        error = None
        edge = existing.get(record.id)
        if {record.from_id, record.to_id} - present:
            error = RecordError(MISSING_VERTEX, f"Either from vertex, '{record.from_id}', or to "
                                                f"vertex, '{record.to_id}', is not present.",
                                record.number, INSERT)
        elif edge and (edge["label"], edge["from"], edge["to"]) != (
                record.label, record.from_id, record.to_id):
            error = RecordError(ID_ON_MULTIPLE_EDGES, f"Edge id {record.id!r} is already "
                                                      f"assigned to another edge",
                                record.number, INSERT)
        elif edge and not update_single and any(
                name in edge["properties"] and not _same([edge["properties"][name]], values)
                for name, (_, values) in record.properties.items()):
            error = RecordError(CARDINALITY_VIOLATION, f"Edge {record.id!r} already has a "
                                                       f"different value for a property",
                                record.number, INSERT)
        if error:
            errors.append(error)
            continue
        properties = {name: values[0] for name, (_, values) in record.properties.items()}
        existing[record.id] = {"label": record.label, "from": record.from_id,
                               "to": record.to_id,
                               "properties": {**(edge or {}).get("properties", {}),
                                              **properties}}
        accepted.append((record, properties))
    for batch in _batches(accepted):
        traversal = g
        for record, properties in batch:
            traversal = traversal.merge_e({T.id: record.id, T.label: record.label,
                                           Direction.OUT: record.from_id,
                                           Direction.IN: record.to_id}) \
                .option(Merge.on_create, properties).option(Merge.on_match, properties)
        traversal.iterate()
    return errors


def _value_map():
    from gremlin_python.process.graph_traversal import __
    return __.value_map()


def _batches(items: list) -> list[list]:
    return [items[start:start + WRITES_PER_REQUEST]
            for start in range(0, len(items), WRITES_PER_REQUEST)]


# --- the endpoints ------------------------------------------------------------------------------

@dataclass(frozen=True)
class LoaderSettings:
    """Where the stand-in reads (the local S3) and writes (Gremlin Server), and the cluster's
    region (`s3BucketRegion` must match it)."""

    s3_endpoint: str
    access_key: str
    secret_key: str
    gremlin_endpoint: str
    region: str = "us-east-1"


class LoaderRequestError(Exception):
    """A request the loader refuses: HTTP status, the error code botocore's model names, and
    the detailed message."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code = status, code


@dataclass
class Feed:
    """One file of a load and its counters."""

    uri: str
    status: str = "LOAD_NOT_STARTED"
    counts: dict = field(default_factory=lambda: {"totalRecords": 0, "totalDuplicates": 0,
                                                  PARSING: 0, DATATYPE: 0, INSERT: 0})


@dataclass
class Load:
    """One load job, as the status endpoint reports it."""

    load_id: str
    source: str
    keys: list
    fail_on_error: bool
    update_single: bool
    dependencies: list
    status: str = "LOAD_IN_QUEUE"
    start_time: int = 0
    time_spent: int = 0
    feeds: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    cancelled: bool = False


def _flag(body: dict, name: str, default: bool) -> bool:
    """A boolean parameter: JSON true/false (boto3) or "TRUE"/"FALSE" (curl, the docs)."""
    value = body.get(name, default)
    if isinstance(value, str):
        if value.upper() not in ("TRUE", "FALSE"):
            raise LoaderRequestError(400, "BadRequestException",
                                     f"Invalid value {value!r} for {name}: TRUE or FALSE")
        return value.upper() == "TRUE"
    return bool(value)


class NeptuneLoader:
    """The stand-in: an HTTP server on `port` (0: a free one) and one worker loading the
    queued loads in order. A context manager; `endpoint` is its http:// URL."""

    def __init__(self, settings: LoaderSettings, port: int = 0):
        import boto3

        self.settings = settings
        self.s3 = boto3.client("s3", endpoint_url=settings.s3_endpoint,
                               aws_access_key_id=settings.access_key,
                               aws_secret_access_key=settings.secret_key,
                               region_name=settings.region)
        self.loads: dict[str, Load] = {}
        self.running = threading.Event()
        self.running.set()
        self.record_number_shift = 0
        self.write_conflicts = 0
        self._lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue()
        self._server = ThreadingHTTPServer((HOST, port), _handler(self))
        self._threads = [threading.Thread(target=self._server.serve_forever, daemon=True),
                         threading.Thread(target=self._work, daemon=True)]

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self._server.server_address[1]}"

    def __enter__(self) -> "NeptuneLoader":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._queue.put(None)
        self._server.shutdown()
        self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=10)

    # POST /loader
    def start(self, body: dict) -> str:
        """Check and queue a load; its id. `LoaderRequestError` as Neptune refuses it."""
        for name in ("source", "format", "region", "iamRoleArn"):
            if not body.get(name):
                raise LoaderRequestError(400, "MissingParameterException",
                                         f"Missing required parameter: {name}")
        if body["format"] != "csv":
            raise LoaderRequestError(400, "BadRequestException",
                                     f"format {body['format']!r}: the stand-in loads csv "
                                     f"(Gremlin) only")
        if body["region"] != self.settings.region:
            raise LoaderRequestError(400, "BadRequestException",
                                     f"region {body['region']!r} does not match the cluster's "
                                     f"region {self.settings.region!r}")
        if not ROLE_ARN.fullmatch(body["iamRoleArn"]):
            raise LoaderRequestError(400, "BadRequestException",
                                     f"Invalid IAM role ARN {body['iamRoleArn']!r}")
        if body.get("parallelism", "HIGH") not in PARALLELISM:
            raise LoaderRequestError(400, "BadRequestException",
                                     f"Invalid parallelism {body['parallelism']!r}: "
                                     f"{', '.join(PARALLELISM)}")
        mode = body.get("mode", "AUTO")
        if mode not in MODES:
            raise LoaderRequestError(400, "BadRequestException",
                                     f"Invalid mode {mode!r}: {', '.join(MODES)}")
        queued = _flag(body, "queueRequest", False)
        dependencies = list(body.get("dependencies") or [])
        bucket, keys = self._list_source(body["source"])
        with self._lock:
            if mode != "NEW":
                keys = self._not_loaded(body["source"], bucket, keys, mode)
            unknown = [d for d in dependencies if d not in self.loads]
            if unknown:
                raise LoaderRequestError(400, "BadRequestException",
                                         f"Unknown load id(s) in dependencies: {unknown}")
            if dependencies and not queued:
                raise LoaderRequestError(400, "BadRequestException",
                                         "dependencies need queueRequest TRUE")
            waiting = [load for load in self.loads.values() if load.status in RUNNING]
            if waiting and not queued:
                raise LoaderRequestError(400, "BadRequestException",
                                         "Failed to start new load: a load is already in "
                                         "progress or queued and queueRequest is not TRUE")
            if len(waiting) >= QUEUE_LIMIT:
                raise LoaderRequestError(429, "TooManyRequestsException",
                                         f"{QUEUE_LIMIT} loads already queued")
            load = Load(str(uuid.uuid4()), body["source"], keys,
                        _flag(body, "failOnError", True),
                        _flag(body, "updateSingleCardinalityProperties", False), dependencies)
            self.loads[load.load_id] = load
        self._queue.put(load.load_id)
        return load.load_id

    def _not_loaded(self, source: str, bucket: str, keys: list[str], mode: str) -> list[str]:
        """RESUME and AUTO: the keys that the latest ended load of `source` did not load
        completely (none: nothing is loaded again); AUTO without such a load: all; RESUME
        without one: `LoaderRequestError`."""
        previous = [load for load in self.loads.values()
                    if load.source == source and load.status not in RUNNING]
        if not previous:
            if mode == "RESUME":
                raise LoaderRequestError(400, "BadRequestException",
                                         f"mode RESUME: no previous load of {source}")
            return keys
        loaded = {feed.uri for feed in previous[-1].feeds if feed.status == COMPLETED}
        return [key for key in keys if f"s3://{bucket}/{key}" not in loaded]

    def _list_source(self, source: str) -> tuple[str, list[str]]:
        """(bucket, keys) of the objects under the source prefix; `LoaderRequestError` when the
        bucket cannot be read or holds nothing there."""
        parts = urlsplit(source)
        if parts.scheme != "s3" or not parts.netloc:
            raise LoaderRequestError(400, "BadRequestException",
                                     f"Invalid source {source!r}: s3://bucket/prefix")
        try:
            pages = self.s3.get_paginator("list_objects_v2").paginate(
                Bucket=parts.netloc, Prefix=parts.path.lstrip("/"))
            keys = sorted(item["Key"] for page in pages for item in page.get("Contents", [])
                          if not item["Key"].endswith("/"))
        except Exception as failed:  # NoSuchBucket, AccessDenied, ...
            raise LoaderRequestError(400, "LoadUrlAccessDeniedException",
                                     f"Failed to start new load for the source {source}: "
                                     f"cannot list it ({failed})") from None
        if not keys:
            raise LoaderRequestError(400, "BadRequestException",
                                     f"Failed to start new load for the source {source}: no "
                                     f"files found")
        return parts.netloc, keys

    # DELETE /loader/{loadId}
    def cancel(self, load_id: str) -> None:
        """Cancel a queued or running load: it ends LOAD_CANCELLED_BY_USER (a running one once
        its current feed is loaded). `LoaderRequestError` 404 for any other id."""
        with self._lock:
            load = self.loads.get(load_id)
            if load is None or load.status not in RUNNING:
                raise LoaderRequestError(404, "BulkLoadIdNotFoundException",
                                         f"The load with id = {load_id} does not exist or not "
                                         f"active")
            load.cancelled = True
            if load.status != "LOAD_IN_PROGRESS":
                load.status = CANCELLED

    # GET /loader/{loadId}
    def status(self, load_id: str, query: dict) -> dict:
        """The documented status payload; `details` adds failedFeeds, `errors` the page
        `page` of `errorsPerPage` errorLogs."""
        with self._lock:
            load = self.loads.get(load_id)
            if load is None:
                raise LoaderRequestError(404, "BulkLoadIdNotFoundException",
                                         f"Load id {load_id} not found")
            totals = {name: sum(f.counts[name] for f in load.feeds)
                      for name in Feed("").counts}
            feed_count: dict[str, int] = {}
            for feed in load.feeds:
                feed_count[feed.status] = feed_count.get(feed.status, 0) + 1
            payload = {"feedCount": [{status: count} for status, count in feed_count.items()],
                       "overallStatus": {"fullUri": load.source, "runNumber": 1,
                                         "retryNumber": 0, "status": load.status,
                                         "totalTimeSpent": load.time_spent,
                                         "startTime": load.start_time, **totals}}
            if _query_flag(query, "details"):
                payload["failedFeeds"] = [
                    {"fullUri": f.uri, "runNumber": 1, "retryNumber": 0, "status": f.status,
                     "totalTimeSpent": load.time_spent, "startTime": load.start_time,
                     **f.counts} for f in load.feeds if f.status != "LOAD_COMPLETED"]
            if _query_flag(query, "errors"):
                page = int(query.get("page", ["1"])[0])
                per_page = int(query.get("errorsPerPage", ["10"])[0])
                if page < 1 or per_page < 1:
                    raise LoaderRequestError(400, "BadRequestException",
                                             "page and errorsPerPage must be positive")
                logs = load.errors[(page - 1) * per_page:page * per_page]
                start = (page - 1) * per_page + 1
                payload["errors"] = {"startIndex": start if logs else 0,
                                     "endIndex": start + len(logs) - 1 if logs else 0,
                                     "loadId": load_id, "errorLogs": logs}
        return {"status": "200 OK", "payload": payload}

    # the worker
    def _work(self) -> None:
        while True:
            load_id = self._queue.get()
            if load_id is None:
                return
            self.running.wait()
            load = self.loads[load_id]
            if load.cancelled:
                continue
            started = time.monotonic()
            load.start_time = int(time.time())
            if any(self.loads[d].status != "LOAD_COMPLETED" for d in load.dependencies):
                load.status = "LOAD_FAILED_BECAUSE_DEPENDENCY_NOT_SATISFIED"
                continue
            load.status = "LOAD_IN_PROGRESS"
            try:
                load.status = self._run(load)
            except Exception as failed:  # the stand-in's own failure, reported as Neptune would
                load.status = "LOAD_UNEXPECTED_ERROR"
                load.errors.append({"errorCode": "INTERNAL_ERROR", "errorMessage": str(failed),
                                    "fileName": load.source, "recordNum": 0})
            load.time_spent = int(time.monotonic() - started)

    def _run(self, load: Load) -> str:
        from gremlin_python.driver.driver_remote_connection import DriverRemoteConnection
        from gremlin_python.process.anonymous_traversal import traversal

        bucket = urlsplit(load.source).netloc
        load.feeds = [Feed(f"s3://{bucket}/{key}") for key in load.keys]
        remote = DriverRemoteConnection(self.settings.gremlin_endpoint, "g", pool_size=1)
        try:
            g = traversal().with_remote(remote)
            for feed, key in zip(load.feeds, load.keys):
                if load.cancelled:
                    return CANCELLED
                feed.status = "LOAD_IN_PROGRESS"
                feed.status = self._load_feed(g, load, feed, bucket, key)
                if feed.status not in (COMPLETED, WRITE_CONFLICTS) and load.fail_on_error:
                    return "LOAD_FAILED"
        finally:
            remote.close()
        ended = {feed.status for feed in load.feeds}
        return COMPLETED if ended <= {COMPLETED} else \
            WRITE_CONFLICTS if ended == {COMPLETED, WRITE_CONFLICTS} or \
            ended == {WRITE_CONFLICTS} else "LOAD_FAILED"

    def _load_feed(self, g, load: Load, feed: Feed, bucket: str, key: str) -> str:
        def log(code: str, message: str, number: int, counter: str) -> None:
            feed.counts[counter] += 1
            load.errors.append({"errorCode": code, "errorMessage": message,
                                "fileName": feed.uri, "recordNum": number})

        try:
            text = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode("utf-8")
        except UnicodeDecodeError:
            log(PARSING_ERROR, "The file is not UTF-8", 0, PARSING)
            return "LOAD_FAILED"
        except Exception as failed:
            log(S3_ACCESS_DENIED_ERROR, f"Cannot read the file: {failed}", 0, PARSING)
            return "LOAD_S3_ACCESS_DENIED_ERROR"
        try:
            header, records = parse_feed(text)
        except FileRejected as rejected:
            log(PARSING_ERROR, str(rejected), 0, PARSING)
            return "LOAD_FAILED"
        load_records = load_edges if header.kind == "edge" else load_vertices
        parsed = [r for r in records if isinstance(r, Record)]
        if load.fail_on_error:  # the records before the first bad one, then stop
            first_bad = next((r for r in records if isinstance(r, RecordError)), None)
            if first_bad:
                parsed = [r for r in parsed if r.number < first_bad.number]
        conflicted = self.write_conflicts > 0
        if conflicted:  # the test hook: half the feed committed, the rest not
            self.write_conflicts -= 1
            parsed = parsed[:len(parsed) // 2]
        errors = [r for r in records if isinstance(r, RecordError)] + \
            load_records(g, parsed, load.update_single)
        feed.counts["totalRecords"] += sum(1 + len(r.properties) for r in parsed)
        for error in sorted(errors, key=lambda e: e.number):
            log(error.code, error.message, error.number + self.record_number_shift,
                error.counter)
            if load.fail_on_error:
                return "LOAD_FAILED"
        return "LOAD_FAILED" if errors else WRITE_CONFLICTS if conflicted else COMPLETED


def _query_flag(query: dict, name: str) -> bool:
    return query.get(name, ["false"])[0].lower() == "true"


def _handler(loader: NeptuneLoader):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet: the tests read the answers
            pass

        def _answer(self, status: int, body: dict | None) -> None:
            """`body` as JSON; None: no body."""
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            if body is not None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _serve(self, action) -> None:
            try:
                self._answer(200, action())
            except LoaderRequestError as refused:
                self._answer(refused.status, {"code": refused.code,
                                              "requestId": str(uuid.uuid4()),
                                              "detailedMessage": str(refused)})

        def do_POST(self) -> None:
            def start() -> dict:
                if urlsplit(self.path).path.rstrip("/") != "/loader":
                    raise LoaderRequestError(400, "BadRequestException",
                                             f"no such endpoint {self.path}")
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    raise LoaderRequestError(400, "BadRequestException",
                                             "the request body is not JSON") from None
                return {"status": "200 OK", "payload": {"loadId": loader.start(body)}}
            self._serve(start)

        def do_GET(self) -> None:
            def status() -> dict:
                parts = urlsplit(self.path)
                match = re.fullmatch(r"/loader/([^/]+)", parts.path)
                if not match:
                    raise LoaderRequestError(400, "BadRequestException",
                                             f"no such endpoint {parts.path}")
                return loader.status(match.group(1), parse_qs(parts.query))
            self._serve(status)

        def do_DELETE(self) -> None:
            def cancel() -> None:
                parts = urlsplit(self.path)
                match = re.fullmatch(r"/loader(?:/([^/]+))?/?", parts.path)
                load_id = match and (match.group(1) or
                                     parse_qs(parts.query).get("loadId", [""])[0])
                if not load_id:
                    raise LoaderRequestError(400, "BadRequestException",
                                             f"no load id in {self.path}")
                loader.cancel(load_id)
            self._serve(cancel)

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8183)
    parser.add_argument("--s3-endpoint", required=True)
    parser.add_argument("--access-key", required=True)
    parser.add_argument("--secret-key", required=True)
    parser.add_argument("--gremlin-endpoint", required=True)
    parser.add_argument("--region", default="us-east-1")
    args = parser.parse_args()
    settings = LoaderSettings(args.s3_endpoint, args.access_key, args.secret_key,
                              args.gremlin_endpoint, args.region)
    with NeptuneLoader(settings, args.port) as loader:
        print(f"Neptune loader stand-in at {loader.endpoint}", flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
