"""Configuration: a YAML file of defaults, `${VAR}` / `${VAR:-default}` expanded from the
environment, then command-line overrides, checked against the schema below.

Every key is typed; an unknown key, a wrong type or an out-of-range value raises `JobError`
naming the file and the dotted key, before any Spark work starts.
"""
from __future__ import annotations

import dataclasses
import os
import re
import typing
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import yaml

from imagegraph.errors import JobError


@dataclass(frozen=True)
class SparkConfig:
    """Spark session settings. `conf` is passed to the session builder as is; `log_level` is
    the JVM's log level once the session is up (WARN keeps INFO chatter out of job output)."""

    app_name: str = "imagegraph"
    log_level: str = "WARN"
    conf: dict = field(default_factory=dict)


@dataclass(frozen=True)
class S3Config:
    """How Spark's s3a connector and boto3 reach S3. Empty endpoint means AWS itself.

    `max_attempts` bounds the tries of each object read by the workers (boto3's standard retry
    mode: backoff with jitter on 500, 503 SlowDown and throttling).

    Retries of the s3a connector (`s3a://` URIs; EMRFS, behind `s3://` on EMR, has its own):
    the AWS SDK retries each HTTP request up to `sdk_max_retries` times with its own backoff
    (at most 20 s a wait); when it gives up, s3a retries the operation up to `retry_limit`
    times, or `throttle_retry_limit` times for throttling (503 SlowDown), waiting
    `retry_interval_s` (`throttle_retry_interval_s`) * 2**n * a random factor in [0.5, 1.5)
    before its n-th retry. The limits are bounded so that the waits are too: with the
    defaults, at most about 6.5 minutes of s3a's throttling backoff before an operation fails
    its task (which Spark then retries).
    """

    endpoint: str = ""
    access_key: str = ""
    secret_key: str = ""
    region: str = "us-east-1"
    path_style_access: bool = False
    max_attempts: int = 10
    sdk_max_retries: int = 5
    retry_limit: int = 7
    retry_interval_s: float = 0.5
    throttle_retry_limit: int = 8
    throttle_retry_interval_s: float = 0.5


@dataclass(frozen=True)
class InputConfig:
    """Which objects are read: file names matching `glob` (prefix listings), modified in
    [`modified_after`, `modified_before`) (ISO-8601 times; empty: no bound), read by
    `read_threads` threads per task (the S3 connections each task holds)."""

    glob: str = "*"
    recursive: bool = True
    modified_after: str = ""
    modified_before: str = ""
    read_threads: int = 8


@dataclass(frozen=True)
class InferenceConfig:
    """Inference settings: batch sizes are rows; limits are bytes and pixels; `embedding` adds
    the penultimate layer's output to the predictions Parquet (never to the graph).
    `partitions` per chunk of work; 0: one per `objects_per_partition` objects, at least
    Spark's default parallelism. `runtime`: 'tflite' (the model converted once per worker to
    TensorFlow Lite, XNNPACK kernels: about twice as fast on CPUs) or 'tensorflow' (a
    `tf.function`, for models TensorFlow Lite cannot convert). `precision`: 'float32', or
    'int8' (full integer quantization on TensorFlow Lite, calibrated on
    `int8_calibration_images` images and used only when its top-1 answers agree with float32's
    on at least the fraction `int8_min_agreement` of `int8_check_images` other images; else the
    run falls back to float32)."""

    top_k: int = 3
    batch_size: int = 64
    arrow_batch_size: int = 256
    partitions: int = 0
    objects_per_partition: int = 1000
    max_image_bytes: int = 50_000_000
    max_image_pixels: int = 89_478_485
    embedding: bool = False
    runtime: str = "tflite"
    precision: str = "float32"
    int8_min_agreement: float = 0.99
    int8_calibration_images: int = 200
    int8_check_images: int = 200


@dataclass(frozen=True)
class GraphConfig:
    """The Gremlin endpoint and how results are written to it.

    Requests carry at most `records_per_request` records (a label or a property is one record,
    as Neptune counts them) and `max_steps_per_request` traversal steps. `rows_per_flush`
    prediction rows are buffered per partition before their vertices, then their edges, are
    written. At most `max_concurrent_writers` connections write at once, one request in flight
    each, together at most `max_upserts_per_s` vertices and edges a second (0: no cap); a
    writing task holds up to `connections_per_task` of them, a thread each, so that a load
    occupies a few task slots rather than one per connection. `max_concurrent_writers`'s
    default, 0, sizes them to the Neptune writer instance: `writers` is 2 x `instance_vcpus`,
    the number of queries Neptune executes at once (it runs "twice the number of vCPUs" worker
    threads and queues the rest, queue time counting against the query timeout:
    https://docs.aws.amazon.com/neptune/latest/userguide/access-graph-queuing.html).

    Failures are handled as `graph.retry` classifies them. Waits back off exponentially from
    `retry_base_delay_s` up to `retry_max_delay_s` (full jitter). Transient server errors get at
    most `max_attempts` tries (so do reconnects while the endpoint refuses writes as read-only);
    lost connections and throttling are retried for up to `failover_budget_s` seconds of one
    request (a Neptune failover takes up to about 10 minutes without a replica), then the writer
    stops. A request the server rejects for its data is split in halves to isolate the bad rows,
    at most `max_split_requests` requests per rejected request. The same failure ending
    `max_failures_in_a_row` requests in a row, with no success between, stops the writer.
    Timeouts, in seconds: `connect_timeout_s` for TCP, TLS and the WebSocket handshake;
    `request_timeout_s` for each read or write of a request, longer than the server's own query
    timeout (Neptune's `neptune_query_timeout`, 120 s by default) so that the server's
    TimeLimitExceededException arrives before the client gives up.
    `iam_auth`: 'auto' signs requests (SigV4) for wss:// endpoints, 'on' always, 'off' never.
    `upsert_style`: 'merge' (mergeV/mergeE) or 'coalesce' (fold/coalesce/unfold, for engines
    without mergeV).
    `load`: 'mergev' (the upserts above) or 'bulk' (each chunk as Neptune Gremlin load-format CSV
    under the run's staging area, loaded by Neptune's bulk loader: `graph.bulk_load`). The
    loader's HTTPS endpoint is `loader_endpoint` (empty: the Gremlin endpoint's host and port);
    it reads S3 with the IAM role `loader_iam_role_arn` (attached to the cluster) using
    `loader_parallelism` threads (LOW, MEDIUM, HIGH, OVERSUBSCRIBE); its status is polled every
    `loader_poll_interval_s` seconds, and a load still running after `loader_timeout_s` seconds
    stops the run.
    """

    endpoint: str = "ws://localhost:8182/gremlin"
    enabled: bool = True
    iam_auth: str = "auto"
    region: str = ""
    upsert_style: str = "merge"
    rows_per_flush: int = 500
    records_per_request: int = 200
    max_steps_per_request: int = 1500
    instance_vcpus: int = 4
    max_concurrent_writers: int = 0
    connections_per_task: int = 4
    max_upserts_per_s: float = 0.0
    max_attempts: int = 8
    retry_base_delay_s: float = 0.5
    retry_max_delay_s: float = 20.0
    failover_budget_s: float = 600.0
    max_split_requests: int = 64
    max_failures_in_a_row: int = 20
    connect_timeout_s: float = 15.0
    request_timeout_s: float = 150.0
    load: str = "mergev"
    loader_endpoint: str = ""
    loader_iam_role_arn: str = ""
    loader_parallelism: str = "HIGH"
    loader_poll_interval_s: float = 5.0
    loader_timeout_s: float = 21600.0

    @property
    def writers(self) -> int:
        """Connections that write at once: `max_concurrent_writers`, or when that is 0, 2 x
        `instance_vcpus` (Neptune's query threads)."""
        return self.max_concurrent_writers or 2 * self.instance_vcpus


@dataclass(frozen=True)
class TrainingConfig:
    """Training settings: input size in pixels (height, width), epochs over the training split,
    the share of images in the validation split (`holdout_percent`: choosing the early-stopping
and exported epoch) and in the test split (`test_percent`: only measured) by content, and where
    petastorm materialises its Parquet cache (`cache_url`: a URI every executor and the driver
    can read; empty means a local temporary directory, right for local mode).

    `base`: the network, `small_cnn` (trained from scratch) or a Keras application
    (`mobilenet_v2`, `efficientnet_b0`, `resnet50`; RGB input, at least 32x32) whose `weights`
    are `none` (random), `imagenet` (downloaded by Keras: needs internet) or the URI of a Keras
    weights file of the backbone without its top. With pretrained weights a new head is trained
    on the frozen backbone for `epochs`, then the top `unfreeze_layers` layers of the backbone
    train with it for `fine_tune_epochs` more at `fine_tune_learning_rate`.
    `pixel_feed`: `uint8` (1 byte a pixel in the petastorm cache, cast in TensorFlow) or
    `float32` (4 bytes, the former feed, kept to measure against).
    Augmentation of the training split only, in the TensorFlow input pipeline: `augment_flip`
    (left-right), `augment_crop` (up to this fraction of each side cut away, resized back),
    `augment_brightness` (up to this fraction of 255 added or taken), `augment_contrast` (up to
    this fraction more or less contrast); 0 or false: off.
    `class_weighting`: `balanced` weighs each image by n / (classes * its class's count), or
    `none`. `early_stopping_patience`: epochs without a lower held-out loss before a phase stops
    (0: never); the best epoch's weights are exported.
    `workers`: Spark tasks training data-parallel (MultiWorkerMirroredStrategy in a barrier
    stage), 1: on the driver."""

    model_name: str = "imagegraph-cnn"
    model_version: str = ""
    input_height: int = 32
    input_width: int = 32
    color_mode: str = "grayscale"
    epochs: int = 10
    batch_size: int = 64
    holdout_percent: int = 20
    test_percent: int = 10
    learning_rate: float = 0.002
    seed: int = 7
    cache_url: str = ""
    base: str = "small_cnn"
    weights: str = "none"
    fine_tune_epochs: int = 0
    unfreeze_layers: int = 20
    fine_tune_learning_rate: float = 0.0001
    pixel_feed: str = "uint8"
    augment_flip: bool = False
    augment_crop: float = 0.0
    augment_brightness: float = 0.0
    augment_contrast: float = 0.0
    class_weighting: str = "balanced"
    early_stopping_patience: int = 0
    workers: int = 1


@dataclass(frozen=True)
class RunConfig:
    """How a run is driven and judged: objects are processed in chunks of `objects_per_chunk`,
    each committed to the output before the next starts (what `--resume` picks up after);
    progress is logged every `progress_interval_s` seconds; the run fails (exit code 3) when
    more than `max_failed_fraction` of the objects processed are dead-lettered. A run holds a
    lease on its (output, model, shard) that lives `lease_ttl_s` seconds past each renewal
    (every third of it): how long a run killed hard keeps the next one out (`runs.lease`)."""

    objects_per_chunk: int = 100_000
    progress_interval_s: float = 30.0
    max_failed_fraction: float = 0.05
    lease_ttl_s: float = 300.0


@dataclass(frozen=True)
class LinkConfig:
    """How the link job (`jobs/link.py`) connects images. Near duplicates: perceptual hashes
    (64 bits) within `near_duplicate_max_distance` bits, compared only when one of their
    `near_duplicate_bands` equal slices of bits (2, 4, 8 or 16) differs in at most
    `near_duplicate_band_radius` bits (none is missed while bands x (radius + 1) > the
    distance, which `load_config` requires). Similar images: each new image's `similar_k`
    nearest by the Euclidean distance of
    unit-length embeddings (0..2), within `similar_max_distance`, compared only when their
    64-bit random-hyperplane signatures (hyperplanes drawn with `seed`) have one of
    `similar_bands` bands within `similar_band_radius` bits."""

    near_duplicate_max_distance: int = 12
    near_duplicate_bands: int = 4
    near_duplicate_band_radius: int = 3
    similar_k: int = 5
    similar_max_distance: float = 0.5
    similar_bands: int = 4
    similar_band_radius: int = 2
    seed: int = 7


@dataclass(frozen=True)
class MetricsConfig:
    """A run's figures beyond its report (`runs.metrics`): with `cloudwatch`, each committed
    chunk's and the whole run's figures are sent as CloudWatch metrics in `namespace` (1 to 255
    characters, not starting with `AWS/`), through the S3 settings' endpoint and keys (empty
    endpoint: AWS's own; moto's local server answers CloudWatch on its S3 endpoint) in `region`
    (empty: the boto3 session's region, AWS_DEFAULT_REGION)."""

    cloudwatch: bool = False
    namespace: str = "imagegraph"
    region: str = ""


@dataclass(frozen=True)
class Config:
    """The whole configuration of a job run."""

    spark: SparkConfig = field(default_factory=SparkConfig)
    s3: S3Config = field(default_factory=S3Config)
    input: InputConfig = field(default_factory=InputConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    graph: GraphConfig = field(default_factory=GraphConfig)
    run: RunConfig = field(default_factory=RunConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    link: LinkConfig = field(default_factory=LinkConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)


_CHOICES = {"training.color_mode": ("grayscale", "rgb"),
            "training.base": ("small_cnn", "mobilenet_v2", "efficientnet_b0", "resnet50"),
            "training.pixel_feed": ("uint8", "float32"),
            "training.class_weighting": ("balanced", "none"),
            "graph.iam_auth": ("auto", "on", "off"),
            "inference.runtime": ("tflite", "tensorflow"),
            "link.near_duplicate_bands": (2, 4, 8, 16), "link.similar_bands": (2, 4, 8, 16),
            "inference.precision": ("float32", "int8"),
            "graph.upsert_style": ("merge", "coalesce"),
            "graph.load": ("mergev", "bulk"),
            "graph.loader_parallelism": ("LOW", "MEDIUM", "HIGH", "OVERSUBSCRIBE"),
            "spark.log_level": ("ALL", "DEBUG", "INFO", "WARN", "ERROR", "OFF")}
_POSITIVE = {
    "s3.max_attempts", "input.read_threads", "inference.objects_per_partition",
    "run.objects_per_chunk", "run.progress_interval_s", "run.lease_ttl_s",
    "inference.top_k", "inference.batch_size", "inference.arrow_batch_size",
    "inference.max_image_bytes", "inference.max_image_pixels", "graph.rows_per_flush",
    "inference.int8_calibration_images", "inference.int8_check_images",
    "graph.records_per_request", "graph.max_steps_per_request", "graph.max_attempts",
    "graph.retry_base_delay_s", "graph.retry_max_delay_s", "graph.failover_budget_s",
    "graph.max_split_requests", "graph.max_failures_in_a_row", "graph.connect_timeout_s",
    "graph.request_timeout_s", "graph.instance_vcpus", "graph.connections_per_task",
    "graph.loader_poll_interval_s",
    "graph.loader_timeout_s", "s3.retry_interval_s", "s3.throttle_retry_interval_s",
    "training.input_height",
    "training.input_width", "training.epochs", "training.batch_size", "training.learning_rate",
    "link.similar_k", "link.similar_max_distance",
    "training.fine_tune_learning_rate", "training.workers",
}
_RETRY_LIMITS = {"s3.sdk_max_retries", "s3.retry_limit", "s3.throttle_retry_limit"}
_MAX_RETRY_LIMIT = 20  # s3a's backoff doubles with each retry: 2**20 intervals is days
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def parse_time(text: str) -> datetime:
    """An ISO-8601 time as an aware UTC datetime; a time without zone is taken as UTC."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def expand_environment(text: str, environ: typing.Mapping[str, str] | None = None) -> str:
    """Replace `${VAR}` and `${VAR:-default}` in `text`; an unset `${VAR}` becomes ''."""
    environ = os.environ if environ is None else environ

    def replace(match: re.Match) -> str:
        value = environ.get(match.group(1))
        if value in (None, "") and match.group(2) is not None:
            return match.group(2)
        return value or ""

    return _ENV_REFERENCE.sub(replace, text)


def parse_override(assignment: str) -> tuple[str, Any]:
    """`'graph.rows_per_flush=200'` -> `('graph.rows_per_flush', 200)`; the value is read as YAML,
    or kept as the string it is where it is not valid YAML (`input.glob=*.jpg`)."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip():
        raise JobError(f"--set {assignment!r}: expected SECTION.KEY=VALUE")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def load_config(path: str | None, overrides: dict[str, Any] | None = None) -> Config:
    """Read `path` (YAML; None means built-in defaults), apply dotted-key `overrides`, validate."""
    config = load_sections(Config, path, overrides, "config file")
    _check_together(config, path or "<defaults>")
    return config


def _check_together(config: Config, source: str) -> None:
    """Raise `JobError` for settings that are each valid but not together."""
    training, link = config.training, config.link
    if training.holdout_percent + training.test_percent > 90:
        raise JobError(f"{source}: training.holdout_percent + training.test_percent must be at "
                       f"most 90, got {training.holdout_percent} + {training.test_percent}")
    covered = link.near_duplicate_bands * (link.near_duplicate_band_radius + 1) - 1
    if covered < link.near_duplicate_max_distance:
        raise JobError(
            f"{source}: link.near_duplicate_max_distance {link.near_duplicate_max_distance} "
            f"exceeds the {covered} bits that {link.near_duplicate_bands} bands within "
            f"{link.near_duplicate_band_radius} bits are sure to find (bands x (radius + 1) "
            "must exceed the distance): raise link.near_duplicate_bands or "
            "link.near_duplicate_band_radius, or lower the distance")


def load_sections(cls: type, path: str | None, overrides: dict[str, Any] | None,
                  kind: str):
    """An instance of the sectioned dataclass `cls` from the YAML file `path` (`kind` names it
    in errors; None means built-in defaults) with `${VAR}` expanded, then dotted-key
    `overrides` applied, every key checked (`build_section`)."""
    raw: dict = {}
    source = path or "<defaults>"
    if path:
        try:
            with open(path, encoding="utf-8") as handle:
                raw = yaml.safe_load(expand_environment(handle.read())) or {}
        except FileNotFoundError:
            raise JobError(f"{kind} {path} does not exist") from None
        except yaml.YAMLError as exc:
            raise JobError(f"{kind} {path} is not valid YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise JobError(f"{kind} {path}: expected a mapping of sections at the top")
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        if not key:
            raise JobError(f"override {dotted!r}: expected SECTION.KEY")
        raw.setdefault(section, {})
        if not isinstance(raw[section], dict):
            raise JobError(f"{source}: {section} must be a mapping")
        raw[section][key] = value
    return build_section(cls, raw, source, prefix="")


def build_section(cls: type, raw: Any, source: str, prefix: str):
    """An instance of the dataclass `cls` from the mapping `raw`, every key checked (unknown
    keys, types, ranges); errors name `source` and the dotted key under `prefix`."""
    if not isinstance(raw, dict):
        raise JobError(f"{source}: {prefix.rstrip('.') or 'top level'} must be a mapping")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise JobError(f"{source}: unknown key {prefix}{unknown[0]} "
                       f"(known in this section: {', '.join(sorted(fields))})")
    values = {}
    for name, value in raw.items():
        dotted = prefix + name
        expected = hints[name]
        if isinstance(expected, type) and dataclasses.is_dataclass(expected):
            values[name] = build_section(expected, value, source, dotted + ".")
        else:
            values[name] = _check_value(dotted, expected, value, source)
    return cls(**values)


def _check_value(dotted: str, expected: type, value: Any, source: str) -> Any:
    if value is None:
        raise JobError(f"{source}: {dotted} has no value")
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if expected is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if dotted == "graph.iam_auth" and isinstance(value, bool):  # YAML 1.1 reads on/off so
        value = "on" if value else "off"
    ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
    if not ok:
        raise JobError(f"{source}: {dotted} must be {expected.__name__}, "
                       f"got {type(value).__name__} {value!r}")
    if dotted in _POSITIVE and value <= 0:
        raise JobError(f"{source}: {dotted} must be greater than 0, got {value!r}")
    if dotted in _CHOICES and value not in _CHOICES[dotted]:
        choices = ", ".join(map(str, _CHOICES[dotted]))
        raise JobError(f"{source}: {dotted} must be one of {choices}, got {value!r}")
    if dotted in ("inference.partitions", "graph.max_concurrent_writers",
                  "graph.max_upserts_per_s") and value < 0:
        raise JobError(f"{source}: {dotted} must be 0 (automatic) or more, got {value!r}")
    if dotted in _RETRY_LIMITS and not 0 <= value <= _MAX_RETRY_LIMIT:
        raise JobError(f"{source}: {dotted} must be between 0 and {_MAX_RETRY_LIMIT}, "
                       f"got {value!r}")
    if dotted in ("link.near_duplicate_band_radius", "link.similar_band_radius") \
            and not 0 <= value <= 3:
        raise JobError(f"{source}: {dotted} must be between 0 and 3 bits, got {value!r}")
    if dotted == "link.near_duplicate_max_distance" and not 0 <= value <= 64:
        raise JobError(f"{source}: {dotted} must be between 0 and 64 bits, got {value!r}")
    if dotted in ("training.fine_tune_epochs", "training.unfreeze_layers",
                  "training.early_stopping_patience") and value < 0:
        raise JobError(f"{source}: {dotted} must be 0 or more, got {value!r}")
    if dotted.startswith("training.augment_") and not isinstance(value, bool) \
            and not 0 <= value < 1:
        raise JobError(f"{source}: {dotted} must be between 0 (off) and 1, got {value!r}")
    if dotted in ("training.holdout_percent", "training.test_percent") \
            and not 1 <= value <= 90:
        raise JobError(f"{source}: {dotted} must be between 1 and 90, got {value!r}")
    if dotted in ("run.max_failed_fraction", "inference.int8_min_agreement") \
            and not 0 <= value <= 1:
        raise JobError(f"{source}: {dotted} must be between 0 and 1, got {value!r}")
    if dotted == "metrics.namespace" and not (0 < len(value) <= 255
                                              and not value.startswith("AWS/")):
        raise JobError(f"{source}: {dotted} must be 1 to 255 characters not starting with "
                       f"AWS/, got {value!r}")
    if dotted in ("input.modified_after", "input.modified_before") and value:
        try:
            parse_time(value)
        except ValueError:
            raise JobError(f"{source}: {dotted} must be an ISO-8601 time such as "
                           f"2026-01-31T00:00:00Z, got {value!r}") from None
    return value
