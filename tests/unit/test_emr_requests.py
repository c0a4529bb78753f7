"""The launcher's requests, built without AWS: settings, the package's upload list, the
run_job_flow, add_job_flow_steps and start_job_run request shapes, and the cluster
configuration's agreement with the rest of the repository."""
import json
import re
from pathlib import Path

import pytest

from imagegraph.config import load_config
from imagegraph.emr import package, sizing
from imagegraph.emr.requests import (
    MANAGED_POLICY_TAG,
    build_plan,
    dumps,
    run_job_flow_request,
    serverless_application_problem,
    serverless_submit_parameters,
    spark_defaults,
    start_job_run_requests,
    with_config_inline,
)
from imagegraph.emr.settings import load_settings
from imagegraph.emr.sizing import graviton_types
from imagegraph.emr.templates import parse_job_args, split_spark_submit
from imagegraph.errors import JobError
from imagegraph.sections import parse_override

ROOT = Path(__file__).resolve().parents[2]
CODE = "s3://code-bucket/imagegraph/0.1.0"
INFER = {"input": "s3://images/incoming/", "model": "s3://m/v1", "output": "s3://out/"}
ROLE = "arn:aws:iam::123456789012:role/imagegraph-job"
OS_RELEASE = "2023.9.20251117.1"
# conf/log4j2.properties, as the spark-log4j2 classification renders it
LOG4J2 = {"rootLogger.level": "warn", "rootLogger.appenderRef.stderr.ref": "console",
          "appender.console.type": "Console", "appender.console.name": "console",
          "appender.console.target": "SYSTEM_ERR", "appender.console.layout.type": "PatternLayout",
          "appender.console.layout.pattern": "%d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n",
          "logger.parquet.name": "org.apache.parquet", "logger.parquet.level": "error",
          "logger.hadoopmetrics.name": "org.apache.hadoop.metrics2",
          "logger.hadoopmetrics.level": "error",
          "logger.nativecode.name": "org.apache.hadoop.util.NativeCodeLoader",
          "logger.nativecode.level": "error"}


def settings(tmp_path, **overrides):
    return load_settings(str(ROOT / "emr" / "launcher.yaml"), {
        "package.code_uri": CODE + "/", "package.dir": str(tmp_path / "package"),
        "package.job_config": str(ROOT / "conf" / "emr.yaml"),
        "cluster.configurations": str(ROOT / "emr" / "configurations.json"),
        "cluster.log4j2": str(ROOT / "conf" / "log4j2.properties"),
        "steps.templates": str(ROOT / "emr" / "steps"),
        "cluster.log_uri": "s3://logs/emr/", "steps.gremlin_endpoint": "wss://n:8182/gremlin",
        "cluster.os_release_label": OS_RELEASE,
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
    ({"package.python_env": "conda"},
     "package.python_env must be one of archive, node_archive, bootstrap"),
    ({"steps.spark_submit_options": ["--num-executors", 8]}, "must be a list of strings"),
    ({"steps.concurrency": 0}, "steps.concurrency must be between 1 and 256, got 0"),
    ({"cluster.task_spot_count": -1}, "cluster.task_spot_count must be at least 0"),
    ({"cluster.core_instance_types": ["m6i.2xlarge", 2]}, "core_instance_types must be a list"),
])
def test_bad_settings_stop_with_the_key_named(overrides, message):
    with pytest.raises(JobError, match=message):
        load_settings(None, overrides)


def test_uploads_keep_the_package_layout_under_the_code_prefix(tmp_path, emr_package):
    uploads = plan(tmp_path).uploads
    keys = {u.key: u for u in uploads}
    prefix = "imagegraph/0.1.0/"
    assert sorted(keys) == sorted(prefix + name for name in [
        "requirements.txt", "constraints.txt", "bootstrap.sh", "jobs/infer.py", "jobs/train.py",
        "jobs/link.py", "imagegraph-env.tar.gz", "imagegraph-0.1.0-py3-none-any.whl",
        "conf/emr.yaml"])
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
    [defaults] = configurations()
    events = "s3://logs/emr/spark-events/"
    assert request["Configurations"] == [
        {**defaults, "Properties": {**defaults["Properties"], "spark.eventLog.enabled": "true",
                                    "spark.eventLog.dir": events,
                                    "spark.history.fs.logDirectory": events}},
        {"Classification": "spark-log4j2", "Properties": LOG4J2},
        {"Classification": "spark-env", "Properties": {}, "Configurations": [{
            "Classification": "export",
            "Properties": {"PYSPARK_PYTHON": "/usr/bin/python3.11"}}]}]
    assert request["OSReleaseLabel"] == OS_RELEASE
    assert "EbsRootVolumeSize" not in request and "ManagedScalingPolicy" not in request
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
        "Path": f"{CODE}/bootstrap.sh", "Args": ["/usr/bin/python3.11"]}}]
    # what `aws emr create-default-roles` creates; the tag below serves EMR_DefaultRole_V2
    assert (request["JobFlowRole"], request["ServiceRole"]) == \
        ("EMR_EC2_DefaultRole", "EMR_DefaultRole")
    assert [s["Name"] for s in request["Steps"]] == ["imagegraph infer"]
    assert request["Tags"] == [{"Key": "project", "Value": "imagegraph"},
                               {"Key": "for-use-with-amazon-emr-managed-policies",
                                "Value": "true"}]
    assert request["StepConcurrencyLevel"] == 1


def test_bootstrap_python_env_installs_the_wheel_on_every_node(tmp_path, emr_package):
    request = plan(tmp_path, **{"package.python_env": "bootstrap"}).requests[0]
    assert request["BootstrapActions"][0]["ScriptBootstrapAction"]["Args"] == \
        ["/usr/bin/python3.11", "install", CODE, "imagegraph-0.1.0-py3-none-any.whl"]
    assert not any(u.key.endswith(package.ENV_ARCHIVE)
                   for u in plan(tmp_path, **{"package.python_env": "bootstrap"}).uploads)


def test_keep_alive_cluster_terminates_when_idle(tmp_path, emr_package):
    request = plan(tmp_path, **{"cluster.keep_alive": True,
                                "cluster.idle_timeout_s": 900}).requests[0]
    assert request["Instances"]["KeepJobFlowAliveWhenNoSteps"] is True
    assert request["AutoTerminationPolicy"] == {"IdleTimeout": 900}


def test_a_new_cluster_needs_a_log_uri(tmp_path, emr_package):
    with pytest.raises(JobError, match="\n  cluster.log_uri: empty: s3://bucket/prefix/ that"):
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
        "--conf", f"spark.files={CODE}/conf/emr.yaml",
        "--conf", "spark.driver.memory=2048m", "--conf", "spark.driver.memoryOverhead=6144m",
        "--conf", "spark.executor.cores=4", "--conf", "spark.executor.memory=5120m",
        "--conf", "spark.executor.memoryOverhead=4096m"]
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
    steps = cluster["Steps"]
    if python_env == "archive":  # a running cluster never ran the bootstrap action
        steps += build("steps", "j-ABC").requests[0]["Steps"]
    assert len(steps) == (2 if python_env == "archive" else 1) * len(JOBS[job])
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
    with pytest.raises(JobError, match="\n  serverless.execution_role_arn: empty: the role"):
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

def test_node_python_is_named_only_in_the_settings(tmp_path, emr_package, env_archive):
    """bootstrap.sh takes it as an argument, the Makefile and configurations.json do not name
    it; the request carries the settings' value to spark-env and the bootstrap action."""
    default = load_settings(str(ROOT / "emr" / "launcher.yaml")).package.node_python
    assert default == "/usr/bin/python3.11"
    for name in ("emr/bootstrap.sh", "Makefile", "emr/configurations.json"):
        assert "python3.11" not in (ROOT / name).read_text(), name
    other = "/opt/python/bin/python3.11"
    (emr_package / package.ENV_ARCHIVE).unlink()
    env_archive(emr_package / package.ENV_ARCHIVE, other)
    request = plan(tmp_path, **{"package.node_python": other}).requests[0]
    [spark_env] = [c for c in request["Configurations"] if c["Classification"] == "spark-env"]
    assert spark_env["Configurations"][-1]["Properties"] == {"PYSPARK_PYTHON": other}
    assert request["BootstrapActions"][0]["ScriptBootstrapAction"]["Args"] == [other]


def test_the_nodes_python_joins_the_files_own_spark_env_exports(tmp_path, emr_package):
    own = configurations() + [{"Classification": "spark-env", "Properties": {},
                               "Configurations": [{"Classification": "export", "Properties": {
                                   "TF_CPP_MIN_LOG_LEVEL": "2"}}]}]
    path = tmp_path / "configurations.json"
    path.write_text(json.dumps(own))
    request = plan(tmp_path, **{"cluster.configurations": str(path)}).requests[0]
    [spark_env] = [c for c in request["Configurations"] if c["Classification"] == "spark-env"]
    assert spark_env["Configurations"] == [{"Classification": "export", "Properties": {
        "TF_CPP_MIN_LOG_LEVEL": "2", "PYSPARK_PYTHON": "/usr/bin/python3.11"}}]


def test_a_configurations_file_naming_the_python_is_refused(tmp_path, emr_package):
    named = configurations() + [{"Classification": "spark-env", "Properties": {},
                                 "Configurations": [{"Classification": "export", "Properties": {
                                     "PYSPARK_PYTHON": "/usr/bin/python3"}}]}]
    path = tmp_path / "configurations.json"
    path.write_text(json.dumps(named))
    with pytest.raises(JobError, match="set PYSPARK_PYTHON: the nodes' Python is "
                                       "package.node_python"):
        plan(tmp_path, **{"cluster.configurations": str(path)})


@pytest.mark.parametrize("target, resource_id", [("cluster", ""), ("steps", "j-ABC"),
                                                 ("serverless", "00fabc")])
def test_an_archive_linking_elsewhere_is_refused_before_upload(tmp_path, emr_package, env_archive,
                                                               target, resource_id):
    (emr_package / package.ENV_ARCHIVE).unlink()
    env_archive(emr_package / package.ENV_ARCHIVE, "/usr/local/bin/python3.11")
    with pytest.raises(JobError, match=r"imagegraph-env.tar.gz's bin/python links to "
                                       r"/usr/local/bin/python3.11, not package.node_python "
                                       r"/usr/bin/python3.11"):
        plan(tmp_path, target, resource_id)
    (emr_package / package.ENV_ARCHIVE).write_bytes(b"not a tar.gz")
    with pytest.raises(JobError, match="is not a readable tar.gz"):
        plan(tmp_path, target, resource_id)


def test_the_archives_python_is_read_once_per_content(tmp_path, emr_package, env_archive):
    """Reading bin/python means reading through 500 MiB of tar.gz: the answer is kept beside
    the archive under its SHA-256, and a different archive is read again."""
    plan(tmp_path)
    record = emr_package / package.ENV_ARCHIVE_PYTHON
    kept = json.loads(record.read_text())
    assert kept == {"sha256": package.file_sha256(emr_package / package.ENV_ARCHIVE),
                    "python": "/usr/bin/python3.11"}
    record.write_text(json.dumps({**kept, "python": "/seen/before/python3.11"}))
    with pytest.raises(JobError, match="links to /seen/before/python3.11"):
        plan(tmp_path)
    env_archive(emr_package / package.ENV_ARCHIVE, "/usr/bin/python3.11")  # new content
    assert plan(tmp_path).uploads
    assert json.loads(record.read_text())["python"] == "/usr/bin/python3.11"


def test_steps_on_a_running_cluster_carry_the_jobs_spark_defaults(tmp_path, emr_package):
    """A running cluster has its own spark-defaults (no memoryOverhead for TensorFlow, no
    task.cpus): every step passes the job's as --conf, and a new cluster gets them as its
    configuration instead."""
    defaults = spark_defaults(configurations())
    [step] = plan(tmp_path, "steps", "j-ABC").requests[0]["Steps"]
    options, _, _ = split_spark_submit(step["HadoopJarStep"]["Args"])
    for key, value in defaults.items():
        assert submitted_conf(options, key) == value, key
    [step] = plan(tmp_path).requests[0]["Steps"]
    options, _, _ = split_spark_submit(step["HadoopJarStep"]["Args"])
    assert submitted_conf(options, "spark.task.cpus") is None


def test_steps_options_given_in_the_settings_come_after_the_tuning(tmp_path, emr_package):
    [step] = plan(tmp_path, "steps", "j-ABC", **{
        "steps.spark_submit_options": ["--conf", "spark.executor.memory=7g"]}).requests[0]["Steps"]
    options, _, _ = split_spark_submit(step["HadoopJarStep"]["Args"])
    assert submitted_conf(options, "spark.executor.memory") == "7g"


@pytest.mark.parametrize("python_env", ["bootstrap", "node_archive"])
def test_a_running_cluster_never_ran_the_bootstrap_action(tmp_path, emr_package, python_env):
    with pytest.raises(JobError, match=f"--cluster-id with package.python_env={python_env}: "
                                       "that cluster never ran this launcher's bootstrap"):
        plan(tmp_path, "steps", "j-ABC", **{"package.python_env": python_env})


def test_node_archive_is_unpacked_once_per_node_and_used_in_place(tmp_path, emr_package):
    built = plan(tmp_path, **{"package.python_env": "node_archive"})
    request = built.requests[0]
    assert request["BootstrapActions"][0]["ScriptBootstrapAction"]["Args"] == [
        "/usr/bin/python3.11", "unpack", f"{CODE}/imagegraph-env.tar.gz",
        "/mnt/imagegraph/environment"]
    [step] = request["Steps"]
    options, _, _ = split_spark_submit(step["HadoopJarStep"]["Args"])
    assert "--archives" not in options
    python = "/mnt/imagegraph/environment/bin/python"
    assert submitted_conf(options, "spark.yarn.appMasterEnv.PYSPARK_PYTHON") == python
    assert submitted_conf(options, "spark.executorEnv.PYSPARK_PYTHON") == python
    assert any(u.key.endswith(package.ENV_ARCHIVE) for u in built.uploads)
    assert built.to_json()["python"].startswith(f"{python}: imagegraph-env.tar.gz unpacked "
                                                "once per node")
    with pytest.raises(JobError, match="EMR Serverless has no bootstrap actions"):
        plan(tmp_path, "serverless", "00fabc", **{"package.python_env": "node_archive"})


def test_more_steps_than_emr_takes_at_once_are_refused(tmp_path, emr_package):
    shards = [{"source_kind": "manifest", "source": "s3://m/list.csv", "shard": i,
               "shards": 257, "model": "s3://m/v1", "output": "s3://out/"} for i in range(257)]
    for target, resource_id in (("cluster", ""), ("steps", "j-ABC")):
        with pytest.raises(JobError, match=r"^257 steps are more than the 256 a cluster takes "
                                           r"at once \(PENDING and RUNNING\)"):
            build_plan(settings(tmp_path), target, "backfill", shards, [], "eu-west-1",
                       resource_id)
    assert len(build_plan(settings(tmp_path), "cluster", "backfill", shards[:256], [],
                          "eu-west-1").requests[0]["Steps"]) == 256
    assert len(build_plan(settings(tmp_path), "serverless", "backfill", shards, [],
                          "eu-west-1", "00fabc").requests) == 257


@pytest.mark.parametrize("name, arm", [
    ("m6g.2xlarge", True), ("c7gn.4xlarge", True), ("r8gd.xlarge", True), ("t4g.large", True),
    ("im4gn.xlarge", True), ("g5g.xlarge", True), ("m6i.2xlarge", False), ("g4dn.xlarge", False),
    ("m7i-flex.large", False), ("inf2.xlarge", False), ("c6in.2xlarge", False)])
def test_graviton_instance_types_are_told_apart(name, arm):
    assert graviton_types([name]) == ([name] if arm else [])


@pytest.mark.parametrize("key, value", [
    ("cluster.core_instance_type", "m7g.2xlarge"), ("cluster.primary_instance_type", "m6g.xlarge"),
    ("cluster.core_instance_types", ["m6i.2xlarge", "m6gd.2xlarge"])])
def test_graviton_nodes_are_refused(tmp_path, emr_package, key, value):
    overrides = {key: value, "cluster.instance_fleets": isinstance(value, list)}
    with pytest.raises(JobError, match=r"is Graviton \(arm64\): tensorflow-cpu has no aarch64"):
        plan(tmp_path, **overrides)


def test_spot_task_nodes_of_graviton_types_are_refused(tmp_path, emr_package):
    with pytest.raises(JobError, match="instance type c7g.2xlarge is Graviton"):
        plan(tmp_path, **{"cluster.task_spot_count": 2,
                          "cluster.task_instance_types": ["c7g.2xlarge"]})


def test_instance_fleets_spot_task_nodes_and_managed_scaling(tmp_path, emr_package):
    request = plan(tmp_path, **{
        "cluster.instance_fleets": True, "cluster.subnet_id": "subnet-1",
        "cluster.core_instance_types": ["m6i.2xlarge", "m6a.2xlarge"],
        "cluster.task_spot_count": 4,
        "cluster.task_instance_types": ["m6i.2xlarge", "m6a.2xlarge", "m5.2xlarge"],
        "cluster.managed_scaling_max": 20, "cluster.ebs_root_volume_gb": 40}).requests[0]
    instances = request["Instances"]
    assert "InstanceGroups" not in instances and instances["Ec2SubnetIds"] == ["subnet-1"]
    primary, core, task = instances["InstanceFleets"]
    assert (primary["InstanceFleetType"], primary["TargetOnDemandCapacity"]) == ("MASTER", 1)
    assert (core["InstanceFleetType"], core["TargetOnDemandCapacity"]) == ("CORE", 2)
    assert [c["InstanceType"] for c in core["InstanceTypeConfigs"]] == \
        ["m6i.2xlarge", "m6a.2xlarge"]
    assert (task["InstanceFleetType"], task["TargetSpotCapacity"]) == ("TASK", 4)
    assert "TargetOnDemandCapacity" not in task
    assert [c["InstanceType"] for c in task["InstanceTypeConfigs"]] == \
        ["m6i.2xlarge", "m6a.2xlarge", "m5.2xlarge"]
    assert all(c["EbsConfiguration"]["EbsBlockDeviceConfigs"][0]["VolumeSpecification"] ==
               {"VolumeType": "gp3", "SizeInGB": 64}
               for c in core["InstanceTypeConfigs"] + task["InstanceTypeConfigs"])
    assert request["ManagedScalingPolicy"] == {"ComputeLimits": {
        "UnitType": "InstanceFleetUnits", "MinimumCapacityUnits": 6,
        "MaximumCapacityUnits": 20, "MaximumCoreCapacityUnits": 2}}  # On-Demand fallback
    assert request["EbsRootVolumeSize"] == 40


def test_spot_task_group_without_fleets(tmp_path, emr_package):
    request = plan(tmp_path, **{"cluster.task_spot_count": 3,
                                "cluster.managed_scaling_max": 8}).requests[0]
    groups = request["Instances"]["InstanceGroups"]
    assert [(g["InstanceRole"], g["Market"], g["InstanceType"], g["InstanceCount"])
            for g in groups] == [("MASTER", "ON_DEMAND", "m6i.xlarge", 1),
                                 ("CORE", "ON_DEMAND", "m6i.2xlarge", 2),
                                 ("TASK", "SPOT", "m6i.2xlarge", 3)]
    assert request["ManagedScalingPolicy"]["ComputeLimits"]["UnitType"] == "Instances"
    assert request["ManagedScalingPolicy"]["ComputeLimits"]["MaximumOnDemandCapacityUnits"] == 2
    for most in (4, 5):  # at most the fixed nodes: it could never scale
        with pytest.raises(JobError, match="managed_scaling_max must be more than the core and "
                                           f"task nodes, 5, to scale at all, got {most}"):
            plan(tmp_path, **{"cluster.task_spot_count": 3, "cluster.managed_scaling_max": most})


def test_the_os_release_is_pinned_or_explicitly_latest(tmp_path, emr_package):
    with pytest.raises(JobError, match="\n  cluster.os_release_label: empty: the nodes' "
                                       "Amazon Linux release, pinned"):
        plan(tmp_path, **{"cluster.os_release_label": ""})
    assert "OSReleaseLabel" not in plan(tmp_path, **{
        "cluster.os_release_label": "latest"}).requests[0]


def test_the_managed_policy_tag_is_not_given_twice(tmp_path, emr_package):
    tags = plan(tmp_path, **{"cluster.tags": {"for-use-with-amazon-emr-managed-policies": "x",
                                              "team": "ml"}}).requests[0]["Tags"]
    assert tags == [{"Key": "team", "Value": "ml"}, MANAGED_POLICY_TAG]


@pytest.mark.parametrize("application, required, problem", [
    ({"architecture": "X86_64", "imageConfiguration": {"imageUri": "1.dkr.ecr/img:1"}}, True,
     None),
    ({"workerTypeSpecifications": {"Driver": {"imageConfiguration": {"imageUri": "i"}},
                                   "Executor": {"imageConfiguration": {"imageUri": "i"}}}},
     True, None),
    ({"workerTypeSpecifications": {"Driver": {"imageConfiguration": {"imageUri": "i"}}}}, True,
     "runs no custom image"),
    ({"releaseLabel": "emr-7.12.0"}, True, r"\(emr-7.12.0\) runs no custom image: its Python "
                                           r"is 3.9"),
    ({"releaseLabel": "emr-7.12.0"}, False, None),
    ({"architecture": "ARM64", "imageConfiguration": {"imageUri": "i"}}, True,
     "is ARM64: tensorflow-cpu has no aarch64 wheel"),
    ({"architecture": "ARM64"}, False, "is ARM64"),
])
def test_serverless_application_checks(application, required, problem):
    found = serverless_application_problem({"applicationId": "00fabc", **application}, required)
    if problem is None:
        assert found is None
    else:
        assert re.search(problem, found)


def test_dry_run_says_which_python_and_what_is_checked_before_sending(tmp_path, emr_package):
    serverless = plan(tmp_path, "serverless", "00fabc", **{"steps.concurrency": 3}).to_json()
    assert serverless["python"] == (
        "./environment/bin/python: imagegraph-env.tar.gz unpacked by YARN for each "
        "application; bin/python -> /usr/bin/python3.11 from the application's custom image "
        "(checked with get_application before sending)")
    assert serverless["before_sending"] == [
        "get_application 00fabc: architecture X86_64, a custom image (imageConfiguration)",
        "start at most 3 job run(s) at once (steps.concurrency); the next when one ends"]
    unchecked = plan(tmp_path, "serverless", "00fabc",
                     **{"serverless.require_custom_image": False}).to_json()
    assert "not checked" in unchecked["python"]
    assert unchecked["before_sending"][0] == "get_application 00fabc: architecture X86_64"
    running = plan(tmp_path, "steps", "j-ABC").to_json()
    assert running["before_sending"] == [
        "describe_cluster j-ABC: WAITING or RUNNING, release emr-7.12.0",
        "list_steps j-ABC: PENDING and RUNNING steps plus these at most 256"]
    new_cluster = plan(tmp_path).to_json()
    assert new_cluster["python"].endswith("bin/python -> /usr/bin/python3.11 from the nodes")
    assert new_cluster["before_sending"] == [
        "get_role EMR_DefaultRole, get_instance_profile EMR_EC2_DefaultRole: both exist in IAM"]


def test_constraints_pin_every_requirement_at_its_version():
    """constraints.txt (`make lock`) and requirements.txt say the same of each requirement."""
    def pins(name):
        lines = (line.split("#")[0].strip() for line in (ROOT / name).read_text().splitlines())
        return {re.sub(r"[-_.]+", "-", pin.split("==")[0]).lower(): pin.split("==")[1]
                for pin in lines if "==" in pin}
    required, locked = pins("requirements.txt"), pins("constraints.txt")
    assert required and {name: locked.get(name) for name in required} == required
    assert len(locked) > 2 * len(required)  # the transitive packages too


def test_spark_defaults_fit_the_job():
    defaults = spark_defaults(configurations())
    emr_conf = load_config(str(ROOT / "conf" / "emr.yaml"))
    assert int(defaults["spark.sql.execution.arrow.maxRecordsPerBatch"]) == \
        emr_conf.inference.arrow_batch_size
    assert defaults["spark.python.worker.reuse"] == "true"
    assert int(defaults["spark.task.cpus"]) == sizing.TASK_CPUS
    # the task's split measured best at 2 cores (docs/BENCHMARKS.md, "One task's cores"): the
    # model on the task's cores (the job sizes it from spark.task.cpus), 8 reader threads
    assert (sizing.TASK_CPUS, emr_conf.input.read_threads) == (2, 8)
    assert not any(key.startswith(("spark.executor.cores", "spark.executor.memory"))
                   for key in defaults)  # sized from the instance type on every step
    assert "spark.executor.pyspark.memory" not in defaults


@pytest.mark.parametrize("fleets", [False, True])
def test_spot_clusters_keep_application_masters_on_core_nodes(tmp_path, emr_package, fleets):
    """With Spot task nodes the driver (YARN's application master) must not land on one: YARN
    node labels put application masters on the CORE partition; without Spot, none rendered."""
    spot = plan(tmp_path, **{"cluster.task_spot_count": 2,
                             "cluster.instance_fleets": fleets}).requests[0]
    [yarn] = [c for c in spot["Configurations"] if c["Classification"] == "yarn-site"]
    assert yarn["Properties"] == {"yarn.node-labels.enabled": "true",
                                  "yarn.node-labels.am.default-node-label-expression": "CORE"}
    on_demand = plan(tmp_path, **{"cluster.instance_fleets": fleets}).requests[0]
    assert "yarn-site" not in [c["Classification"] for c in on_demand["Configurations"]]


def test_emr_managed_security_groups_go_into_instances(tmp_path, emr_package):
    instances = plan(tmp_path, **{"cluster.subnet_id": "subnet-1",
                                  "cluster.emr_managed_master_security_group": "sg-m",
                                  "cluster.emr_managed_slave_security_group": "sg-s",
                                  "cluster.service_access_security_group": "sg-a"}
                     ).requests[0]["Instances"]
    assert (instances["EmrManagedMasterSecurityGroup"], instances["EmrManagedSlaveSecurityGroup"],
            instances["ServiceAccessSecurityGroup"]) == ("sg-m", "sg-s", "sg-a")
    assert "ServiceAccessSecurityGroup" not in plan(tmp_path).requests[0]["Instances"]


@pytest.mark.parametrize("target, resource_id", [("cluster", ""), ("steps", "j-ABC")])
def test_every_step_sizes_its_driver_and_executors_for_the_nodes(tmp_path, emr_package, target,
                                                                 resource_id):
    [step] = plan(tmp_path, target, resource_id, **{
        "cluster.core_instance_type": "r6i.4xlarge"}).requests[0]["Steps"]
    options, _, _ = split_spark_submit(step["HadoopJarStep"]["Args"])
    assert [submitted_conf(options, f"spark.{key}") for key in (
        "driver.memory", "driver.memoryOverhead", "executor.cores", "executor.memory",
        "executor.memoryOverhead")] == ["2048m", "6144m", "4", "20480m", "4096m"]
    with pytest.raises(JobError, match="instance type g5.2xlarge is a GPU/accelerator type"):
        plan(tmp_path, target, resource_id, **{"cluster.core_instance_type": "g5.2xlarge"})
    with pytest.raises(JobError, match="does not fit a m6i.2xlarge core node's 24576 MiB"):
        plan(tmp_path, target, resource_id, **{"steps.driver_overhead_mb": 30000})


def test_managed_scaling_without_spot_scales_the_core_nodes(tmp_path, emr_package):
    """Instance groups without task nodes: a core cap at the core count could never scale;
    fleets with a Spot task fleet: no On-Demand cap, the fleet falls back to On-Demand."""
    limits = plan(tmp_path, **{"cluster.managed_scaling_max": 6}
                  ).requests[0]["ManagedScalingPolicy"]["ComputeLimits"]
    assert limits == {"UnitType": "Instances", "MinimumCapacityUnits": 2,
                      "MaximumCapacityUnits": 6}


@pytest.mark.parametrize("overrides, message", [
    ({"steps.concurrency": 257}, "steps.concurrency must be between 1 and 256, got 257"),
    ({"cluster.idle_timeout_s": 604801},
     "cluster.idle_timeout_s must be between 60 and 604800, got 604801"),
    ({"cluster.release_label": "emr-6.15.0"}, "cluster.release_label must be emr-7.x or later"),
    ({"cluster.release_label": "7.12.0"}, "cluster.release_label must be emr-7.x or later"),
    ({"steps.action_on_failure": "TERMINATE_CLUSTER", "steps.concurrency": 2},
     "TERMINATE_CLUSTER needs steps.concurrency 1"),
    ({"cluster.emr_managed_master_security_group": "sg-m"},
     "cluster.emr_managed_master_security_group and cluster.emr_managed_slave_security_group "
     "are set together or not at all"),
    ({"cluster.emr_managed_slave_security_group": "sg-s"}, "are set together or not at all"),
])
def test_limits_aws_would_reject_are_refused_before_sending(overrides, message):
    with pytest.raises(JobError, match=message):
        load_settings(None, overrides)
    load_settings(None, {"steps.concurrency": 256, "cluster.idle_timeout_s": 604800,
                         "cluster.release_label": "emr-7.0.0"})


def test_serverless_driver_gets_the_job_config_in_its_arguments(tmp_path, emr_package,
                                                                 monkeypatch):
    """EMR Serverless: no file is opened before Spark starts; the job config's keys are
    `--set`s that parse to the same configuration, and the job's own flags still win."""
    monkeypatch.setenv("GREMLIN_ENDPOINT", "wss://from-env:8182/gremlin")
    [request] = plan(tmp_path, "serverless", "00fabc").requests
    args = request["jobDriver"]["sparkSubmit"]["entryPointArguments"]
    assert "--config" not in args
    parsed = parse_job_args(request["jobDriver"]["sparkSubmit"]["entryPoint"], args)
    inline = load_config(None, dict(parse_override(item) for item in parsed.overrides))
    assert inline == load_config(str(ROOT / "conf" / "emr.yaml"),  # and the step's own --sets
                                 {"graph.region": "eu-west-1", "s3.region": "eu-west-1"})
    assert inline.graph.endpoint == "wss://from-env:8182/gremlin"
    assert parsed.gremlin_endpoint == "wss://n:8182/gremlin"


def test_serverless_inlining_names_an_unset_variable_of_the_job_config(tmp_path, monkeypatch):
    monkeypatch.delenv("NEPTUNE_URL", raising=False)
    job_config = tmp_path / "emr.yaml"
    job_config.write_text("graph:\n  endpoint: ${NEPTUNE_URL}\n")
    with pytest.raises(JobError) as error:
        with_config_inline(["--config", "emr.yaml"], str(job_config))
    assert str(error.value).startswith(
        f"{job_config}: graph.endpoint is ${{NEPTUNE_URL}}, which is not set (export")
