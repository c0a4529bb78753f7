"""The jobs' configuration: a YAML file, `${VAR}` / `${VAR:-default}` expanded from the
environment, then command-line overrides, checked against the sections below (loading and
checking: `imagegraph.sections`; each key's constraint is declared on its field).

Every key is typed; an unknown key, a wrong type or an out-of-range value raises `JobError`
naming the file and the dotted key, before any Spark work starts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from imagegraph.errors import JobError
from imagegraph.sections import (
    COMMAND_LINE,
    Check,
    at_least,
    between,
    iso_time,
    load_sections,
    one_of,
    positive,
    setting,
)

MAX_RETRY_LIMIT = 20
"""s3a's backoff doubles with each retry: 2**20 intervals is days."""
_OFF_OR_FRACTION = Check("between 0 (off) and 1", lambda value: 0 <= value < 1)
"""0 (off) <= value < 1."""


@dataclass(frozen=True)
class SparkConfig:
    """Spark session settings. `conf` is passed to the session builder as is; `log_level` is
    the JVM's log level once the session is up (WARN keeps INFO chatter out of job output)."""

    app_name: str = "imagegraph"
    log_level: str = setting("WARN", one_of('ALL', 'DEBUG', 'INFO', 'WARN', 'ERROR', 'OFF'))
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
    max_attempts: int = setting(10, positive())
    sdk_max_retries: int = setting(5, between(0, MAX_RETRY_LIMIT))
    retry_limit: int = setting(7, between(0, MAX_RETRY_LIMIT))
    retry_interval_s: float = setting(0.5, positive())
    throttle_retry_limit: int = setting(8, between(0, MAX_RETRY_LIMIT))
    throttle_retry_interval_s: float = setting(0.5, positive())


@dataclass(frozen=True)
class InputConfig:
    """Which objects are read: file names matching `glob` (prefix listings), modified in
    [`modified_after`, `modified_before`) (ISO-8601 times; empty: no bound), read by
    `read_threads` threads per task (the S3 connections each task holds)."""

    glob: str = "*"
    recursive: bool = True
    modified_after: str = setting("", iso_time())
    modified_before: str = setting("", iso_time())
    read_threads: int = setting(8, positive())


@dataclass(frozen=True)
class InferenceConfig:
    """Inference settings: batch sizes are rows; limits are bytes and pixels; `embedding` adds
    the penultimate layer's output to the predictions Parquet (never to the graph).
    `partitions` per chunk of work; 0: one per `objects_per_partition` objects, at least
    Spark's default parallelism. `runtime`: 'tflite' (the model converted once per worker to
    TensorFlow Lite, XNNPACK kernels: about twice as fast on CPUs) or 'tensorflow' (a
    `tf.function`, for models TensorFlow Lite cannot convert). `precision`: 'float32', or
    'int8' (full integer quantization on TensorFlow Lite, calibrated on
    `int8_calibration_images` images and used only when, on `int8_check_images` other images,
    its answers pass the check against float32's: top-1 agreement shown above
    `int8_min_agreement` at 95% confidence (an exact binomial test: 700 images pass at 698
    agreeing), every top-k score within `int8_max_score_delta` of float32's and, when the run
    writes embeddings, each embedding's cosine similarity to float32's at least
    `int8_min_embedding_cosine`; else the run falls back to float32). `max_attempts`: the runs
    that may dead-letter an object (a version of it, for a model) whose dead letters are not
    final before `--resume` skips it (see `imagegraph.dead_letters`). `calibrated`: the scores
    written are the model's after temperature scaling by the temperature training fitted
    (`metadata.json`'s `temperature` metric; a model without one is scored as it gives them);
    false: as the model gives them. `min_score`: an image whose best score is under it is
    `unknown` (no class is likely) and the graph gets no `classified_as` edge under it (see
    `imagegraph.graph.elements`); 0: off."""

    top_k: int = setting(3, positive())
    batch_size: int = setting(64, positive())
    arrow_batch_size: int = setting(256, positive())
    partitions: int = setting(0, at_least(0, "0 (automatic) or more"))
    objects_per_partition: int = setting(1000, positive())
    max_image_bytes: int = setting(50_000_000, positive())
    max_image_pixels: int = setting(89_478_485, positive())
    embedding: bool = False
    runtime: str = setting("tflite", one_of('tflite', 'tensorflow'))
    precision: str = setting("float32", one_of('float32', 'int8'))
    int8_min_agreement: float = setting(0.99, between(0, 1))
    int8_max_score_delta: float = setting(0.1, between(0, 1))
    int8_min_embedding_cosine: float = setting(0.999, between(-1, 1))
    int8_calibration_images: int = setting(200, positive())
    int8_check_images: int = setting(700, positive())
    max_attempts: int = setting(3, positive())
    calibrated: bool = True
    min_score: float = setting(0.0, _OFF_OR_FRACTION)


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
    iam_auth: str = setting("auto", one_of('auto', 'on', 'off'))
    region: str = ""
    upsert_style: str = setting("merge", one_of('merge', 'coalesce'))
    rows_per_flush: int = setting(500, positive())
    records_per_request: int = setting(200, positive())
    max_steps_per_request: int = setting(1500, positive())
    instance_vcpus: int = setting(4, positive())
    max_concurrent_writers: int = setting(0, at_least(0, "0 (automatic) or more"))
    connections_per_task: int = setting(4, positive())
    max_upserts_per_s: float = setting(0.0, at_least(0, "0 (automatic) or more"))
    max_attempts: int = setting(8, positive())
    retry_base_delay_s: float = setting(0.5, positive())
    retry_max_delay_s: float = setting(20.0, positive())
    failover_budget_s: float = setting(600.0, positive())
    max_split_requests: int = setting(64, positive())
    max_failures_in_a_row: int = setting(20, positive())
    connect_timeout_s: float = setting(15.0, positive())
    request_timeout_s: float = setting(150.0, positive())
    load: str = setting("mergev", one_of('mergev', 'bulk'))
    loader_endpoint: str = ""
    loader_iam_role_arn: str = ""
    loader_parallelism: str = setting("HIGH", one_of('LOW', 'MEDIUM', 'HIGH', 'OVERSUBSCRIBE'))
    loader_poll_interval_s: float = setting(5.0, positive())
    loader_timeout_s: float = setting(21600.0, positive())

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
    can read, `hdfs://`, `s3://` or `s3a://`; empty means a local temporary directory, right
    for local mode).

    `base`: the network, `small_cnn` (trained from scratch) or a Keras application
    (`mobilenet_v2`, `efficientnet_b0`, `resnet50`; RGB input, at least 32x32) whose `weights`
    are `none` (random), `imagenet` (downloaded by Keras: needs internet) or the URI of a Keras
    weights file of the backbone without its top. With pretrained weights a new head is trained
    on the frozen backbone for `epochs`, then the top `unfreeze_layers` layers of the backbone
    (more than it has: all of them, logged) train with it for `fine_tune_epochs` more at
    `fine_tune_learning_rate`.
    Each phase's learning rate (`learning_rate`, `fine_tune_learning_rate`: for one worker's
    `batch_size`) is scaled by `workers` when `learning_rate_scaling` is `linear` (`none`: as
    set), rises linearly over the phase's first `warmup_epochs` epochs (0: none; at most the
    phase), then decays along a half cosine towards `final_learning_rate_fraction` of it (1:
    constant).
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
    input_height: int = setting(32, positive())
    input_width: int = setting(32, positive())
    color_mode: str = setting("grayscale", one_of('grayscale', 'rgb'))
    epochs: int = setting(10, positive())
    batch_size: int = setting(64, positive())
    holdout_percent: int = setting(20, between(1, 90))
    test_percent: int = setting(10, between(1, 90))
    learning_rate: float = setting(0.002, positive())
    seed: int = 7
    cache_url: str = ""
    base: str = setting("small_cnn", one_of("small_cnn", "mobilenet_v2", "efficientnet_b0",
                                            "resnet50"))
    weights: str = "none"
    fine_tune_epochs: int = setting(0, at_least(0, "0 or more"))
    unfreeze_layers: int = setting(20, at_least(0, "0 or more"))
    fine_tune_learning_rate: float = setting(0.0001, positive())
    warmup_epochs: float = setting(1.0, at_least(0, "0 (no warm-up) or more"))
    final_learning_rate_fraction: float = setting(0.1, between(0, 1))
    learning_rate_scaling: str = setting("linear", one_of('linear', 'none'))
    pixel_feed: str = setting("uint8", one_of('uint8', 'float32'))
    augment_flip: bool = False
    augment_crop: float = setting(0.0, _OFF_OR_FRACTION)
    augment_brightness: float = setting(0.0, _OFF_OR_FRACTION)
    augment_contrast: float = setting(0.0, _OFF_OR_FRACTION)
    class_weighting: str = setting("balanced", one_of('balanced', 'none'))
    early_stopping_patience: int = setting(0, at_least(0, "0 or more"))
    workers: int = setting(1, positive())


@dataclass(frozen=True)
class RunConfig:
    """How a run is driven and judged: objects are processed in chunks of `objects_per_chunk`,
    each committed to the output before the next starts (what `--resume` picks up after);
    progress is logged every `progress_interval_s` seconds; the run fails (exit code 3) when
    more than `max_failed_fraction` of the objects processed are dead-lettered. A run holds a
    lease on its (output, model, shard) that lives `lease_ttl_s` seconds past each renewal
    (every third of it): how long a run killed hard keeps the next one out (`runs.lease`)."""

    objects_per_chunk: int = setting(100_000, positive())
    progress_interval_s: float = setting(30.0, positive())
    max_failed_fraction: float = setting(0.05, between(0, 1))
    lease_ttl_s: float = setting(300.0, positive())


@dataclass(frozen=True)
class LinkConfig:
    """How the link job (`jobs/link.py`) connects images. Near duplicates: perceptual hashes
    (64 bits) within `near_duplicate_max_distance` bits, compared only when one of their
    `near_duplicate_bands` equal slices of bits (2, 4, 8 or 16) differs in at most
    `near_duplicate_band_radius` bits (none is missed while bands x (radius + 1) > the
    distance, which `load_config` requires). Similar images: each new image's `similar_k`
    nearest by the Euclidean distance of
    unit-length embeddings (0..2; centred on the model's embedding centre), within
    `similar_max_distance`, compared only when one of their `similar_bands` bands of
    `similar_band_bits` random-hyperplane bits (hyperplanes drawn with `seed`) differs in at
    most `similar_band_radius` bits (an unrelated image meets a new one with probability
    bands x (band values within the radius) / 2^band_bits)."""

    near_duplicate_max_distance: int = setting(7, between(0, 64, " bits"))
    near_duplicate_bands: int = setting(2, one_of(2, 4, 8, 16))
    near_duplicate_band_radius: int = setting(3, between(0, 3, " bits"))
    similar_k: int = setting(5, positive())
    similar_max_distance: float = setting(0.8, positive())
    similar_bands: int = setting(16, between(1, 64))
    similar_band_bits: int = setting(24, between(8, 32, " bits"))
    similar_band_radius: int = setting(1, between(0, 3, " bits"))
    seed: int = 7


@dataclass(frozen=True)
class MetricsConfig:
    """A run's figures beyond its report (`runs.metrics`): with `cloudwatch`, each committed
    chunk's and the whole run's figures are sent as CloudWatch metrics in `namespace` (1 to 255
    characters, not starting with `AWS/`), through the S3 settings' endpoint and keys (empty
    endpoint: AWS's own; moto's local server answers CloudWatch on its S3 endpoint) in `region`
    (empty: the boto3 session's region, AWS_DEFAULT_REGION)."""

    cloudwatch: bool = False
    namespace: str = setting("imagegraph", Check(
        "1 to 255 characters not starting with AWS/",
        lambda name: 0 < len(name) <= 255 and not name.startswith("AWS/")))
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


def load_config(path: str | None, overrides: dict[str, Any] | None = None) -> Config:
    """Read `path` (YAML; None means built-in defaults), apply dotted-key `overrides`, validate."""
    config = load_sections(Config, path, overrides, "config file")
    _check_together(config, COMMAND_LINE if overrides else path or "<defaults>")
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
