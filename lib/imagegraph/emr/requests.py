"""The requests of a launch, built without sending anything: the files to upload and the
boto3 request dicts of run_job_flow (a new cluster running the steps), add_job_flow_steps (a
running cluster) or start_job_run (EMR Serverless, one run per step).

Every step is rendered from its template and checked against the job's parser here, so a dry
run shows exactly what a real launch sends and refuses what the job would refuse, and so are
the limits AWS would only report later or never: EMR's 256 active steps, Graviton instance
types (tensorflow-cpu has no aarch64 wheel), the packed environment's interpreter.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagegraph.emr import package, sizing
from imagegraph.emr.settings import LauncherSettings, missing_message
from imagegraph.emr.templates import (
    check_step,
    load_template,
    placeholders,
    render,
    split_spark_submit,
)
from imagegraph.errors import JobError
from imagegraph.sections import read_yaml

TARGETS = {"cluster": "a new cluster", "steps": "steps on a running cluster",
           "serverless": "EMR Serverless"}
ARCHIVE_PYTHON = "./environment/bin/python"
MAX_ACTIVE_STEPS = 256  # EMR's limit on a cluster's PENDING and RUNNING steps
CLUSTER_TAKING_STEPS = ("WAITING", "RUNNING")  # the states --cluster-id accepts
MANAGED_POLICY_TAG = {"Key": "for-use-with-amazon-emr-managed-policies", "Value": "true"}
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
    run_job_flow and add_job_flow_steps, one per step for start_job_run).

    `python`: which interpreter the jobs run on, in words. `concurrency`: EMR Serverless runs
    started at once (the launcher starts the next when one ends). `require_custom_image`: the
    EMR Serverless application must show a custom image in get_application, checked before
    anything is uploaded or started. `release_label`: the release a running cluster
    (add_job_flow_steps) must run, checked with describe_cluster."""

    uploads: list[package.Upload]
    operation: str
    requests: list[dict]
    python: str
    concurrency: int = 1
    require_custom_image: bool = False
    release_label: str = ""

    def to_json(self) -> dict:
        """What `--dry-run` prints: the Python the jobs run on, the checks made before
        sending, the upload_file calls and the request(s), as sent."""
        requests: Any = self.requests if self.operation == "start_job_run" else self.requests[0]
        shown: dict[str, Any] = {"python": self.python}
        if self.operation == "start_job_run":
            app = self.requests[0]["applicationId"]
            shown["before_sending"] = [
                f"get_application {app}: architecture X86_64"
                + (", a custom image (imageConfiguration)" if self.require_custom_image else ""),
                f"start at most {self.concurrency} job run(s) at once (steps.concurrency); "
                "the next when one ends"]
        elif self.operation == "run_job_flow":
            request = self.requests[0]
            shown["before_sending"] = [
                f"get_role {request['ServiceRole']}, get_instance_profile "
                f"{request['JobFlowRole']}: both exist in IAM"]
        elif self.operation == "add_job_flow_steps":
            cluster_id = self.requests[0]["JobFlowId"]
            shown["before_sending"] = [
                f"describe_cluster {cluster_id}: {' or '.join(CLUSTER_TAKING_STEPS)}, "
                f"release {self.release_label}",
                f"list_steps {cluster_id}: PENDING and RUNNING steps plus these at most "
                f"{MAX_ACTIVE_STEPS}"]
        return {**shown, "upload_file": [upload.request() for upload in self.uploads],
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


def missing_settings(settings: LauncherSettings, target: str, template_name: str,
                     region: str) -> list[tuple[str, str]]:
    """(dotted key, what is wrong with it) of every setting a launch of `template_name` to
    `target` needs and lacks, or has in a form it cannot use; `region` is the one resolved
    (empty: none)."""
    cluster, code_uri = settings.cluster, settings.package.code_uri
    needed = [
        ("aws.region", not region, "empty, and boto3 has none: the region of every request"),
        ("package.code_uri", not code_uri,
         "empty: the s3://bucket/prefix the package and the jobs are uploaded to"),
        ("package.code_uri", bool(code_uri) and not _is_code_uri(code_uri),
         f"{code_uri!r} is not an s3://bucket/prefix URI"),
        ("steps.gremlin_endpoint", not settings.steps.gremlin_endpoint and "gremlin_endpoint"
         in placeholders(load_template(settings.steps.templates, template_name)),
         f"empty: {template_name} writes to Neptune, wss://<writer endpoint>:8182/gremlin"),
        ("cluster.log_uri", target == "cluster" and not cluster.log_uri,
         "empty: s3://bucket/prefix/ that keeps the cluster's step and container logs once it "
         "terminates"),
        ("cluster.os_release_label", target == "cluster" and not cluster.os_release_label,
         "empty: the nodes' Amazon Linux release, pinned (`aws emr describe-release-label "
         f"--release-label {cluster.release_label}` lists them under AvailableOSReleases), "
         "or `latest`"),
        ("serverless.execution_role_arn",
         target == "serverless" and not settings.serverless.execution_role_arn,
         "empty: the role EMR Serverless runs a job under"),
    ]
    return [(key, problem) for key, lacking, problem in needed if lacking]


def _is_code_uri(uri: str) -> bool:
    """An s3://bucket/prefix URI, or a file:/// directory (`code_root`)."""
    try:
        package.split_s3_uri(uri)
    except JobError:
        return uri.startswith("file:///")
    return True


def code_root(settings: LauncherSettings) -> str:
    """`package.code_uri` (set: `missing_settings`) without a trailing slash. A
    `file:///...` directory laid out as the upload renders steps for a local standalone
    cluster (dev/cluster_jobs.py); only s3:// URIs can be uploaded to."""
    uri = settings.package.code_uri
    if uri.startswith("file:///"):
        return uri.rstrip("/")
    bucket, prefix = package.split_s3_uri(uri)
    return f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"


def python_description(settings: LauncherSettings, target: str) -> str:
    """Which Python the jobs of a launch run on, for `--dry-run`."""
    node_python = settings.package.node_python
    python_env = settings.package.python_env
    if python_env == "bootstrap":
        return (f"{node_python} on every node, with requirements.txt under constraints.txt and "
                "the wheel installed by the bootstrap action")
    if python_env == "node_archive":
        return (f"{settings.package.node_env_dir}/bin/python: {package.ENV_ARCHIVE} unpacked "
                f"once per node by the bootstrap action; bin/python -> {node_python}")
    where = "the nodes"
    if target == "serverless":
        where = ("the application's custom image (checked with get_application before sending)"
                 if settings.serverless.require_custom_image else "the application's image "
                 "(serverless.require_custom_image is false: not checked)")
    return (f"{ARCHIVE_PYTHON}: {package.ENV_ARCHIVE} unpacked by YARN for each application; "
            f"bin/python -> {node_python} from {where}")


def python_env_options(settings: LauncherSettings, target: str) -> list[str]:
    """spark-submit options that make the driver and executors run the job's Python: the
    packed environment (`--archives <code>/imagegraph-env.tar.gz#environment`), the same
    environment unpacked on every node by the bootstrap action, or the interpreter the
    bootstrap action installed the pins into."""
    python_env = settings.package.python_env
    if python_env != "archive":
        if target == "serverless":
            raise JobError("EMR Serverless has no bootstrap actions: use "
                           "package.python_env=archive")
        if target == "steps":
            raise JobError(f"--cluster-id with package.python_env={python_env}: that cluster "
                           "never ran this launcher's bootstrap action; use "
                           "package.python_env=archive")
        python = (settings.package.node_python if python_env == "bootstrap"
                  else f"{settings.package.node_env_dir.rstrip('/')}/bin/python")
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
    # A running cluster has its own spark-defaults: the job's tuning goes on every step.
    tuning = tuning_options(settings.cluster.configurations) if target == "steps" else []
    tuning += container_options(settings, target)
    common = {
        "code_uri": code_root(settings),
        "job_config": Path(settings.package.job_config).name,
        "action_on_failure": settings.steps.action_on_failure,
        "python_env": python_env_options(settings, target),
        "spark_submit_options": tuning + list(settings.steps.spark_submit_options),
        "job_options": list(job_options),
        "gremlin_endpoint": settings.steps.gremlin_endpoint,
        "region": region,
    }
    source = f"step template {template_name}"
    steps = [render(template, {**common, **values}, source) for values in step_values]
    for step in steps:
        check_step(step)
    return steps


def container_options(settings: LauncherSettings, target: str) -> list[str]:
    """The driver's memory and overhead (`steps.driver_*`) and, on a cluster, the executors
    sized from its instance types (`sizing.executor_for`; the driver must fit a core node);
    EMR Serverless gets `sizing.SERVERLESS_EXECUTOR`."""
    steps = settings.steps
    options = ["--conf", f"spark.driver.memory={steps.driver_memory_mb}m",
               "--conf", f"spark.driver.memoryOverhead={steps.driver_overhead_mb}m"]
    if target == "serverless":
        return options + sizing.SERVERLESS_EXECUTOR.options()
    cluster = settings.cluster
    core_types = list(cluster.core_instance_types) or [cluster.core_instance_type]
    task_types = (list(cluster.task_instance_types) or core_types) if cluster.task_spot_count \
        else []
    sizing.check_driver_fits(core_types, steps.driver_memory_mb + steps.driver_overhead_mb)
    return options + sizing.executor_for(core_types + task_types).options()


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


def tuning_options(configurations_path: str) -> list[str]:
    """The spark-defaults of the configurations file as spark-submit `--conf key=value`s."""
    defaults = spark_defaults(load_configurations(configurations_path))
    return [item for key, value in defaults.items() for item in ("--conf", f"{key}={value}")]


def with_node_python(configurations: list[dict], node_python: str, source: str) -> list[dict]:
    """`configurations` with spark-env's `export PYSPARK_PYTHON=<node_python>`, the nodes'
    default Python, from the settings (added to an `export` the file has, else a new one);
    `JobError` when the file names one itself."""
    named = [item for item in configurations if item["Classification"] == "spark-env"
             for export in item.get("Configurations", [])
             if "PYSPARK_PYTHON" in export.get("Properties", {})]
    if named:
        raise JobError(f"cluster configurations {source} set PYSPARK_PYTHON: the nodes' Python "
                       "is package.node_python in the launcher's settings, and only there")
    others = [item for item in configurations if item["Classification"] != "spark-env"]
    [spark_env] = [item for item in configurations if item["Classification"] == "spark-env"] \
        or [{"Classification": "spark-env", "Properties": {}, "Configurations": []}]
    inner = list(spark_env.get("Configurations", []))
    exports = [i for i, item in enumerate(inner) if item["Classification"] == "export"]
    if exports:
        export = inner[exports[0]]
        inner[exports[0]] = {**export, "Properties": {**export.get("Properties", {}),
                                                      "PYSPARK_PYTHON": node_python}}
    else:
        inner.append({"Classification": "export",
                      "Properties": {"PYSPARK_PYTHON": node_python}})
    return others + [{**spark_env, "Configurations": inner}]


def cluster_configurations(settings: LauncherSettings, configurations: list[dict]) -> list[dict]:
    """A new cluster's configurations: the file's, with the nodes' Python (`with_node_python`),
    Spark's event logs under `cluster.log_uri` (read by the History Server, kept after the
    cluster is gone), the job's quiet logging (`spark-log4j2` from `cluster.log4j2`) and, with
    Spot task nodes, YARN node labels that keep application masters (the drivers) on the
    On-Demand core nodes."""
    cluster = settings.cluster
    events = f"{cluster.log_uri.rstrip('/')}/spark-events/"
    added = {"spark-defaults": {"spark.eventLog.enabled": "true", "spark.eventLog.dir": events,
                                "spark.history.fs.logDirectory": events},
             "spark-log4j2": log4j2_properties(cluster.log4j2)}
    if cluster.task_spot_count:
        added["yarn-site"] = {"yarn.node-labels.enabled": "true",
                              "yarn.node-labels.am.default-node-label-expression": "CORE"}
    merged = [{**item, "Properties": {**item.get("Properties", {}),
                                      **added.pop(item["Classification"], {})}}
              if item["Classification"] in added else item for item in configurations]
    merged += [{"Classification": name, "Properties": properties}
               for name, properties in added.items()]
    return with_node_python(merged, settings.package.node_python, cluster.configurations)


def log4j2_properties(path: str) -> dict[str, str]:
    """The `key = value` lines of a log4j2 properties file, comments skipped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise JobError(f"cluster.log4j2 {path} does not exist") from None
    pairs = [line.split("=", 1) for line in lines
             if line.strip() and not line.lstrip().startswith("#")]
    return {key.strip(): value.strip() for key, value in pairs}


def _instances(settings: LauncherSettings) -> dict[str, Any]:
    """run_job_flow's `Instances`: instance groups, or instance fleets with several types and
    Spot task nodes; `JobError` for a type `sizing` refuses (Graviton, GPU, not in its table)."""
    cluster = settings.cluster
    core_types = list(cluster.core_instance_types) or [cluster.core_instance_type]
    task_types = list(cluster.task_instance_types) or core_types
    used = [cluster.primary_instance_type, *core_types] + \
        (task_types if cluster.task_spot_count else [])
    for name in used:
        sizing.node_resources(name)
    ebs = {"EbsBlockDeviceConfigs": [{
        "VolumeSpecification": {"VolumeType": "gp3", "SizeInGB": cluster.core_volume_gb},
        "VolumesPerInstance": 1}]}
    if cluster.instance_fleets:
        fleets = [
            {"Name": "primary", "InstanceFleetType": "MASTER", "TargetOnDemandCapacity": 1,
             "InstanceTypeConfigs": [{"InstanceType": cluster.primary_instance_type}]},
            {"Name": "core", "InstanceFleetType": "CORE",
             "TargetOnDemandCapacity": cluster.core_instance_count,
             "InstanceTypeConfigs": [{"InstanceType": name, "WeightedCapacity": 1,
                                      "EbsConfiguration": ebs} for name in core_types]}]
        if cluster.task_spot_count:
            fleets.append({
                "Name": "task", "InstanceFleetType": "TASK",
                "TargetSpotCapacity": cluster.task_spot_count,
                "InstanceTypeConfigs": [{"InstanceType": name, "WeightedCapacity": 1,
                                         "EbsConfiguration": ebs} for name in task_types],
                "LaunchSpecifications": {"SpotSpecification": {
                    "TimeoutDurationMinutes": 20, "TimeoutAction": "SWITCH_TO_ON_DEMAND",
                    "AllocationStrategy": "capacity-optimized"}}})
        instances: dict[str, Any] = {"InstanceFleets": fleets}
        if cluster.subnet_id:
            instances["Ec2SubnetIds"] = [cluster.subnet_id]
    else:
        groups = [{"Name": "primary", "InstanceRole": "MASTER", "Market": "ON_DEMAND",
                   "InstanceType": cluster.primary_instance_type, "InstanceCount": 1},
                  {"Name": "core", "InstanceRole": "CORE", "Market": "ON_DEMAND",
                   "InstanceType": core_types[0], "InstanceCount": cluster.core_instance_count,
                   "EbsConfiguration": ebs}]
        if cluster.task_spot_count:
            groups.append({"Name": "task", "InstanceRole": "TASK", "Market": "SPOT",
                           "InstanceType": task_types[0],
                           "InstanceCount": cluster.task_spot_count, "EbsConfiguration": ebs})
        instances = {"InstanceGroups": groups}
        if cluster.subnet_id:
            instances["Ec2SubnetId"] = cluster.subnet_id
    instances["KeepJobFlowAliveWhenNoSteps"] = cluster.keep_alive
    instances["TerminationProtected"] = False
    return instances


def _managed_scaling(settings: LauncherSettings) -> dict[str, Any]:
    """run_job_flow's `ManagedScalingPolicy` between the core and task nodes and
    `cluster.managed_scaling_max` instances (fleets: units). With Spot task nodes the core
    nodes stay fixed and the task nodes scale; without, the core nodes scale. The On-Demand
    cap is the core count only for a Spot task group: a task fleet falls back to On-Demand."""
    cluster = settings.cluster
    minimum = cluster.core_instance_count + cluster.task_spot_count
    if cluster.managed_scaling_max <= minimum:
        raise JobError(f"cluster.managed_scaling_max must be more than the core and task nodes, "
                       f"{minimum}, to scale at all, got {cluster.managed_scaling_max}")
    limits = {"UnitType": "InstanceFleetUnits" if cluster.instance_fleets else "Instances",
              "MinimumCapacityUnits": minimum, "MaximumCapacityUnits": cluster.managed_scaling_max}
    if cluster.task_spot_count:
        limits["MaximumCoreCapacityUnits"] = cluster.core_instance_count
        if not cluster.instance_fleets:
            limits["MaximumOnDemandCapacityUnits"] = cluster.core_instance_count
    return {"ComputeLimits": limits}


def bootstrap_args(settings: LauncherSettings, wheel_name: str) -> list[str]:
    """The bootstrap action's arguments (see emr/bootstrap.sh): the nodes' Python, then what
    `package.python_env` needs on every node."""
    code = code_root(settings)
    python_env = settings.package.python_env
    args = [settings.package.node_python]
    if python_env == "bootstrap":
        args += ["install", code, wheel_name]
    elif python_env == "node_archive":
        args += ["unpack", f"{code}/{package.ENV_ARCHIVE}", settings.package.node_env_dir]
    return args


def run_job_flow_request(settings: LauncherSettings, steps: list[dict],
                         configurations: list[dict], wheel_name: str) -> dict:
    """A new cluster that bootstraps the nodes' Python and runs `steps`; unless
    `cluster.keep_alive` it terminates after the last one."""
    cluster = settings.cluster
    code = code_root(settings)
    instances = _instances(settings)
    if cluster.key_name:
        instances["Ec2KeyName"] = cluster.key_name
    if cluster.additional_security_groups:
        instances["AdditionalMasterSecurityGroups"] = list(cluster.additional_security_groups)
        instances["AdditionalSlaveSecurityGroups"] = list(cluster.additional_security_groups)
    for key, group in (("EmrManagedMasterSecurityGroup", cluster.emr_managed_master_security_group),
                       ("EmrManagedSlaveSecurityGroup", cluster.emr_managed_slave_security_group),
                       ("ServiceAccessSecurityGroup", cluster.service_access_security_group)):
        if group:
            instances[key] = group
    tags = [{"Key": str(key), "Value": str(value)} for key, value in cluster.tags.items()
            if key != MANAGED_POLICY_TAG["Key"]]
    request = {
        "Name": cluster.name,
        "ReleaseLabel": cluster.release_label,
        "LogUri": cluster.log_uri,
        "Applications": [{"Name": "Hadoop"}, {"Name": "Spark"}],
        "Instances": instances,
        "Configurations": cluster_configurations(settings, configurations),
        "BootstrapActions": [{"Name": "imagegraph python",
                              "ScriptBootstrapAction": {"Path": f"{code}/{package.BOOTSTRAP}",
                                                        "Args": bootstrap_args(settings,
                                                                               wheel_name)}}],
        "Steps": steps,
        "JobFlowRole": cluster.instance_profile,
        "ServiceRole": cluster.service_role,
        "VisibleToAllUsers": True,
        "StepConcurrencyLevel": settings.steps.concurrency,
        "Tags": tags + [MANAGED_POLICY_TAG],
    }
    if cluster.os_release_label != "latest":
        request["OSReleaseLabel"] = cluster.os_release_label
    if cluster.ebs_root_volume_gb:
        request["EbsRootVolumeSize"] = cluster.ebs_root_volume_gb
    if cluster.managed_scaling_max:
        request["ManagedScalingPolicy"] = _managed_scaling(settings)
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
    overrides: dict[str, Any] = {"applicationConfiguration": [
        {"classification": "spark-defaults", "properties": spark_defaults(configurations)}]}
    if serverless.log_uri:
        overrides["monitoringConfiguration"] = {
            "s3MonitoringConfiguration": {"logUri": serverless.log_uri}}
    requests = []
    inlined: list[str] | None = None  # the job configuration's --set flags, read once
    for step in steps:
        options, entry, job_args = split_spark_submit(step["HadoopJarStep"]["Args"])
        if "--config" in job_args and inlined is None:
            inlined = config_overrides(settings.package.job_config)
        job_args = with_config_inline(job_args, settings.package.job_config, inlined)
        requests.append({
            "applicationId": application_id,
            "executionRoleArn": serverless.execution_role_arn,
            "name": step["Name"],
            "jobDriver": {"sparkSubmit": {
                "entryPoint": entry, "entryPointArguments": job_args,
                "sparkSubmitParameters": serverless_submit_parameters(options)}},
            "configurationOverrides": overrides,
            "executionTimeoutMinutes": serverless.timeout_minutes,
            "retryPolicy": {"maxAttempts": 1},  # never a second attempt (docs/EMR.md)
        })
    return requests


def config_overrides(config_path: str) -> list[str]:
    """One `--set SECTION.KEY=VALUE` per key of the job configuration `config_path` (`${VAR}`
    read from the launcher's environment, each value as JSON)."""
    raw = read_yaml(config_path, "job config")
    return [item for section, keys in (raw or {}).items() for key, value in keys.items()
            for item in ("--set", f"{section}.{key}={json.dumps(value)}")]


def with_config_inline(job_args: list[str], config_path: str,
                       overrides: list[str] | None = None) -> list[str]:
    """`job_args` with `--config NAME` replaced by one `--set SECTION.KEY=VALUE` per key of the
    job configuration `config_path` (`config_overrides`; `overrides` when given, read once for
    many steps): EMR Serverless's driver opens no file shipped with `spark.files` before Spark
    starts, and the job's flags and later `--set`s still override these."""
    if "--config" not in job_args:
        return list(job_args)
    if overrides is None:
        overrides = config_overrides(config_path)
    index = job_args.index("--config")
    return job_args[:index] + overrides + job_args[index + 2:]


def build_plan(settings: LauncherSettings, target: str, template_name: str,
               step_values: list[dict], job_options: list[str], region: str,
               resource_id: str = "", settings_path: str | None = None) -> Plan:
    """Everything a launch sends. `target`: `cluster` (run_job_flow), `steps`
    (add_job_flow_steps on cluster `resource_id`) or `serverless` (start_job_run on
    application `resource_id`). Every setting it lacks is named in one `JobError`, with where
    to set it (`settings_path`: the settings file read)."""
    if target not in TARGETS:
        raise JobError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
    missing = missing_settings(settings, target, template_name, region)
    if missing:
        raise JobError(missing_message(missing, TARGETS[target], settings_path))
    steps = render_steps(settings, target, template_name, step_values, job_options, region)
    if target != "serverless" and len(steps) > MAX_ACTIVE_STEPS:
        raise JobError(f"{len(steps)} steps are more than the {MAX_ACTIVE_STEPS} a cluster "
                       "takes at once (PENDING and RUNNING): launch at most "
                       f"{MAX_ACTIVE_STEPS} shards at a time with --shard, or use --serverless")
    archive = settings.package.python_env != "bootstrap"
    uploads = package.uploads(settings.package.dir, code_root(settings),
                              settings.package.job_config, with_env_archive=archive,
                              node_python=settings.package.node_python)
    python = python_description(settings, target)
    if target == "steps":
        return Plan(uploads, "add_job_flow_steps",
                    [add_job_flow_steps_request(resource_id, steps)], python,
                    release_label=settings.cluster.release_label)
    configurations = load_configurations(settings.cluster.configurations)
    if target == "serverless":
        return Plan(uploads, "start_job_run",
                    start_job_run_requests(settings, resource_id, steps, configurations), python,
                    settings.steps.concurrency, settings.serverless.require_custom_image)
    wheel = package.wheel_file(Path(settings.package.dir)).name
    return Plan(uploads, "run_job_flow",
                [run_job_flow_request(settings, steps, configurations, wheel)], python)


def serverless_application_problem(application: dict, require_custom_image: bool) -> str | None:
    """Why an EMR Serverless application (get_application's `application`) cannot run the
    jobs, or None: an ARM64 (Graviton) architecture, or, when required, no custom image for
    both the driver and the executors (`imageConfiguration`, or one in each worker type's
    specification)."""
    app_id = application.get("applicationId", "?")
    if application.get("architecture", "X86_64") != "X86_64":
        return (f"EMR Serverless application {app_id} is {application['architecture']}: "
                "tensorflow-cpu has no aarch64 wheel and the packed environment is x86_64; "
                "use an X86_64 application")
    if not require_custom_image or application.get("imageConfiguration"):
        return None
    workers = application.get("workerTypeSpecifications", {})
    if all(workers.get(kind, {}).get("imageConfiguration") for kind in ("Driver", "Executor")):
        return None
    return (f"EMR Serverless application {app_id} ({application.get('releaseLabel', '?')}) runs "
            "no custom image: its Python is 3.9, the packed environment's bin/python needs "
            "package.node_python; build the image of emr/serverless.Dockerfile and set it with "
            "update-application --image-configuration (docs/EMR.md)")
