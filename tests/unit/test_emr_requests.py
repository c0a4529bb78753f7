"""The launcher's requests, built without AWS: settings, the package's upload list, the
run_job_flow, add_job_flow_steps and start_job_run request shapes, and the cluster
configuration's agreement with the rest of the repository."""
import json
import re
from pathlib import Path

import pytest

from imagegraph.config import load_config
from imagegraph.emr import package
from imagegraph.emr.requests import (build_plan, dumps, run_job_flow_request,
                                     serverless_submit_parameters, spark_defaults,
                                     start_job_run_requests)
from imagegraph.emr.settings import load_settings
from imagegraph.emr.templates import parse_job_args, split_spark_submit
from imagegraph.errors import JobError

ROOT = Path(__file__).resolve().parents[2]
CODE = "s3://code-bucket/imagegraph/0.1.0"
INFER = {"input": "s3://images/incoming/", "model": "s3://m/v1", "output": "s3://out/"}
ROLE = "arn:aws:iam::123456789012:role/imagegraph-job"


def settings(tmp_path, **overrides):
    return load_settings(str(ROOT / "emr" / "launcher.yaml"), {
        "package.code_uri": CODE + "/", "package.dir": str(tmp_path / "package"),
        "package.job_config": str(ROOT / "conf" / "emr.yaml"),
        "cluster.configurations": str(ROOT / "emr" / "configurations.json"),
        "steps.templates": str(ROOT / "emr" / "steps"),
        "cluster.log_uri": "s3://logs/emr/", "steps.gremlin_endpoint": "wss://n:8182/gremlin",
        "serverless.execution_role_arn": ROLE, "serverless.log_uri": "s3://logs/serverless/",
        **overrides})


def plan(tmp_path, target="cluster", resource_id="", **overrides):
    return build_plan(settings(tmp_path, **overrides), target, "infer", [INFER], [],
                      "eu-west-1", resource_id)


def configurations():
    return json.loads((ROOT / "emr" / "configurations.json").read_text())


def test_shipped_settings_load_with_empty_environment_references(monkeypatch):
    for name in ("IMAGEGRAPH_CODE_URI", "IMAGEGRAPH_LOG_URI", "GREMLIN_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    loaded = load_settings(str(ROOT / "emr" / "launcher.yaml"))
    assert loaded.package.code_uri == "" and loaded.cluster.release_label.startswith("emr-7.")
    monkeypatch.setenv("IMAGEGRAPH_CODE_URI", CODE)
    assert load_settings(str(ROOT / "emr" / "launcher.yaml")).package.code_uri == CODE


@pytest.mark.parametrize("overrides, message", [
    ({"cluster.core_instance_cont": 3}, "unknown key cluster.core_instance_cont"),
    ({"cluster.core_instance_count": "two"}, "cluster.core_instance_count must be int"),
    ({"cluster.core_instance_count": 0}, "cluster.core_instance_count must be at least 1"),
    ({"package.python_env": "conda"}, "package.python_env must be one of archive, bootstrap"),
    ({"steps.spark_submit_options": ["--num-executors", 8]}, "must be a list of strings"),
])
def test_bad_settings_stop_with_the_key_named(overrides, message):
    with pytest.raises(JobError, match=message):
        load_settings(None, overrides)


def test_uploads_keep_the_package_layout_under_the_code_prefix(tmp_path, emr_package):
    uploads = plan(tmp_path).uploads
    keys = {u.key: u for u in uploads}
    prefix = "imagegraph/0.1.0/"
    assert sorted(keys) == sorted(prefix + name for name in [
        "requirements.txt", "bootstrap.sh", "jobs/infer.py", "jobs/train.py", "jobs/link.py",
        "imagegraph-env.tar.gz", "imagegraph-0.1.0-py3-none-any.whl", "conf/emr.yaml"])
    assert {u.bucket for u in uploads} == {"code-bucket"}
    archive = keys[prefix + "imagegraph-env.tar.gz"]
    assert archive.sha256 == package.file_sha256(archive.path)
    assert archive.request()["ExtraArgs"] == {"Metadata": {"sha256": archive.sha256}}


def test_bootstrap_python_env_uploads_no_archive(tmp_path, emr_package):
    keys = [u.key for u in plan(tmp_path, **{"package.python_env": "bootstrap"}).uploads]
    assert not any(key.endswith(package.ENV_ARCHIVE) for key in keys)


@pytest.mark.parametrize("remove, message", [
    ("imagegraph-env.tar.gz", r"package/imagegraph-env.tar.gz is missing; run `make package`"),
    ("imagegraph-0.1.0-py3-none-any.whl", r"exactly one imagegraph-\*-py3-none-any.whl"),
])
def test_an_incomplete_package_is_named(tmp_path, emr_package, remove, message):
    (emr_package / remove).unlink()
    with pytest.raises(JobError, match=message):
        plan(tmp_path)


@pytest.mark.parametrize("uri", ["", "my-bucket/prefix", "s3:///prefix", "s3a://b/p"])
def test_code_uri_must_be_an_s3_uri(tmp_path, emr_package, uri):
    with pytest.raises(JobError, match="code_uri"):
        plan(tmp_path, **{"package.code_uri": uri})


def test_run_job_flow_request(tmp_path, emr_package):
    request = plan(tmp_path, **{"cluster.subnet_id": "subnet-1",
                                "cluster.additional_security_groups": ["sg-neptune"]}).requests[0]
    assert request["ReleaseLabel"] == "emr-7.12.0"
    assert request["LogUri"] == "s3://logs/emr/"
    assert request["Applications"] == [{"Name": "Hadoop"}, {"Name": "Spark"}]
    assert request["Configurations"] == configurations()
    instances = request["Instances"]
    assert [(g["InstanceRole"], g["InstanceType"], g["InstanceCount"])
            for g in instances["InstanceGroups"]] == [("MASTER", "m6i.xlarge", 1),
                                                      ("CORE", "m6i.2xlarge", 2)]
    assert instances["Ec2SubnetId"] == "subnet-1"
    assert instances["AdditionalSlaveSecurityGroups"] == ["sg-neptune"]
    assert instances["AdditionalMasterSecurityGroups"] == ["sg-neptune"]
    assert instances["KeepJobFlowAliveWhenNoSteps"] is False
    assert "AutoTerminationPolicy" not in request
    assert request["BootstrapActions"] == [{"Name": "imagegraph python", "ScriptBootstrapAction": {
        "Path": f"{CODE}/bootstrap.sh", "Args": []}}]
    assert (request["JobFlowRole"], request["ServiceRole"]) == \
        ("EMR_EC2_DefaultRole", "EMR_DefaultRole")
    assert [s["Name"] for s in request["Steps"]] == ["imagegraph infer"]
    assert {"Key": "project", "Value": "imagegraph"} in request["Tags"]


def test_bootstrap_python_env_installs_the_wheel_on_every_node(tmp_path, emr_package):
    request = plan(tmp_path, **{"package.python_env": "bootstrap"}).requests[0]
    assert request["BootstrapActions"][0]["ScriptBootstrapAction"]["Args"] == \
        [CODE, "imagegraph-0.1.0-py3-none-any.whl"]


def test_keep_alive_cluster_terminates_when_idle(tmp_path, emr_package):
    request = plan(tmp_path, **{"cluster.keep_alive": True,
                                "cluster.idle_timeout_s": 900}).requests[0]
    assert request["Instances"]["KeepJobFlowAliveWhenNoSteps"] is True
    assert request["AutoTerminationPolicy"] == {"IdleTimeout": 900}


def test_a_new_cluster_needs_a_log_uri(tmp_path, emr_package):
    with pytest.raises(JobError, match="cluster.log_uri is empty"):
        plan(tmp_path, **{"cluster.log_uri": ""})


def test_steps_on_a_running_cluster(tmp_path, emr_package):
    built = plan(tmp_path, target="steps", resource_id="j-ABC")
    assert built.operation == "add_job_flow_steps"
    assert built.requests[0]["JobFlowId"] == "j-ABC"
    assert [s["Name"] for s in built.requests[0]["Steps"]] == ["imagegraph infer"]


def test_start_job_run_request(tmp_path, emr_package):
    built = plan(tmp_path, target="serverless", resource_id="00fabc")
    assert built.operation == "start_job_run"
    [request] = built.requests
    assert request["applicationId"] == "00fabc" and request["executionRoleArn"] == ROLE
    driver = request["jobDriver"]["sparkSubmit"]
    assert driver["entryPoint"] == f"{CODE}/jobs/infer.py"
    parsed = parse_job_args(driver["entryPoint"], driver["entryPointArguments"])
    assert (parsed.input, parsed.model, parsed.output) == \
        (INFER["input"], INFER["model"], INFER["output"])
    assert driver["sparkSubmitParameters"].split() == [
        "--conf", "spark.yarn.maxAppAttempts=1",
        "--conf", f"spark.archives={CODE}/imagegraph-env.tar.gz#environment",
        "--conf", "spark.emr-serverless.driverEnv.PYSPARK_DRIVER_PYTHON=./environment/bin/python",
        "--conf", "spark.emr-serverless.driverEnv.PYSPARK_PYTHON=./environment/bin/python",
        "--conf", "spark.executorEnv.PYSPARK_PYTHON=./environment/bin/python",
        "--conf", f"spark.files={CODE}/conf/emr.yaml"]
    overrides = request["configurationOverrides"]
    assert overrides["applicationConfiguration"] == [
        {"classification": "spark-defaults", "properties": spark_defaults(configurations())}]
    assert overrides["monitoringConfiguration"] == {
        "s3MonitoringConfiguration": {"logUri": "s3://logs/serverless/"}}


JOBS = {"train": [{"input": "s3://images/train/", "output": "s3://m/v1"}],
        "infer": [INFER],
        "backfill": [{"source_kind": "manifest", "source": "s3://m/list.csv", "shard": shard,
                      "shards": 2, "model": "s3://m/v1", "output": "s3://out/"}
                     for shard in range(2)]}


def submitted_conf(options: list[str], key: str) -> str | None:
    """The value spark-submit gives `key` from `options` (its last `--conf key=...`)."""
    values = [options[index + 1].split("=", 1)[1] for index, option in enumerate(options)
              if option == "--conf" and options[index + 1].startswith(key + "=")]
    return values[-1] if values else None


@pytest.mark.parametrize("python_env", ["archive", "bootstrap"])
@pytest.mark.parametrize("job", sorted(JOBS))
def test_yarn_never_starts_a_second_attempt_of_a_driver(tmp_path, emr_package, job, python_env):
    """Cluster mode: YARN would rerun a driver that failed or was lost, as a new run of the
    whole job. Every step of every launch says once, and so does a new cluster's
    spark-defaults; EMR Serverless's retry policy says once."""
    def build(target, resource_id=""):
        return build_plan(settings(tmp_path, **{"package.python_env": python_env}), target,
                          job, JOBS[job], [], "eu-west-1", resource_id)

    cluster = build("cluster").requests[0]
    running = build("steps", "j-ABC").requests[0]
    steps = cluster["Steps"] + running["Steps"]
    assert len(steps) == 2 * len(JOBS[job])
    for step in steps:
        options, _, _ = split_spark_submit(step["HadoopJarStep"]["Args"])
        assert options[:2] == ["--deploy-mode", "cluster"]
        assert submitted_conf(options, "spark.yarn.maxAppAttempts") == "1"
    assert spark_defaults(cluster["Configurations"])["spark.yarn.maxAppAttempts"] == "1"
    if python_env == "archive":  # EMR Serverless runs only the packed environment
        for request in build("serverless", "00fabc").requests:
            assert request["retryPolicy"] == {"maxAttempts": 1}


def test_serverless_needs_the_archive_and_a_role(tmp_path, emr_package):
    with pytest.raises(JobError, match="EMR Serverless has no bootstrap actions"):
        plan(tmp_path, target="serverless", **{"package.python_env": "bootstrap"})
    with pytest.raises(JobError, match="serverless.execution_role_arn is empty"):
        plan(tmp_path, target="serverless", **{"serverless.execution_role_arn": ""})


def test_spark_submit_options_become_serverless_properties():
    assert serverless_submit_parameters(
        ["--deploy-mode", "cluster", "--num-executors", "8", "--executor-memory=6g",
         "--conf", "spark.x=1"]) == \
        "--conf spark.executor.instances=8 --conf spark.executor.memory=6g --conf spark.x=1"
    with pytest.raises(JobError, match="--queue has no EMR Serverless equivalent"):
        serverless_submit_parameters(["--queue", "default"])


def test_run_job_flow_request_is_what_the_cluster_settings_say(tmp_path, emr_package):
    loaded = settings(tmp_path, **{"cluster.core_instance_count": 5, "cluster.key_name": "ops"})
    request = run_job_flow_request(loaded, [], configurations(), "w.whl")
    assert request["Instances"]["InstanceGroups"][1]["InstanceCount"] == 5
    assert request["Instances"]["Ec2KeyName"] == "ops"
    assert "Ec2SubnetId" not in request["Instances"]


def test_serverless_with_no_log_uri_keeps_no_logs(tmp_path, emr_package):
    [request] = start_job_run_requests(settings(tmp_path, **{"serverless.log_uri": ""}),
                                       "app", [plan(tmp_path).requests[0]["Steps"][0]],
                                       configurations())
    assert "monitoringConfiguration" not in request["configurationOverrides"]


def test_dry_run_json_is_json_with_plain_lists_and_mappings_packed():
    value = {"a": [{"Args": ["spark-submit"] + [f"--option-{i}" for i in range(20)]}],
             "apps": [{"Name": "Hadoop"}], "long": {"k": "v" * 120}, "empty": [], "none": {}}
    text = dumps(value)
    assert json.loads(text) == value
    assert max(len(line) for line in text.splitlines() if "vvv" not in line) <= 100
    assert '"spark-submit", "--option-0",' in text
    assert '{"Name": "Hadoop"}' in text
    assert '"long": {\n' in text


# The cluster configuration, the launcher's settings, conf/emr.yaml and the bootstrap action
# must agree with each other; nothing else holds them together.

def test_node_python_is_the_same_everywhere():
    node_python = load_settings(str(ROOT / "emr" / "launcher.yaml")).package.node_python
    [spark_env] = [c for c in configurations() if c["Classification"] == "spark-env"]
    assert spark_env["Configurations"][0]["Properties"]["PYSPARK_PYTHON"] == node_python
    bootstrap = (ROOT / "emr" / "bootstrap.sh").read_text()
    assert re.search(r"^python=(\S+)$", bootstrap, re.M).group(1) == node_python
    assert f"NODE_PYTHON ?= {node_python}" in (ROOT / "Makefile").read_text()


def test_spark_defaults_fit_the_job():
    defaults = spark_defaults(configurations())
    emr_conf = load_config(str(ROOT / "conf" / "emr.yaml"))
    assert int(defaults["spark.sql.execution.arrow.maxRecordsPerBatch"]) == \
        emr_conf.inference.arrow_batch_size
    assert defaults["spark.python.worker.reuse"] == "true"
    assert int(defaults["spark.executor.cores"]) % int(defaults["spark.task.cpus"]) == 0
    assert "spark.executor.pyspark.memory" not in defaults
