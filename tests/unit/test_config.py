import argparse

import pytest

from imagegraph.config import Config, GraphConfig, load_config
from imagegraph.emr.settings import load_settings
from imagegraph.errors import JobError
from imagegraph.sections import command_line_overrides, expand_environment, parse_override


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return str(path)


def test_environment_references_expand_with_defaults():
    env = {"SET": "value", "EMPTY": ""}
    assert expand_environment("${SET}|${UNSET:-fallback}|${EMPTY:-d}|${UNSET}", env) == \
        "value|fallback|d|"


UNSET_HINT = " (export the variable, or give it a default in the file: ${VAR:-default})"


@pytest.mark.parametrize("text, named", [
    ("graph:\n  endpoint: ${NEPTUNE_URL}\n", "graph.endpoint is ${NEPTUNE_URL}, which is not set"),
    ("graph:\n  endpoint: \"${NEPTUNE_URL}\"\n",
     "graph.endpoint is ${NEPTUNE_URL}, which is not set"),
    ("graph:\n  endpoint: wss://${NEPTUNE_HOST}:${NEPTUNE_PORT}/gremlin\n",
     "graph.endpoint is wss://${NEPTUNE_HOST}:${NEPTUNE_PORT}/gremlin, and NEPTUNE_HOST, "
     "NEPTUNE_PORT are not set"),
    ("graph:\n  endpoint: ws://${SET_HOST}:${NEPTUNE_PORT}/gremlin\n",
     "graph.endpoint is ws://${SET_HOST}:${NEPTUNE_PORT}/gremlin, and NEPTUNE_PORT is not set"),
    ("graph:\n  endpoint: ${NEPTUNE_URL}\n  region: ${NEPTUNE_REGION}\n"
     "s3:\n  endpoint: ${S3_URL:-}\n",
     "graph.endpoint is ${NEPTUNE_URL}, which is not set; "
     "graph.region is ${NEPTUNE_REGION}, which is not set"),
    ("spark:\n  conf:\n    spark.x: ${SPARK_X}\n  app_name: ${SET_HOST} # ${NEPTUNE_URL}\n",
     "spark.conf.spark.x is ${SPARK_X}, which is not set"),
    ("spark:\n  conf: {spark.x: ${SPARK_X}}  # ${IN_A_COMMENT}\n# ${IN_A_COMMENT}\n",
     "line 2 has conf: {spark.x: ${SPARK_X}}, and SPARK_X is not set"),
], ids=["bare", "quoted", "two in one value", "one of two", "two keys, a default skipped",
        "a mapping's entry, a comment skipped", "not YAML as written"])
def test_an_unset_variable_names_the_file_key_and_variable(tmp_path, monkeypatch, text, named):
    for name in ("NEPTUNE_URL", "NEPTUNE_HOST", "NEPTUNE_PORT", "NEPTUNE_REGION", "S3_URL",
                 "SPARK_X", "IN_A_COMMENT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SET_HOST", "graph")
    path = write(tmp_path, text)
    with pytest.raises(JobError) as error:
        load_config(path)
    assert str(error.value) == f"{path}: {named}{UNSET_HINT}"


def test_an_unset_variable_in_the_launcher_settings_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("IMAGEGRAPH_LOG_URI", raising=False)
    path = write(tmp_path, "cluster:\n  log_uri: ${IMAGEGRAPH_LOG_URI}\n")
    with pytest.raises(JobError) as error:
        load_settings(path)
    assert str(error.value) == (f"{path}: cluster.log_uri is ${{IMAGEGRAPH_LOG_URI}}, which is "
                                f"not set{UNSET_HINT}")


def test_file_values_then_overrides(tmp_path, monkeypatch):
    monkeypatch.setenv("GREMLIN_ENDPOINT", "ws://graph:8182/gremlin")
    path = write(tmp_path, "graph:\n  endpoint: ${GREMLIN_ENDPOINT}\n  records_per_request: 50\n")
    config = load_config(path, {"graph.records_per_request": 200, "inference.top_k": 5})
    assert config.graph.endpoint == "ws://graph:8182/gremlin"
    assert config.graph.records_per_request == 200
    assert config.inference.top_k == 5
    assert config.inference.batch_size == Config().inference.batch_size


def test_shipped_configs_load():
    config = load_config("conf/local.yaml")
    assert config.s3.path_style_access is True


def test_cloudwatch_metrics_are_off_locally_and_on_on_emr():
    local, emr = load_config("conf/local.yaml").metrics, load_config("conf/emr.yaml").metrics
    assert (local.cloudwatch, local.namespace, local.region) == (False, "imagegraph",
                                                                 "us-east-1")
    assert (emr.cloudwatch, emr.namespace, emr.region) == (True, "imagegraph", "")
    assert load_config(None).metrics.cloudwatch is False


@pytest.mark.parametrize("text, message", [
    ("graph:\n  batchsize: 3\n", "unknown key graph.batchsize"),
    ("grph:\n  batch_size: 3\n", "unknown key grph"),
    ("graph:\n  records_per_request: many\n",
     "graph.records_per_request must be int, got str 'many'"),
    ("graph:\n  records_per_request: 0\n", "graph.records_per_request must be greater than 0"),
    ("graph:\n  enabled: 1\n", "graph.enabled must be bool"),
    ("training:\n  color_mode: cmyk\n", "training.color_mode must be one of grayscale, rgb"),
    ("training:\n  base: vgg16\n", "training.base must be one of small_cnn, mobilenet_v2"),
    ("training:\n  pixel_feed: float16\n", "training.pixel_feed must be one of uint8, float32"),
    ("training:\n  augment_crop: 1.5\n", "training.augment_crop must be between 0 (off) and 1"),
    ("training:\n  augment_brightness: -0.1\n", "training.augment_brightness must be between"),
    ("training:\n  early_stopping_patience: -1\n", "early_stopping_patience must be 0 or more"),
    ("training:\n  workers: 0\n", "training.workers must be greater than 0"),
    ("graph: [1, 2]\n", "graph must be a mapping"),
    ("graph:\n  records_per_request:\n", "graph.records_per_request has no value"),
    ("graph: {\n", "is not valid YAML"),
    ("s3:\n  retry_limit: 21\n", "s3.retry_limit must be between 0 and 20, got 21"),
    ("s3:\n  throttle_retry_limit: -1\n", "s3.throttle_retry_limit must be between 0 and 20"),
    ("s3:\n  sdk_max_retries: 2.5\n", "s3.sdk_max_retries must be int, got float 2.5"),
    ("s3:\n  throttle_retry_interval_s: 0\n",
     "s3.throttle_retry_interval_s must be greater than 0, got 0.0"),
    ("s3:\n  retry_interval: 1\n", "unknown key s3.retry_interval"),
    ("metrics:\n  cloudwatch: yes please\n", "metrics.cloudwatch must be bool"),
    ("metrics:\n  namespace: \"\"\n", "metrics.namespace must be 1 to 255 characters not "
     "starting with AWS/, got ''"),
    ("metrics:\n  namespace: AWS/EMR\n", "metrics.namespace must be 1 to 255 characters"),
    (f"metrics:\n  namespace: {'n' * 256}\n", "metrics.namespace must be 1 to 255 characters"),
])
def test_invalid_values_name_file_and_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(JobError) as error:
        load_config(path)
    assert message in str(error.value)
    assert path in str(error.value)


def test_missing_file():
    with pytest.raises(JobError, match="config file /no/such.yaml does not exist"):
        load_config("/no/such.yaml")


def test_parse_override_reads_yaml_values():
    assert parse_override("graph.records_per_request=200") == ("graph.records_per_request", 200)
    assert parse_override("graph.enabled=false") == ("graph.enabled", False)
    assert parse_override("input.glob=*.jpg") == ("input.glob", "*.jpg")
    with pytest.raises(JobError, match="expected SECTION.KEY=VALUE"):
        parse_override("graph.records_per_request")


@pytest.mark.parametrize("word", ["on", "off"])
def test_iam_auth_on_and_off_as_the_readme_writes_them(tmp_path, word):
    assert load_config(None, dict([parse_override(f"graph.iam_auth={word}")])).graph.iam_auth \
        == word
    assert load_config(write(tmp_path, f"graph:\n  iam_auth: {word}\n")).graph.iam_auth == word


def _value(dotted: str, value):
    section, key = dotted.split(".")
    return getattr(getattr(load_config(None, {dotted: value}), section), key)


@pytest.mark.parametrize("dotted, accepted, refused, message", [
    ("inference.partitions", (0, 7), (-1,), "must be 0 (automatic) or more, got -1"),
    ("graph.max_concurrent_writers", (0,), (-1,), "must be 0 (automatic) or more, got -1"),
    ("graph.instance_vcpus", (1,), (0,), "must be greater than 0, got 0"),
    ("graph.max_upserts_per_s", (0, 0.5), (-1,), "must be 0 (automatic) or more, got -1.0"),
    ("s3.retry_limit", (0, 20), (-1, 21), "must be between 0 and 20, got {}"),
    ("s3.sdk_max_retries", (0, 20), (-1, 21), "must be between 0 and 20, got {}"),
    ("s3.throttle_retry_limit", (0, 20), (-1, 21), "must be between 0 and 20, got {}"),
    ("training.holdout_percent", (1, 80), (0, 91), "must be between 1 and 90, got {}"),
    ("training.test_percent", (1, 70), (0, 91), "must be between 1 and 90, got {}"),
    ("run.max_failed_fraction", (0, 1), (-0.01, 1.01), "must be between 0 and 1, got {}"),
    ("link.near_duplicate_max_distance", (0, 7), (-1, 65),
     "must be between 0 and 64 bits, got {}"),
    ("link.near_duplicate_band_radius", (3,), (-1, 4), "must be between 0 and 3 bits, got {}"),
    ("link.near_duplicate_bands", (4, 16), (3, 32), "must be one of 2, 4, 8, 16, got {}"),
    ("link.similar_bands", (1, 64), (0, 65), "must be between 1 and 64, got {}"),
    ("link.similar_band_bits", (8, 32), (7, 33), "must be between 8 and 32 bits, got {}"),
    ("inference.int8_min_agreement", (0, 1), (-0.01, 1.01), "must be between 0 and 1, got {}"),
    ("inference.int8_max_score_delta", (0, 1), (-0.01, 1.01), "must be between 0 and 1, got {}"),
    ("inference.int8_min_embedding_cosine", (-1, 1), (-1.01, 1.01),
     "must be between -1 and 1, got {}"),
    ("inference.int8_calibration_images", (1,), (0,), "must be greater than 0, got {}"),
    ("inference.min_score", (0, 0.5, 0.99), (-0.01, 1.0, 1.5),
     "must be between 0 (off) and 1, got {}"),
    ("inference.int8_check_images", (1,), (0,), "must be greater than 0, got {}"),
    ("inference.precision", ("float32", "int8"), ("fp16",),
     "must be one of float32, int8, got 'fp16'"),
    ("graph.max_attempts", (1,), (0, -2), "must be greater than 0, got {}"),
    ("s3.retry_interval_s", (0.001,), (0, -1), "must be greater than 0, got {}.0"),
    ("graph.upsert_style", ("merge", "coalesce"), ("Merge",),
     "must be one of merge, coalesce, got 'Merge'"),
    ("input.modified_after", ("", "2026-01-31T00:00:00Z"), ("yesterday",),
     "must be an ISO-8601 time such as 2026-01-31T00:00:00Z, got 'yesterday'"),
    ("input.modified_before", ("2026-01-31",), ("31/01/2026",),
     "must be an ISO-8601 time such as 2026-01-31T00:00:00Z, got '31/01/2026'"),
])
def test_each_range_accepts_its_bounds_and_refuses_past_them(dotted, accepted, refused,
                                                             message):
    for value in accepted:
        assert _value(dotted, value) == value
    for value in refused:
        with pytest.raises(JobError) as error:
            load_config(None, {dotted: value})
        assert str(error.value) == f"command line: {dotted} {message.format(value)}"


def test_values_are_converted_to_the_declared_type_or_refused_by_name():
    assert _value("input.glob", 5) == "5" and _value("input.glob", 2.5) == "2.5"
    assert type(_value("s3.retry_interval_s", 1)) is float
    assert _value("graph.iam_auth", True) == "on" and _value("graph.iam_auth", False) == "off"
    with pytest.raises(JobError) as error:
        load_config(None, {"graph.enabled": 1})
    assert str(error.value) == "command line: graph.enabled must be bool, got int 1"
    with pytest.raises(JobError) as error:
        load_config(None, {"graph.max_attempts": True})
    assert str(error.value) == "command line: graph.max_attempts must be int, got bool True"
    with pytest.raises(JobError) as error:
        load_config(None, {"input.glob": None})
    assert str(error.value) == "command line: input.glob has no value"


def test_override_and_section_errors_name_the_key(tmp_path):
    with pytest.raises(JobError) as error:
        load_config(None, {"graph": 3})
    assert str(error.value) == "override 'graph': expected SECTION.KEY"
    with pytest.raises(JobError) as error:
        load_config(None, {"run.lease_ttl_s.x": 3})
    assert str(error.value) == ("command line: unknown key run.lease_ttl_s.x "
                                "(did you mean run.lease_ttl_s?)")
    with pytest.raises(JobError) as error:
        load_config(None, {"run.zzz": 3})
    assert str(error.value).startswith("command line: unknown key run.zzz (known in "
                                       "this section: ")
    assert "lease_ttl_s, max_failed_fraction, " in str(error.value)
    path = write(tmp_path, "graph: 3\n")
    with pytest.raises(JobError) as error:
        load_config(path, {"graph.enabled": False})
    assert str(error.value) == f"{path}: graph must be a mapping"
    path = write(tmp_path, "- 1\n")
    with pytest.raises(JobError) as error:
        load_config(path)
    assert str(error.value) == f"config file {path}: expected a mapping of sections at the top"


def test_parse_override_splits_at_the_first_equals_sign_and_keeps_an_empty_value():
    assert parse_override("input.glob=a=b") == ("input.glob", "a=b")
    assert parse_override(" input.glob =") == ("input.glob", "")


def test_a_set_variable_wins_over_its_default():
    assert expand_environment("${SET:-default}", {"SET": "value"}) == "value"


def test_non_ascii_config_is_read_as_utf_8(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes("input:\n  glob: 'фото-*.jpg'\n".encode("utf-8"))
    assert load_config(str(path)).input.glob == "фото-*.jpg"


def test_times_are_read_as_utc():
    from datetime import datetime, timezone

    from imagegraph.sections import parse_time
    expected = datetime(2026, 1, 31, tzinfo=timezone.utc)
    assert parse_time("2026-01-31T00:00:00Z") == expected
    assert parse_time("2026-01-31T02:00:00+02:00") == expected
    assert parse_time("2026-01-31") == expected
    assert parse_time("2026-01-31T02:00:00+02:00").tzinfo is timezone.utc


def test_a_time_without_zone_is_utc_whatever_the_machines_zone(monkeypatch):
    import time
    from datetime import datetime, timezone

    from imagegraph.sections import parse_time
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        assert parse_time("2026-01-31T00:00:00") == datetime(2026, 1, 31, tzinfo=timezone.utc)
    finally:
        monkeypatch.undo()
        time.tzset()


def test_writers_default_to_twice_the_neptune_instances_vcpus():
    """Neptune executes twice its vCPUs in queries at once: 0 sizes the writers to that."""
    assert GraphConfig(instance_vcpus=16).writers == 32
    assert GraphConfig(instance_vcpus=16, max_concurrent_writers=5).writers == 5
    assert GraphConfig().writers == 8



def test_the_default_near_duplicate_bands_find_every_pair_within_the_distance():
    link = load_config(None).link
    assert link.near_duplicate_bands * (link.near_duplicate_band_radius + 1) \
        > link.near_duplicate_max_distance


@pytest.mark.parametrize("overrides, message", [
    ({"link.near_duplicate_max_distance": 8},
     "link.near_duplicate_max_distance 8 exceeds the 7 bits that 2 bands within 3 bits"),
    ({"link.near_duplicate_max_distance": 16, "link.near_duplicate_bands": 4},
     "link.near_duplicate_max_distance 16 exceeds the 15 bits that 4 bands within 3 bits"),
    ({"link.near_duplicate_band_radius": 0, "link.near_duplicate_bands": 4},
     "link.near_duplicate_max_distance 7 exceeds the 3 bits that 4 bands within 0 bits"),
    ({"training.holdout_percent": 85, "training.test_percent": 6},
     "training.holdout_percent + training.test_percent must be at most 90, got 85 + 6"),
])
def test_settings_valid_alone_are_refused_together(overrides, message):
    with pytest.raises(JobError) as error:
        load_config(None, overrides)
    assert str(error.value).startswith(f"command line: {message}")


@pytest.mark.parametrize("load, text, lines", [
    (load_settings,
     "cluster:\n  core_instance_count: 0\n  releaselabel: emr-7.12.0\n  idle_timeout_s: 5\n"
     "steps:\n  concurrency: 0\n",
     ["{path}: unknown key cluster.releaselabel (did you mean cluster.release_label?)",
      "{path}: cluster.core_instance_count must be at least 1, got 0",
      "{path}: cluster.idle_timeout_s must be between 60 and 604800, got 5",
      "{path}: steps.concurrency must be between 1 and 256, got 0"]),
    (load_config,
     "graph:\n  records_per_request: 0\n  enabled: maybe\ninference:\n  top_k:\n",
     ["{path}: graph.records_per_request must be greater than 0, got 0",
      "{path}: graph.enabled must be bool, got str 'maybe'",
      "{path}: inference.top_k has no value"]),
], ids=["launcher settings", "job configuration"])
def test_every_wrong_key_of_a_file_is_named_in_one_error(tmp_path, load, text, lines):
    path = write(tmp_path, text)
    with pytest.raises(JobError) as error:
        load(path)
    assert str(error.value).splitlines() == [line.format(path=path) for line in lines]


def test_command_line_overrides_apply_set_in_order_then_the_flags_given():
    """A later --set of a key wins over an earlier one; a dedicated flag wins over both; a flag
    not given (None) overrides nothing."""
    args = argparse.Namespace(
        overrides=["inference.top_k=2", "inference.top_k=4", "graph.load=bulk"],
        top_k=5, graph_load=None)
    flags = {"top_k": "inference.top_k", "graph_load": "graph.load", "absent": "run.x"}
    assert command_line_overrides(args, flags) == {"inference.top_k": 5, "graph.load": "bulk"}
