"""Jobs submitted to the local standalone cluster (dev/spark_cluster.py) or the local YARN
cluster (dev/yarn_cluster.py) exactly as the EMR launcher submits them.

The step is rendered by the launcher's own code (`imagegraph.emr.requests.render_steps` from
emr/steps/<template>.json, checked against the job's parser) with `package.code_uri` pointing
at a local directory laid out as the launcher uploads the package (`imagegraph.emr.package`:
build/package's files, the job configuration under conf/), so its spark-submit options are
used as rendered: `--archives <code>/imagegraph-env.tar.gz#environment`,
`spark.executorEnv.PYSPARK_PYTHON=./environment/bin/python`, `--files <code>/conf/<config>`,
the entry file and the job's arguments. What a standalone cluster needs instead of YARN comes
through the settings' own `steps.spark_submit_options`, after the rendered ones: the master,
client deploy mode (a standalone cluster has no cluster mode for Python), the driver on
loopback, executors that fit the 1-core workers (the step's executor cores and memory are
sized for an EMR node) and quiet driver logs.

On YARN the step runs as rendered, in cluster mode: the driver runs in the application
master's container with the archive's Python (the rendered `spark.yarn.appMasterEnv`), and
YARN stages the archive and the configuration in HDFS. What the local YARN needs beside the
rendered options: Spark's jars from this venv's pyspark on the nodes (`spark.yarn.jars=local:`,
as EMR has Spark's jars on every node), containers that fit the local NodeManagers, dynamic
allocation off (no shuffle service: dev/yarn_cluster.py), and the local servers' variables in
the driver's container (`spark.yarn.appMasterEnv.*`), where the configuration reads them.

On the standalone cluster the driver runs on this machine with this interpreter
(PYSPARK_DRIVER_PYTHON, the venv's) in a working directory that holds the `--files`, as YARN
puts them into the driver's container; the executors run the packed environment's Python, with
imagegraph from its wheel. PySpark 3.5 takes the executors' interpreter from the driver's
PYSPARK_PYTHON, not from `spark.executorEnv.PYSPARK_PYTHON` (with that alone they run `python3`
from PATH); the rendered `spark.yarn.appMasterEnv.PYSPARK_PYTHON` sets it for a YARN driver,
and a client-mode driver gets the same `./environment/bin/python` from its environment, as
PySpark's package-management guide does for client mode. A client-mode driver unpacks
`--archives` too (34,000 files) into its scratch directory, which it may fail to delete within
Spark's 30 s shutdown hook on a busy machine: that directory (SPARK_LOCAL_DIRS) is `<work
dir>/driver-local`, emptied before each submission.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import services
from spark_cluster import SPARK_HOME, WORKER_CORES, Cluster
from yarn_cluster import YarnCluster

from imagegraph.emr import package
from imagegraph.emr.requests import ARCHIVE_PYTHON, render_steps
from imagegraph.emr.settings import load_settings
from imagegraph.emr.templates import split_spark_submit

ROOT = services.ROOT
PACKAGE_DIR = ROOT / "build" / "package"
LOCAL_CONFIG = ROOT / "conf" / "local.yaml"
REGION = "us-east-1"
EXECUTOR_MEMORY = "2g"     # within spark_cluster.WORKER_MEMORY
# YARN containers, within yarn_cluster.NODE_MEMORY_MB: heap plus overhead, the overhead holding
# the executor's Python workers (TensorFlow and the model), which YARN's memory check counts.
YARN_EXECUTORS = 2
YARN_EXECUTOR_MEMORY = "1g"
YARN_EXECUTOR_OVERHEAD = "1536m"
YARN_DRIVER_MEMORY = "1g"
YARN_DRIVER_OVERHEAD = "1g"


@dataclass(frozen=True)
class Submission:
    """One spark-submit: its arguments, working directory and environment."""

    argv: list
    cwd: Path
    env: dict

    def run(self, log: Path) -> subprocess.Popen:
        """Start spark-submit with its stdout and stderr in `log`."""
        with open(log, "wb") as handle:
            return subprocess.Popen(self.argv, cwd=self.cwd, env=self.env, stdout=handle,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def missing_package(package_dir: Path = PACKAGE_DIR) -> str:
    """Why the jobs cannot be submitted from `package_dir`, or "" when they can."""
    archive = package_dir / package.ENV_ARCHIVE
    if archive.is_file():
        return ""
    return f"{archive} is missing: run `make package` (`make test` does)"


def lay_out_code(code_dir: Path, package_dir: Path = PACKAGE_DIR,
                 job_config: Path = LOCAL_CONFIG) -> str:
    """Links in `code_dir` to the package's files and the job configuration, under the names
    the launcher uploads them to beneath `package.code_uri`; returns `code_dir`'s file:// URI."""
    names = package.package_files(package_dir, with_env_archive=True)
    links = {name.as_posix(): package_dir / name for name in names}
    links[f"{package.CONF_DIR}/{job_config.name}"] = job_config
    for name, target in links.items():
        link = code_dir / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(target.resolve())
    return code_dir.resolve().as_uri()


def standalone_options(cluster: Cluster) -> list[str]:
    """spark-submit options for the local standalone cluster, after the rendered step's own."""
    return ["--master", cluster.master_url, "--deploy-mode", "client",
            "--conf", f"spark.driver.host={services.HOST}",
            "--conf", f"spark.driver.bindAddress={services.HOST}",
            "--conf", f"spark.executor.memory={EXECUTOR_MEMORY}",
            "--conf", f"spark.executor.cores={WORKER_CORES}",
            "--driver-java-options",
            f"-Dlog4j2.configurationFile={ROOT / 'conf' / 'log4j2.properties'}"]


def yarn_options(services_env: dict, extra: tuple = ()) -> list[str]:
    """spark-submit options for the local YARN cluster, after the rendered step's own; `extra`
    last (e.g. `--conf` settings of a test)."""
    driver_env = [option for key, value in services_env.items()
                  for option in ("--conf", f"spark.yarn.appMasterEnv.{key}={value}")]
    return ["--master", "yarn", "--conf", f"spark.yarn.jars=local:{SPARK_HOME / 'jars'}/*",
            "--conf", "spark.dynamicAllocation.enabled=false",
            "--num-executors", str(YARN_EXECUTORS), "--conf", "spark.task.cpus=1",
            "--executor-cores", "1", "--executor-memory", YARN_EXECUTOR_MEMORY,
            "--conf", f"spark.executor.memoryOverhead={YARN_EXECUTOR_OVERHEAD}",
            "--driver-memory", YARN_DRIVER_MEMORY,
            "--conf", f"spark.driver.memoryOverhead={YARN_DRIVER_OVERHEAD}",
            "--conf", f"spark.driver.extraJavaOptions=-Dlog4j2.configurationFile="
                      f"{ROOT / 'conf' / 'log4j2.properties'}",
            *driver_env, *extra]


def unpack_node_env(package_dir: Path, node_env_dir: Path) -> None:
    """What the bootstrap action does on every node with `python_env: node_archive`: the packed
    environment unpacked into `node_env_dir` (once here: the local NodeManagers share a host)."""
    shutil.rmtree(node_env_dir, ignore_errors=True)
    node_env_dir.mkdir(parents=True)
    subprocess.run(["tar", "-xzf", str(package_dir / package.ENV_ARCHIVE), "-C",
                    str(node_env_dir)], check=True)


def _rendered_step(spark_options: list[str], template: str, values: dict, work_dir: Path,
                   services_env: dict, job_options: tuple, job_config: Path,
                   package_dir: Path, node_env_dir: Path | None = None
                   ) -> tuple[list[str], str, list[str]]:
    """The step `template` as the launcher renders it for a new cluster, with the code laid
    out in `work_dir/code` and `spark_options` after the rendered ones: (spark-submit options,
    entry file, job arguments). With `node_env_dir` the step runs the environment unpacked
    there (`python_env: node_archive`) rather than shipping the archive."""
    code_uri = lay_out_code(work_dir / "code", package_dir, job_config)
    python_env = ({"package.python_env": "node_archive", "package.node_env_dir": str(node_env_dir)}
                  if node_env_dir else {})
    settings = load_settings(None, {
        **python_env, "package.dir": str(package_dir), "package.code_uri": code_uri,
        "package.job_config": str(job_config), "steps.templates": str(ROOT / "emr" / "steps"),
        "steps.spark_submit_options": spark_options,
        "steps.gremlin_endpoint": services_env.get("GREMLIN_ENDPOINT", "")})
    (step,) = render_steps(settings, "cluster", template, [values], list(job_options), REGION)
    return split_spark_submit(step["HadoopJarStep"]["Args"])


def yarn_submission(yarn: YarnCluster, template: str, values: dict, work_dir: Path,
                    services_env: dict, job_options: tuple = (), spark_options: tuple = (),
                    job_config: Path = LOCAL_CONFIG, package_dir: Path = PACKAGE_DIR,
                    node_env_dir: Path | None = None) -> Submission:
    """spark-submit of the step `template` to the local YARN cluster `yarn`, in cluster mode as
    rendered; `spark_options` after everything else; with `node_env_dir` (see
    `unpack_node_env`) as `python_env: node_archive` renders it (see `submission` for the
    rest)."""
    options, entry, job_args = _rendered_step(
        yarn_options(services_env, spark_options), template, values, work_dir, services_env,
        job_options, job_config, package_dir, node_env_dir)
    env = {**os.environ, **yarn.env(), "SPARK_HOME": str(SPARK_HOME)}
    spark_submit = str(Path(sys.executable).parent / "spark-submit")
    return Submission([spark_submit, *options, entry, *job_args], work_dir, env)


def submission(cluster: Cluster, template: str, values: dict, work_dir: Path,
               services_env: dict, job_options: tuple = (), job_config: Path = LOCAL_CONFIG,
               package_dir: Path = PACKAGE_DIR) -> Submission:
    """spark-submit of the step `template` (`train`, `infer`, `backfill`) with the template's
    placeholders `values` (e.g. input, model, output) and extra `job_options`, to the
    standalone `cluster`. `work_dir` gets the code layout and the driver's working directory;
    `services_env` holds the local servers' variables that the job configuration reads."""
    options, entry, job_args = _rendered_step(
        standalone_options(cluster), template, values, work_dir, services_env, job_options,
        job_config, package_dir)
    driver_dir = work_dir / "driver"
    driver_dir.mkdir(parents=True, exist_ok=True)
    for uri in _option_values(options, "--files"):
        local = Path(uri.removeprefix("file://"))
        (driver_dir / local.name).unlink(missing_ok=True)
        (driver_dir / local.name).symlink_to(local)
    driver_scratch = work_dir / "driver-local"
    shutil.rmtree(driver_scratch, ignore_errors=True)
    driver_scratch.mkdir()
    env = {**os.environ, **services_env, "PYSPARK_DRIVER_PYTHON": sys.executable,
           "PYSPARK_PYTHON": ARCHIVE_PYTHON, "SPARK_LOCAL_IP": services.HOST,
           "SPARK_LOCAL_DIRS": str(driver_scratch)}
    spark_submit = str(Path(sys.executable).parent / "spark-submit")
    return Submission([spark_submit, *options, entry, *job_args], driver_dir, env)


def _option_values(options: list[str], name: str) -> list[str]:
    """The comma-separated values of every `name VALUE` in spark-submit `options`."""
    return [value for option, following in zip(options, options[1:]) if option == name
            for value in following.split(",")]
