"""A Spark standalone cluster on this machine: a master and two workers, each its own JVM with
one core, on loopback, started from the venv's pip-installed pyspark with `spark-class` (its
package directory is SPARK_HOME; nothing else is downloaded).

    python dev/spark_cluster.py up     # start, wait until both workers are registered, print
                                       # SPARK_MASTER=spark://... and SPARK_MASTER_UI=http://...
    python dev/spark_cluster.py down   # stop what `up` started (by the pids it recorded)

`make cluster-up` / `make cluster-down` and `dev/services.py cluster-up|cluster-down` run the
same. Ports are free ones chosen at start and kept in `<run dir>/cluster.json` (run dir
build/cluster by default); each daemon's log and pid file, and each worker's work directory
(its executors' stdout and stderr under `<app id>/<executor id>/`), are in the run directory.

The daemons start with an environment stripped of AWS credentials, S3 endpoints, PYTHONPATH and
PySpark's interpreter variables, so the executors' Python, imagegraph and the S3 credentials can
only come from the submitted job (the packed environment and the job's configuration), as on a
real cluster. Memory for the 2-core, 24 GiB development machine: 512 MiB per daemon JVM and
`WORKER_MEMORY` for each worker's executor, beside the Python workers, the driver and the local
servers.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import pyspark
import services

SPARK_HOME = Path(pyspark.__file__).resolve().parent
SPARK_CLASS = SPARK_HOME / "bin" / "spark-class"
DEFAULT_RUN_DIR = services.ROOT / "build" / "cluster"
WORKERS = 2
WORKER_CORES = 1
WORKER_MEMORY = "3g"       # what each worker offers its executor's JVM
DAEMON_MEMORY = "512m"     # the master's and each worker's own JVM heap
START_TIMEOUT_S = 120.0
# Variables a developer's shell or the tests may hold that would let the executors find
# credentials, endpoints or Python packages anywhere but in what the job ships.
_STRIPPED_PREFIXES = ("AWS_", "S3_", "GREMLIN_", "PYSPARK_", "SPARK_")
_STRIPPED_NAMES = frozenset({"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"})


class ClusterError(RuntimeError):
    """The cluster could not be started, or a worker did not register."""


@dataclass(frozen=True)
class Cluster:
    """A running cluster: the master's URL (`spark://127.0.0.1:PORT`), its web UI's URL, the run
    directory, and each worker's name and ports (RPC, web UI)."""

    master_url: str
    master_ui: str
    run_dir: str
    worker_ports: dict

    def env(self) -> dict[str, str]:
        return {"SPARK_MASTER": self.master_url, "SPARK_MASTER_UI": self.master_ui}

    def worker_dir(self, name: str) -> Path:
        """The work directory of worker `name` (`worker-1`, ...): `<app id>/<executor id>/`."""
        return Path(self.run_dir) / name

    def worker_pid(self, name: str) -> int:
        """The pid of worker `name`'s JVM."""
        return int((Path(self.run_dir) / f"{name}.pid").read_text())

    def master_state(self) -> dict:
        """The master's JSON status (`/json`: workers with their state, applications)."""
        with urllib.request.urlopen(self.master_ui + "/json", timeout=5) as response:
            return json.load(response)

    def alive_workers(self) -> int:
        return sum(1 for worker in self.master_state()["workers"] if worker["state"] == "ALIVE")


def stripped_environment() -> dict[str, str]:
    """This process's environment without credentials, endpoints or Python variables: what a
    cluster's daemons start with."""
    return {key: value for key, value in os.environ.items()
            if key not in _STRIPPED_NAMES and not key.startswith(_STRIPPED_PREFIXES)}


def _daemon_env() -> dict[str, str]:
    return {**stripped_environment(), "SPARK_HOME": str(SPARK_HOME),
            "SPARK_DAEMON_MEMORY": DAEMON_MEMORY, "SPARK_LOCAL_IP": services.HOST}


def _spawn(name: str, argv: list[str], run_dir: Path) -> subprocess.Popen:
    """Start `argv` (spark-class execs the JVM, so the pid is the JVM's), logging to
    `<name>.log` and recording `<name>.pid`."""
    log = open(run_dir / f"{name}.log", "wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            cwd=run_dir, env=_daemon_env(), start_new_session=True)
    (run_dir / f"{name}.pid").write_text(str(proc.pid))
    return proc


def log_errors(log: Path, limit: int = 6) -> str:
    """The last `limit` lines of a daemon's `log` that name an error (ERROR, FATAL, Exception,
    `Caused by`), each on its own indented line after a colon; "" when there are none."""
    marks = ("ERROR", "FATAL", "Exception", "Caused by")
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines()
             if any(mark in line for mark in marks)] if log.is_file() else []
    return ":" + "".join(f"\n    {line}" for line in lines[-limit:]) if lines else ""


def wait_for(what: str, ready, procs: dict[str, subprocess.Popen], run_dir: Path,
             timeout_s: float = START_TIMEOUT_S) -> None:
    """Poll `ready()` every half second until it is true; raise `ClusterError` when one of the
    daemons `procs` (by name, logging to `<run_dir>/<name>.log`) exits first or `timeout_s`
    passes. `ready` may raise OSError while a web server is not up yet."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        for name, proc in procs.items():
            if proc.poll() is not None:
                log = run_dir / f"{name}.log"
                raise ClusterError(f"{name} exited with code {proc.returncode} while waiting "
                                   f"for {what}; see {log}{log_errors(log)}")
        try:
            if ready():
                return
        except OSError as exc:
            last_error = exc
        time.sleep(0.5)
    raise ClusterError(f"{what} did not happen within {timeout_s:.0f} s "
                       f"(last error: {last_error}); see the logs in {run_dir}")


def start_worker(cluster: Cluster, name: str) -> subprocess.Popen:
    """Start worker `name` with its recorded ports (again, after it was killed); return when the
    master counts it alive."""
    port, ui_port = cluster.worker_ports[name]
    run_dir = Path(cluster.run_dir)
    alive_before = cluster.alive_workers()
    worker = _spawn(name, [
        str(SPARK_CLASS), "org.apache.spark.deploy.worker.Worker", "--host", services.HOST,
        "--port", str(port), "--webui-port", str(ui_port), "--cores", str(WORKER_CORES),
        "--memory", WORKER_MEMORY, "--work-dir", str(cluster.worker_dir(name)),
        cluster.master_url], run_dir)
    wait_for(f"{name} to register", lambda: cluster.alive_workers() > alive_before,
             {name: worker}, run_dir)
    return worker


def start(run_dir: Path = DEFAULT_RUN_DIR) -> Cluster:
    """Start the master and `WORKERS` workers on free loopback ports; return once every worker
    is registered with the master."""
    if not SPARK_CLASS.is_file():
        raise ClusterError(f"{SPARK_CLASS} is missing: is pyspark installed in the venv?")
    run_dir.mkdir(parents=True, exist_ok=True)
    if any(run_dir.glob("*.pid")):
        raise ClusterError(f"a cluster is already running from {run_dir} (pid files there); "
                           "stop it first (`make cluster-down`)")
    master_port, ui_port, *worker_ports = services.free_ports(2 + 2 * WORKERS)
    cluster = Cluster(
        master_url=f"spark://{services.HOST}:{master_port}",
        master_ui=f"http://{services.HOST}:{ui_port}", run_dir=str(run_dir),
        worker_ports={f"worker-{n}": (worker_ports[2 * n - 2], worker_ports[2 * n - 1])
                      for n in range(1, WORKERS + 1)})
    (run_dir / "cluster.json").write_text(json.dumps(asdict(cluster), indent=2))
    try:
        master = _spawn("master", [
            str(SPARK_CLASS), "org.apache.spark.deploy.master.Master", "--host", services.HOST,
            "--port", str(master_port), "--webui-port", str(ui_port)], run_dir)
        wait_for("the master to answer", lambda: cluster.master_state() is not None,
                 {"master": master}, run_dir)
        for name in cluster.worker_ports:
            start_worker(cluster, name)
    except ClusterError:
        stop(run_dir)
        raise
    return cluster


def kill_worker(cluster: Cluster, name: str) -> None:
    """SIGKILL worker `name`'s JVM, as a lost node: its executor then exits on its own (an
    executor stops when it loses its worker)."""
    os.kill(cluster.worker_pid(name), signal.SIGKILL)


def stop(run_dir: Path = DEFAULT_RUN_DIR) -> None:
    """Stop the workers and the master started from `run_dir` (SIGTERM to each daemon's process
    group, with its executors; SIGKILL after 10 s), then delete the environments the executors
    unpacked."""
    for pid_file in sorted(run_dir.glob("worker-*.pid")) + [run_dir / "master.pid"]:
        services.stop_one(pid_file.stem, run_dir)
    # each executor's unpacked Python environment (2 GB); its stdout and stderr stay
    for unpacked in run_dir.glob("worker-*/app-*/*/environment"):
        shutil.rmtree(unpacked, ignore_errors=True)


def up_down_main(argv: list[str] | None, module: str, doc: str, start, stop) -> int:
    """A local cluster's command line: `up` calls `start()` and prints its `env()` as shell
    lines, `down` calls `stop()`; a `ClusterError` is one line `<module>: ...` and exit 1."""
    parser = argparse.ArgumentParser(prog=module, description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["up", "down"])
    args = parser.parse_args(argv)
    try:
        if args.action == "up":
            for key, value in start().env().items():
                print(f"{key}={value}")
        else:
            stop()
    except ClusterError as exc:
        print(f"{module}: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    return up_down_main(argv, "spark_cluster", __doc__, start, stop)


if __name__ == "__main__":
    sys.exit(main())
