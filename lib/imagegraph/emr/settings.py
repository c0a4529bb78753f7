"""The launcher's settings: a YAML file (emr/launcher.yaml) with `${VAR}` and `${VAR:-default}`
read from the environment, then `--set SECTION.KEY=VALUE` overrides and the dedicated flags.

Checked like the jobs' configuration (`imagegraph.sections`, each key's constraint declared on
its field): an unknown key, a wrong type or an out-of-range value raises `JobError` naming the
file (or the command line) and key.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from imagegraph.errors import JobError
from imagegraph.sections import (
    COMMAND_LINE,
    Check,
    at_least,
    between,
    list_of_strings,
    load_sections,
    one_of,
    setting,
    variables_by_key,
)

DEFAULT_PATH = "emr/launcher.yaml"
FLAGS = {"aws.region": "--region", "aws.endpoint_url": "--endpoint-url",
         "package.code_uri": "--code-uri", "package.python_env": "--python-env",
         "steps.gremlin_endpoint": "--gremlin-endpoint"}
"""The launcher's flags, by the key each one overrides."""
_BOTO3_VARIABLES = {"aws.region": ["AWS_DEFAULT_REGION"]}
PYTHON_ENVS = ("archive", "node_archive", "bootstrap")
ACTIONS_ON_FAILURE = ("CONTINUE", "CANCEL_AND_WAIT", "TERMINATE_CLUSTER")
MIN_EMR_RELEASE = 7  # emr-7.x: Amazon Linux 2023 with dnf and Python 3.11
_EMR_7_OR_LATER = Check(
    f"emr-{MIN_EMR_RELEASE}.x or later (Amazon Linux 2023, Python 3.11)",
    lambda label: (match := re.fullmatch(r"emr-(\d+)\.\d+\.\d+", label)) is not None
    and int(match.group(1)) >= MIN_EMR_RELEASE)


@dataclass(frozen=True)
class AwsSettings:
    """Where requests go. `region` empty: boto3's default chain (AWS_DEFAULT_REGION, the profile).
    `endpoint_url` empty: AWS; otherwise S3, IAM, EMR and EMR Serverless requests all go to
    this one URL (moto's server in tests). Credentials always come from boto3's default chain."""

    region: str = ""
    endpoint_url: str = ""


@dataclass(frozen=True)
class PackageSettings:
    """What is uploaded and how the jobs find their Python.

    `dir`: what `make package` built. `code_uri`: `s3://bucket/prefix` that the package, the
    entry files, the job configuration and the bootstrap action are uploaded under.
    `job_config`: the jobs' YAML file, uploaded to `<code_uri>/conf/` and shipped to the driver
    with `--files`. `python_env`: `archive` (the packed environment, through `--archives`:
    YARN copies and unpacks it for every application), `node_archive` (the bootstrap action
    unpacks the same archive once per node into `node_env_dir`; new clusters only) or
    `bootstrap` (the bootstrap action installs requirements.txt and the wheel on every node,
    under constraints.txt). `node_python`: the Python 3.11 interpreter on the nodes (and in an
    EMR Serverless custom image), which every way runs on: the one place it is named (the
    packed environment's bin/python links to it; `make package` reads it from here).
    """

    dir: str = "build/package"
    code_uri: str = ""
    job_config: str = "conf/emr.yaml"
    python_env: str = setting("archive", one_of(*PYTHON_ENVS))
    node_python: str = "/usr/bin/python3.11"
    node_env_dir: str = "/mnt/imagegraph/environment"


@dataclass(frozen=True)
class ClusterSettings:
    """A new cluster (run_job_flow). Sizes: `core_volume_gb` in GiB per core node,
    `ebs_root_volume_gb` in GiB per node (0: EMR's default), `idle_timeout_s` in seconds (only
    for `keep_alive` clusters: EMR terminates them after that long without steps).
    `os_release_label`: the nodes' Amazon Linux release, pinned (`latest`: EMR's newest).
    `service_role` and `instance_profile`: the role and instance profile that `aws emr
    create-default-roles` creates (checked in IAM before a new cluster is sent); a service
    role with AmazonEMRServicePolicy_v2 (`EMR_DefaultRole_V2`) acts only on resources tagged
    `for-use-with-amazon-emr-managed-policies=true`, a tag every cluster gets (its VPC needs
    it too, docs/EMR.md). `additional_security_groups` go on every node: the group that Neptune's
    security group admits on port 8182. `emr_managed_*_security_group`,
    `service_access_security_group`: security groups EMR manages (empty: EMR creates them;
    the primary's and the core nodes' are given together or not at all, and in a private
    subnet the service access group with them). `release_label`: an emr-7.x
    release (Amazon Linux 2023, Python 3.11). `configurations`: the JSON file of configuration
    classifications; `log4j2`: the job's logging, rendered as `spark-log4j2`.

    Capacity: `instance_fleets` false makes instance groups of `core_instance_type`; true makes
    instance fleets, the core fleet from `core_instance_types` (empty: the one type), On-Demand.
    `task_spot_count` task nodes on Spot (0: none) of `task_instance_types` (empty: the core
    nodes' types; an instance group takes the first). `managed_scaling_max` > 0 turns on
    managed scaling between the core count and that many instances (fleets: units); x86_64
    types only (tensorflow-cpu has no aarch64 wheel)."""

    name: str = "imagegraph"
    release_label: str = setting("emr-7.12.0", _EMR_7_OR_LATER)
    os_release_label: str = ""
    log_uri: str = ""
    service_role: str = "EMR_DefaultRole"
    instance_profile: str = "EMR_EC2_DefaultRole"
    subnet_id: str = ""
    key_name: str = ""
    additional_security_groups: list = setting([], list_of_strings())
    emr_managed_master_security_group: str = ""
    emr_managed_slave_security_group: str = ""
    service_access_security_group: str = ""
    primary_instance_type: str = "m6i.xlarge"
    core_instance_type: str = "m6i.2xlarge"
    core_instance_count: int = setting(2, at_least(1))
    core_volume_gb: int = setting(64, at_least(1))
    ebs_root_volume_gb: int = setting(0, at_least(0))
    instance_fleets: bool = False
    core_instance_types: list = setting([], list_of_strings())
    task_instance_types: list = setting([], list_of_strings())
    task_spot_count: int = setting(0, at_least(0))
    managed_scaling_max: int = setting(0, at_least(0))
    keep_alive: bool = False
    idle_timeout_s: int = setting(3600, between(60, 604800))  # EMR's limits
    configurations: str = "emr/configurations.json"
    log4j2: str = "conf/log4j2.properties"
    tags: dict = field(default_factory=dict)


@dataclass(frozen=True)
class StepSettings:
    """Steps and job runs. `templates`: the directory of step templates. `spark_submit_options`:
    extra spark-submit options for every step, e.g. `[--num-executors, "8"]`.
    `gremlin_endpoint`: Neptune's writer endpoint for infer and backfill
    (`wss://...:8182/gremlin`), unless `--gremlin-endpoint` is given. `concurrency`: steps or
    job runs (shards) running at once, each with its writers to Neptune: a cluster's
    StepConcurrencyLevel, and on EMR Serverless the launcher starts the next run only when one
    has ended. `driver_memory_mb`, `driver_overhead_mb`: the driver's JVM heap and its
    container's overhead in MiB; in cluster mode the Python driver (train's Keras fit, infer's
    int8 conversion and answer check) lives in the application master's container and is
    counted in the overhead."""

    templates: str = "emr/steps"
    action_on_failure: str = setting("CONTINUE", one_of(*ACTIONS_ON_FAILURE))
    concurrency: int = setting(1, between(1, 256))  # EMR's StepConcurrencyLevel
    spark_submit_options: list = setting([], list_of_strings())
    gremlin_endpoint: str = ""
    driver_memory_mb: int = setting(2048, at_least(1024))
    driver_overhead_mb: int = setting(6144, at_least(384))


@dataclass(frozen=True)
class ServerlessSettings:
    """EMR Serverless job runs (start_job_run): the runtime role, where logs go (empty: none
    kept in S3) and a run's time limit in minutes. EMR Serverless 7.x images have Python 3.9;
    the packed environment runs on `package.node_python` from the application's custom image,
    so `require_custom_image` refuses an application whose get_application shows none (false:
    the release's own image is known to have it)."""

    execution_role_arn: str = ""
    log_uri: str = ""
    timeout_minutes: int = setting(720, at_least(5))
    require_custom_image: bool = True


@dataclass(frozen=True)
class LauncherSettings:
    """All of the launcher's settings."""

    aws: AwsSettings = field(default_factory=AwsSettings)
    package: PackageSettings = field(default_factory=PackageSettings)
    cluster: ClusterSettings = field(default_factory=ClusterSettings)
    steps: StepSettings = field(default_factory=StepSettings)
    serverless: ServerlessSettings = field(default_factory=ServerlessSettings)


def load_settings(path: str | None, overrides: dict[str, Any] | None = None) -> LauncherSettings:
    """Read `path` (None: built-in defaults), apply dotted-key `overrides`, check the result."""
    settings = load_sections(LauncherSettings, path, overrides, "settings file")
    _check_together(settings, COMMAND_LINE if overrides else path or "<defaults>")
    return settings


def _check_together(settings: LauncherSettings, source: str) -> None:
    """Raise `JobError` for settings that are each valid but not together."""
    if bool(settings.cluster.emr_managed_master_security_group) != \
            bool(settings.cluster.emr_managed_slave_security_group):
        raise JobError(f"{source}: cluster.emr_managed_master_security_group and "
                       "cluster.emr_managed_slave_security_group are set together or not at "
                       "all (EMR refuses one without the other)")
    if settings.steps.action_on_failure == "TERMINATE_CLUSTER" and settings.steps.concurrency > 1:
        raise JobError(f"{source}: steps.action_on_failure TERMINATE_CLUSTER needs "
                       "steps.concurrency 1 (EMR refuses it with concurrent steps)")


def missing_message(missing: list[tuple[str, str]], target: str, path: str | None) -> str:
    """One error for every setting in `missing` ((dotted key, what is wrong), as
    `requests.missing_settings` gives them) that a launch to `target` needs, a line each naming
    where to set it: its flag or `--set`, the settings file `path` (or the environment
    variables its value there names), boto3's variable for the region."""
    variables = variables_by_key(path) if path else {}
    lines = [f"{len(missing)} setting(s) that {target} needs are missing or invalid:"]
    for key, problem in missing:
        ways = [f"pass {FLAGS[key]}" if key in FLAGS else f"pass --set {key}=VALUE"]
        named = variables.get(key, [])
        ways.append(f"export {' or '.join(named)} (which {path} reads for it)" if named
                    else f"set it in {path or 'a settings file (--settings)'}")
        ways += [f"export {name}" for name in _BOTO3_VARIABLES.get(key, [])]
        lines.append(f"  {key}: {problem}; {', '.join(ways[:-1])} or {ways[-1]}")
    return "\n".join(lines)
