"""The requests of a launch, built without sending anything: the files to upload and the
boto3 request dicts of run_job_flow (a new cluster running the steps), add_job_flow_steps (a
running cluster) or start_job_run (EMR Serverless, one run per step).

Every step is rendered from its template and checked against the job's parser here, so a dry
run shows exactly what a real launch sends and refuses what the job would refuse.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagegraph.emr import package
from imagegraph.emr.settings import LauncherSettings
from imagegraph.emr.templates import check_step, load_template, render, split_spark_submit
from imagegraph.errors import JobError

TARGETS = ("cluster", "steps", "serverless")
ARCHIVE_PYTHON = "./environment/bin/python"
# spark-submit options and the Spark properties they set, for EMR Serverless, whose
# sparkSubmitParameters are given as --conf properties.
_SUBMIT_OPTION_PROPERTIES = {
    "--archives": "spark.archives", "--files": "spark.files", "--py-files": "spark.submit.pyFiles",
    "--jars": "spark.jars", "--name": "spark.app.name",
    "--num-executors": "spark.executor.instances", "--executor-cores": "spark.executor.cores",
    "--executor-memory": "spark.executor.memory", "--driver-cores": "spark.driver.cores",
    "--driver-memory": "spark.driver.memory"}
_SERVERLESS_DROPPED = frozenset({"--deploy-mode", "--master"})


@dataclass(frozen=True)
class Plan:
    """A launch: files to upload, then one boto3 `operation` with its `requests` (one for
    run_job_flow and add_job_flow_steps, one per step for start_job_run)."""

    uploads: list[package.Upload]
    operation: str
    requests: list[dict]

    def to_json(self) -> dict:
        """What `--dry-run` prints: the upload_file calls and the request(s), as sent."""
        requests: Any = self.requests if self.operation == "start_job_run" else self.requests[0]
        return {"upload_file": [upload.request() for upload in self.uploads],
                self.operation: requests}


def dumps(value: Any, width: int = 100, indent: int = 0, lead: int = 0) -> str:
    """JSON as `json.dumps(value, indent=2)` writes it, except that a mapping of plain values
    that fits stays on one line and lists of plain values are packed several items to a line,
    within `width` columns. `lead`: columns already used on the first line."""
    pad, inner = " " * indent, " " * (indent + 2)
    plain = (str, int, float, bool, type(None))
    if isinstance(value, dict) and value:
        one_line = json.dumps(value)
        if all(isinstance(item, plain) for item in value.values()) and \
                lead + len(one_line) <= width:
            return one_line
        items = []
        for key, item in value.items():
            head = f"{inner}{json.dumps(key)}: "
            items.append(head + dumps(item, width, indent + 2, len(head)))
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list) and value:
        if not all(isinstance(item, plain) for item in value):
            items = [inner + dumps(item, width, indent + 2, len(inner)) for item in value]
            return "[\n" + ",\n".join(items) + f"\n{pad}]"
        lines, line = [], inner
        for text in (json.dumps(item) + "," for item in value):
            if line.strip() and len(line) + 1 + len(text) > width:
                lines.append(line)
                line = inner
            line += (" " if line.strip() else "") + text
        lines.append(line)
        return "[\n" + "\n".join(lines)[:-1] + f"\n{pad}]"
    return json.dumps(value)


def code_root(settings: LauncherSettings) -> str:
    """`package.code_uri` without a trailing slash; `JobError` when it is not set. A
    `file:///...` directory laid out as the upload renders steps for a local standalone
    cluster (dev/cluster_jobs.py); only s3:// URIs can be uploaded to."""
    uri = settings.package.code_uri
    if not uri:
        raise JobError("package.code_uri is empty: set it in the settings file or pass "
                       "--code-uri s3://bucket/prefix")
    if uri.startswith("file:///"):
        return uri.rstrip("/")
    bucket, prefix = package.split_s3_uri(uri)
    return f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"


def python_env_options(settings: LauncherSettings, target: str) -> list[str]:
    """spark-submit options that make the driver and executors run the job's Python: the
    packed environment (`--archives <code>/imagegraph-env.tar.gz#environment`) or the
    interpreter the bootstrap action installed the pins into."""
    python_env = settings.package.python_env
    if python_env == "bootstrap":
        if target == "serverless":
            raise JobError("EMR Serverless has no bootstrap actions: use "
                           "package.python_env=archive")
        python = settings.package.node_python
        return ["--conf", f"spark.yarn.appMasterEnv.PYSPARK_PYTHON={python}",
                "--conf", f"spark.executorEnv.PYSPARK_PYTHON={python}"]
    options = ["--archives", f"{code_root(settings)}/{package.ENV_ARCHIVE}#environment"]
    if target == "serverless":
        driver_env = "spark.emr-serverless.driverEnv"
        options += ["--conf", f"{driver_env}.PYSPARK_DRIVER_PYTHON={ARCHIVE_PYTHON}",
                    "--conf", f"{driver_env}.PYSPARK_PYTHON={ARCHIVE_PYTHON}"]
    else:
        options += ["--conf", f"spark.yarn.appMasterEnv.PYSPARK_PYTHON={ARCHIVE_PYTHON}"]
    return options + ["--conf", f"spark.executorEnv.PYSPARK_PYTHON={ARCHIVE_PYTHON}"]


def render_steps(settings: LauncherSettings, target: str, template_name: str,
                 step_values: list[dict], job_options: list[str], region: str) -> list[dict]:
    """One checked EMR step per entry of `step_values` (the job's own placeholders, e.g. a
    backfill shard's), from `<steps.templates>/<template_name>.json`."""
    template = load_template(settings.steps.templates, template_name)
    common = {
        "code_uri": code_root(settings),
        "job_config": Path(settings.package.job_config).name,
        "action_on_failure": settings.steps.action_on_failure,
        "python_env": python_env_options(settings, target),
        "spark_submit_options": list(settings.steps.spark_submit_options),
        "job_options": list(job_options),
        "gremlin_endpoint": settings.steps.gremlin_endpoint,
        "region": region,
    }
    source = f"step template {template_name}"
    steps = [render(template, {**common, **values}, source) for values in step_values]
    for step in steps:
        if "--gremlin-endpoint" in step["HadoopJarStep"]["Args"] and not common["gremlin_endpoint"]:
            raise JobError(f"{template_name} writes to Neptune: pass --gremlin-endpoint "
                           "wss://<writer endpoint>:8182/gremlin or set steps.gremlin_endpoint")
        check_step(step)
    return steps


def load_configurations(path: str) -> list[dict]:
    """The cluster's configuration classifications (a JSON list, as run_job_flow takes it)."""
    try:
        configurations = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise JobError(f"cluster configurations {path} do not exist") from None
    except json.JSONDecodeError as exc:
        raise JobError(f"cluster configurations {path} are not valid JSON: {exc}") from None
    if not isinstance(configurations, list) or not all(
            isinstance(item, dict) and "Classification" in item for item in configurations):
        raise JobError(f"cluster configurations {path}: expected a list of classifications")
    return configurations


def spark_defaults(configurations: list[dict]) -> dict[str, str]:
    """The properties of the spark-defaults classification ({} without one)."""
    for item in configurations:
        if item["Classification"] == "spark-defaults":
            return dict(item.get("Properties", {}))
    return {}


def run_job_flow_request(settings: LauncherSettings, steps: list[dict],
                         configurations: list[dict], wheel_name: str) -> dict:
    """A new cluster that bootstraps the nodes' Python and runs `steps`; unless
    `cluster.keep_alive` it terminates after the last one."""
    cluster = settings.cluster
    if not cluster.log_uri:
        raise JobError("cluster.log_uri is empty: without it a cluster's step and container "
                       "logs are lost when it terminates")
    code = code_root(settings)
    core = {"Name": "core", "InstanceRole": "CORE", "Market": "ON_DEMAND",
            "InstanceType": cluster.core_instance_type,
            "InstanceCount": cluster.core_instance_count,
            "EbsConfiguration": {"EbsBlockDeviceConfigs": [{
                "VolumeSpecification": {"VolumeType": "gp3", "SizeInGB": cluster.core_volume_gb},
                "VolumesPerInstance": 1}]}}
    instances: dict[str, Any] = {
        "InstanceGroups": [{"Name": "primary", "InstanceRole": "MASTER", "Market": "ON_DEMAND",
                            "InstanceType": cluster.primary_instance_type, "InstanceCount": 1},
                           core],
        "KeepJobFlowAliveWhenNoSteps": cluster.keep_alive,
        "TerminationProtected": False,
    }
    if cluster.subnet_id:
        instances["Ec2SubnetId"] = cluster.subnet_id
    if cluster.key_name:
        instances["Ec2KeyName"] = cluster.key_name
    if cluster.additional_security_groups:
        instances["AdditionalMasterSecurityGroups"] = list(cluster.additional_security_groups)
        instances["AdditionalSlaveSecurityGroups"] = list(cluster.additional_security_groups)
    # No arguments: make sure the interpreter the packed environment links to is there.
    # With the code prefix and wheel: install requirements.txt and the wheel into it.
    bootstrap_args = [code, wheel_name] if settings.package.python_env == "bootstrap" else []
    request = {
        "Name": cluster.name,
        "ReleaseLabel": cluster.release_label,
        "LogUri": cluster.log_uri,
        "Applications": [{"Name": "Hadoop"}, {"Name": "Spark"}],
        "Instances": instances,
        "Configurations": configurations,
        "BootstrapActions": [{"Name": "imagegraph python",
                              "ScriptBootstrapAction": {"Path": f"{code}/{package.BOOTSTRAP}",
                                                        "Args": bootstrap_args}}],
        "Steps": steps,
        "JobFlowRole": cluster.instance_profile,
        "ServiceRole": cluster.service_role,
        "VisibleToAllUsers": True,
        "StepConcurrencyLevel": cluster.step_concurrency,
        "Tags": [{"Key": str(key), "Value": str(value)} for key, value in cluster.tags.items()],
    }
    if cluster.keep_alive:
        request["AutoTerminationPolicy"] = {"IdleTimeout": cluster.idle_timeout_s}
    return request


def add_job_flow_steps_request(cluster_id: str, steps: list[dict]) -> dict:
    """`steps` added to the running cluster `cluster_id` (`j-...`)."""
    return {"JobFlowId": cluster_id, "Steps": steps}


def serverless_submit_parameters(options: list[str]) -> str:
    """A step's spark-submit options as EMR Serverless `sparkSubmitParameters`: `--conf`
    properties, without the deploy mode and master that EMR Serverless sets itself."""
    parameters: list[str] = []
    index = 0
    while index < len(options):
        option, value = options[index], None
        if "=" in option:
            option, value = option.split("=", 1)
            index += 1
        else:
            value = options[index + 1] if index + 1 < len(options) else None
            index += 2
        if value is None or any(char.isspace() for char in value):
            raise JobError(f"spark-submit option {option} {value!r} cannot be passed to "
                           "EMR Serverless")
        if option == "--conf":
            parameters += ["--conf", value]
        elif option in _SUBMIT_OPTION_PROPERTIES:
            parameters += ["--conf", f"{_SUBMIT_OPTION_PROPERTIES[option]}={value}"]
        elif option not in _SERVERLESS_DROPPED:
            raise JobError(f"spark-submit option {option} has no EMR Serverless equivalent")
    return " ".join(parameters)


def start_job_run_requests(settings: LauncherSettings, application_id: str, steps: list[dict],
                           configurations: list[dict]) -> list[dict]:
    """One EMR Serverless job run per step, on `application_id`, with the cluster's
    spark-defaults as the run's application configuration."""
    serverless = settings.serverless
    if not serverless.execution_role_arn:
        raise JobError("serverless.execution_role_arn is empty: EMR Serverless runs a job "
                       "under that role")
    overrides: dict[str, Any] = {"applicationConfiguration": [
        {"classification": "spark-defaults", "properties": spark_defaults(configurations)}]}
    if serverless.log_uri:
        overrides["monitoringConfiguration"] = {
            "s3MonitoringConfiguration": {"logUri": serverless.log_uri}}
    requests = []
    for step in steps:
        options, entry, job_args = split_spark_submit(step["HadoopJarStep"]["Args"])
        requests.append({
            "applicationId": application_id,
            "executionRoleArn": serverless.execution_role_arn,
            "name": step["Name"],
            "jobDriver": {"sparkSubmit": {
                "entryPoint": entry, "entryPointArguments": job_args,
                "sparkSubmitParameters": serverless_submit_parameters(options)}},
            "configurationOverrides": overrides,
            "executionTimeoutMinutes": serverless.timeout_minutes,
            "retryPolicy": {"maxAttempts": 1},  # never a second attempt (README "Run on EMR")
        })
    return requests


def build_plan(settings: LauncherSettings, target: str, template_name: str,
               step_values: list[dict], job_options: list[str], region: str,
               resource_id: str = "") -> Plan:
    """Everything a launch sends. `target`: `cluster` (run_job_flow), `steps`
    (add_job_flow_steps on cluster `resource_id`) or `serverless` (start_job_run on
    application `resource_id`)."""
    if target not in TARGETS:
        raise JobError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
    steps = render_steps(settings, target, template_name, step_values, job_options, region)
    archive = settings.package.python_env == "archive"
    uploads = package.uploads(settings.package.dir, code_root(settings),
                              settings.package.job_config, with_env_archive=archive)
    if target == "steps":
        return Plan(uploads, "add_job_flow_steps", [add_job_flow_steps_request(resource_id,
                                                                               steps)])
    configurations = load_configurations(settings.cluster.configurations)
    if target == "serverless":
        return Plan(uploads, "start_job_run",
                    start_job_run_requests(settings, resource_id, steps, configurations))
    wheel = package.wheel_file(Path(settings.package.dir)).name
    return Plan(uploads, "run_job_flow",
                [run_job_flow_request(settings, steps, configurations, wheel)])
