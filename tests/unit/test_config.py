import pytest

from imagegraph.config import Config, expand_environment, load_config, parse_override
from imagegraph.errors import JobError


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return str(path)


def test_environment_references_expand_with_defaults():
    env = {"SET": "value", "EMPTY": ""}
    assert expand_environment("${SET}|${UNSET:-fallback}|${EMPTY:-d}|${UNSET}", env) == \
        "value|fallback|d|"


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


@pytest.mark.parametrize("text, message", [
    ("graph:\n  batchsize: 3\n", "unknown key graph.batchsize"),
    ("grph:\n  batch_size: 3\n", "unknown key grph"),
    ("graph:\n  records_per_request: many\n", "graph.records_per_request must be int, got str 'many'"),
    ("graph:\n  records_per_request: 0\n", "graph.records_per_request must be greater than 0"),
    ("graph:\n  enabled: 1\n", "graph.enabled must be bool"),
    ("training:\n  color_mode: cmyk\n", "training.color_mode must be one of grayscale, rgb"),
    ("graph: [1, 2]\n", "graph must be a mapping"),
    ("graph:\n  records_per_request:\n", "graph.records_per_request has no value"),
    ("graph: {\n", "is not valid YAML"),
    ("s3:\n  retry_limit: 21\n", "s3.retry_limit must be between 0 and 20, got 21"),
    ("s3:\n  throttle_retry_limit: -1\n", "s3.throttle_retry_limit must be between 0 and 20"),
    ("s3:\n  sdk_max_retries: 2.5\n", "s3.sdk_max_retries must be int, got float 2.5"),
    ("s3:\n  throttle_retry_interval_s: 0\n",
     "s3.throttle_retry_interval_s must be greater than 0, got 0.0"),
    ("s3:\n  retry_interval: 1\n", "unknown key s3.retry_interval"),
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
