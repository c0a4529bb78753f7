"""A YARN and HDFS cluster on this machine, as an EMR cluster runs Spark steps: a ResourceManager,
two NodeManagers, a NameNode and a DataNode, each its own JVM on loopback, from Hadoop 3.3.4's
jars in build/hadoop (`make yarn-jars`: the Hadoop pyspark 3.5.6 is built against).

    python dev/yarn_cluster.py up     # start, wait until HDFS is out of safe mode and both
                                      # NodeManagers are registered; print HADOOP_CONF_DIR=...
    python dev/yarn_cluster.py down   # stop what `up` started (by the pids it recorded)

`make yarn-up` / `make yarn-down` run the same. `spark-submit --master yarn` finds the cluster
through the printed HADOOP_CONF_DIR (core-site.xml names HDFS as the default file system, so
Spark stages `--archives` and `--files` in HDFS, as on EMR).

What matches EMR: containers are separate processes launched by the NodeManagers, so a
`--deploy-mode cluster` driver runs in the application master's container; each NodeManager
enforces its containers' physical memory (`pmem-check`, the whole process tree: the executors'
Python workers count; polled each second, with `resource.memory.enforced` off, since otherwise
Hadoop 3.3.4 skips the check and leaves memory to a cgroups OOM killer that is not set up) and
not virtual memory, as EMR configures it; the application master may
use up to half the cluster (a 1 GiB driver fits). What differs: both NodeManagers share this host,
so Spark's external shuffle service (one fixed port per host) cannot run and dynamic allocation
stays off; a NodeManager's local dir counts as full only when the disk is (YARN's default, 90%
used, would leave the NodeManagers of a shared disk no dir to localize into), and `up` stops
with the health report of a NodeManager that is unhealthy all the same.

Ports are free ones chosen at start and kept in `<run dir>/yarn.json` (run dir build/yarn by
default), beside the configuration (`conf/`, and each NodeManager's own `nm-N/conf/`), each
daemon's log and pid file, HDFS's storage and each NodeManager's container logs
(`nm-N/logs/<application id>/<container id>/{stdout,stderr}`). The daemons start without AWS
credentials, S3 endpoints or Python variables (as dev/spark_cluster.py's do).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import services
from spark_cluster import ClusterError, stripped_environment, up_down_main, wait_for

HADOOP_JARS = services.ROOT / "build" / "hadoop"
DEFAULT_RUN_DIR = services.ROOT / "build" / "yarn"
NODE_MANAGERS = 2
NODE_MEMORY_MB = 6144      # what each NodeManager offers its containers
NODE_VCORES = 2
DAEMON_HEAP = "-Xmx384m"
# Hadoop 3.3's web apps (Guice's generated classes) and RPC reflect into the JDK, which Java 17
# refuses unless its packages are opened.
JAVA17_OPENS = [f"--add-opens=java.base/{package}=ALL-UNNAMED" for package in (
    "java.lang", "java.lang.reflect", "java.io", "java.net", "java.nio", "java.util",
    "java.util.concurrent", "sun.nio.ch")]
START_TIMEOUT_S = 180.0
MONITOR_INTERVAL_MS = 1000  # how often a NodeManager measures its containers' memory
DISK_FULL_PERCENT = 100.0   # when a NodeManager's local dir counts as full (YARN's default: 90)


@dataclass(frozen=True)
class YarnCluster:
    """A running cluster: its run directory, its client configuration directory (what
    HADOOP_CONF_DIR names), HDFS's URI (`hdfs://127.0.0.1:PORT`) and the web addresses of the
    ResourceManager and the NameNode."""

    run_dir: str
    conf_dir: str
    hdfs: str
    resource_manager: str
    name_node: str

    def env(self) -> dict[str, str]:
        return {"HADOOP_CONF_DIR": self.conf_dir, "YARN_CONF_DIR": self.conf_dir}

    def rest(self, path: str) -> dict:
        """The ResourceManager's REST answer at `/ws/v1/cluster/<path>` (with the JAXB here,
        without the root element the REST docs show: `metrics` answers `{"activeNodes": ...}`,
        not `{"clusterMetrics": {...}}`)."""
        url = f"{self.resource_manager}/ws/v1/cluster/{path}"
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.load(response)

    def container_logs(self, application_id: str) -> dict[str, Path]:
        """Each container's log directory of application `application_id`, by container id,
        across the NodeManagers."""
        return {path.name: path
                for path in Path(self.run_dir).glob(f"nm-*/logs/{application_id}/container_*")}

    def driver_output(self, application_id: str, stream: str) -> str:
        """A cluster-mode driver's `stream` (stdout, stderr): the first container's, the
        application master's (Spark's PythonRunner merges the driver's stderr into stdout)."""
        (master,) = [path for name, path in self.container_logs(application_id).items()
                     if name.endswith("_01_000001")]
        return (master / stream).read_text(errors="replace")


def _site(properties: dict[str, object]) -> str:
    """A Hadoop `*-site.xml` document of `properties`."""
    body = "".join(f"  <property><name>{escape(name)}</name><value>{escape(str(value))}</value>"
                   "</property>\n" for name, value in properties.items())
    return f'<?xml version="1.0"?>\n<configuration>\n{body}</configuration>\n'


def _java_home() -> str:
    """JAVA_HOME, or the JDK of the `java` on PATH: the containers' launch scripts run
    `$JAVA_HOME/bin/java`."""
    if os.environ.get("JAVA_HOME"):
        return os.environ["JAVA_HOME"]
    java = shutil.which("java")
    if java is None:
        raise ClusterError("no java on PATH and JAVA_HOME is not set")
    return str(Path(java).resolve().parent.parent)


def _write_configuration(run_dir: Path, ports: dict[str, int]) -> Path:
    """The client configuration in `run_dir/conf` and each NodeManager's in `nm-N/conf`;
    returns the client configuration's directory."""
    host = services.HOST
    core = {"fs.defaultFS": f"hdfs://{host}:{ports['namenode']}",
            "hadoop.tmp.dir": run_dir / "tmp"}
    hdfs = {"dfs.replication": 1,
            "dfs.namenode.name.dir": (run_dir / "hdfs" / "name").as_uri(),
            "dfs.datanode.data.dir": (run_dir / "hdfs" / "data").as_uri(),
            "dfs.namenode.rpc-address": f"{host}:{ports['namenode']}",
            "dfs.namenode.http-address": f"{host}:{ports['namenode_http']}",
            "dfs.datanode.address": f"{host}:{ports['datanode']}",
            "dfs.datanode.http.address": f"{host}:{ports['datanode_http']}",
            "dfs.datanode.ipc.address": f"{host}:{ports['datanode_ipc']}",
            "dfs.datanode.hostname": host,
            "dfs.namenode.datanode.registration.ip-hostname-check": "false",
            "dfs.namenode.safemode.extension": 0}
    yarn = {"yarn.resourcemanager.hostname": host,
            "yarn.resourcemanager.address": f"{host}:{ports['rm']}",
            "yarn.resourcemanager.scheduler.address": f"{host}:{ports['rm_scheduler']}",
            "yarn.resourcemanager.resource-tracker.address": f"{host}:{ports['rm_tracker']}",
            "yarn.resourcemanager.admin.address": f"{host}:{ports['rm_admin']}",
            "yarn.resourcemanager.webapp.address": f"{host}:{ports['rm_http']}",
            "yarn.resourcemanager.nodemanagers.heartbeat-interval-ms": 500,
            "yarn.scheduler.minimum-allocation-mb": 128,
            "yarn.scheduler.maximum-allocation-mb": NODE_MEMORY_MB,
            "yarn.nodemanager.resource.memory-mb": NODE_MEMORY_MB,
            "yarn.nodemanager.resource.cpu-vcores": NODE_VCORES,
            "yarn.nodemanager.pmem-check-enabled": "true",
            # true (the default) leaves memory to cgroups' OOM killer, which is not set up
            # here (nor on EMR), and turns the polling check above off
            "yarn.nodemanager.resource.memory.enforced": "false",
            "yarn.nodemanager.vmem-check-enabled": "false",
            "yarn.nodemanager.container-monitor.interval-ms": MONITOR_INTERVAL_MS,
            # a local dir counts as full only at 100% used: at the default 90% a shared disk
            # leaves no usable local dir, and every container fails to localize with "No space
            # available in any of the local directories" (turning the health check off, as
            # `disk-health-checker.enable` does, keeps the node up but not its dirs usable)
            "yarn.nodemanager.disk-health-checker.max-disk-utilization-per-disk-percentage":
                DISK_FULL_PERCENT,
            "yarn.nodemanager.disk-health-checker.min-free-space-per-disk-mb": 0,
            # each application localizes its own copy of the 2 GB environment: delete the
            # copies of finished applications within a minute rather than keep 10 GB of them
            "yarn.nodemanager.localizer.cache.target-size-mb": 1024,
            "yarn.nodemanager.localizer.cache.cleanup.interval-ms": 60000,
            "yarn.log-aggregation-enable": "false"}
    scheduler = {"yarn.scheduler.capacity.root.queues": "default",
                 "yarn.scheduler.capacity.root.default.capacity": 100,
                 "yarn.scheduler.capacity.root.default.maximum-capacity": 100,
                 "yarn.scheduler.capacity.maximum-am-resource-percent": 0.5,
                 "yarn.scheduler.capacity.node-locality-delay": -1}
    log4j = ("log4j.rootLogger=INFO,console\n"
             "log4j.appender.console=org.apache.log4j.ConsoleAppender\n"
             "log4j.appender.console.layout=org.apache.log4j.PatternLayout\n"
             "log4j.appender.console.layout.ConversionPattern=%d{ISO8601} %p %c{2}: %m%n\n")
    conf_dir = run_dir / "conf"
    shared = {"core-site.xml": _site(core), "hdfs-site.xml": _site(hdfs),
              "yarn-site.xml": _site(yarn), "capacity-scheduler.xml": _site(scheduler),
              "log4j.properties": log4j}
    for name, text in shared.items():
        (conf_dir / name).write_text(text)
    for n in range(1, NODE_MANAGERS + 1):
        node_dir = run_dir / f"nm-{n}"
        node = {**yarn,
                "yarn.nodemanager.hostname": host,
                "yarn.nodemanager.address": f"{host}:{ports[f'nm{n}']}",
                "yarn.nodemanager.localizer.address": f"{host}:{ports[f'nm{n}_localizer']}",
                "yarn.nodemanager.webapp.address": f"{host}:{ports[f'nm{n}_http']}",
                "yarn.nodemanager.local-dirs": node_dir / "local",
                "yarn.nodemanager.log-dirs": node_dir / "logs",
                "yarn.nodemanager.recovery.enabled": "false"}
        (node_dir / "conf").mkdir(parents=True)
        for name, text in {**shared, "yarn-site.xml": _site(node)}.items():
            (node_dir / "conf" / name).write_text(text)
    return conf_dir


def _spawn(name: str, main_class: str, conf_dir: Path, run_dir: Path,
           args: tuple[str, ...] = ()) -> subprocess.Popen:
    """Start a Hadoop daemon's JVM (`main_class`, configuration from `conf_dir`), logging to
    `<name>.log` and recording `<name>.pid`."""
    env = {**stripped_environment(), "JAVA_HOME": _java_home(),
           "HADOOP_CONF_DIR": str(conf_dir)}
    argv = [str(Path(env["JAVA_HOME"]) / "bin" / "java"), DAEMON_HEAP, *JAVA17_OPENS,
            f"-Dhadoop.log.dir={run_dir}", "-cp", f"{conf_dir}:{HADOOP_JARS}/*", main_class,
            *args]
    log = open(run_dir / f"{name}.log", "wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            cwd=run_dir, env=env, start_new_session=True)
    (run_dir / f"{name}.pid").write_text(str(proc.pid))
    return proc


def _hdfs_ready(cluster: YarnCluster) -> bool:
    """Whether the NameNode is out of safe mode with a live DataNode."""
    url = f"{cluster.name_node}/jmx?qry=Hadoop:service=NameNode,name=FSNamesystemState"
    with urllib.request.urlopen(url, timeout=5) as response:
        beans = json.load(response)["beans"]  # none while the NameNode starts
    return any(state["NumLiveDataNodes"] >= 1 and state["FSState"] == "Operational"
               for state in beans)


def _nodes_ready(cluster: YarnCluster) -> bool:
    """Whether all NodeManagers are registered; raises `ClusterError` with the health report of
    an unhealthy one (e.g. its local dirs on a disk fuller than DISK_FULL_PERCENT)."""
    metrics = cluster.rest("metrics")
    if metrics["unhealthyNodes"]:
        reports = sorted({node["healthReport"]
                          for node in cluster.rest("nodes?states=UNHEALTHY")["nodes"]})
        raise ClusterError(f"a NodeManager is unhealthy: {'; '.join(reports)}")
    return metrics["activeNodes"] >= NODE_MANAGERS


def start(run_dir: Path = DEFAULT_RUN_DIR) -> YarnCluster:
    """Format HDFS and start its two daemons, then the ResourceManager and the NodeManagers, on
    free loopback ports; return once all are up."""
    if not (HADOOP_JARS / "hadoop-client-minicluster-3.3.4.jar").is_file():
        raise ClusterError(f"{HADOOP_JARS} has no Hadoop jars: run `make yarn-jars`")
    if any(run_dir.glob("*.pid")):
        raise ClusterError(f"a cluster is already running from {run_dir} (pid files there); "
                        "stop it first (`make yarn-down`)")
    shutil.rmtree(run_dir, ignore_errors=True)
    (run_dir / "conf").mkdir(parents=True)
    names = ["namenode", "namenode_http", "datanode", "datanode_http", "datanode_ipc", "rm",
             "rm_scheduler", "rm_tracker", "rm_admin", "rm_http",
             *(f"nm{n}{part}" for n in range(1, NODE_MANAGERS + 1)
               for part in ("", "_localizer", "_http"))]
    ports = dict(zip(names, services.free_ports(len(names))))
    conf_dir = _write_configuration(run_dir, ports)
    cluster = YarnCluster(run_dir=str(run_dir), conf_dir=str(conf_dir),
                          hdfs=f"hdfs://{services.HOST}:{ports['namenode']}",
                          resource_manager=f"http://{services.HOST}:{ports['rm_http']}",
                          name_node=f"http://{services.HOST}:{ports['namenode_http']}")
    (run_dir / "yarn.json").write_text(json.dumps(asdict(cluster), indent=2))
    namenode = "org.apache.hadoop.hdfs.server.namenode.NameNode"
    formatting = _spawn("format", namenode, conf_dir, run_dir, ("-format", "-nonInteractive"))
    if formatting.wait() != 0:
        raise ClusterError(f"formatting HDFS failed; see {run_dir / 'format.log'}")
    (run_dir / "format.pid").unlink()
    try:
        hdfs = {"namenode": _spawn("namenode", namenode, conf_dir, run_dir),
                "datanode": _spawn("datanode", "org.apache.hadoop.hdfs.server.datanode.DataNode",
                                   conf_dir, run_dir)}
        yarn = {"resourcemanager": _spawn(
            "resourcemanager", "org.apache.hadoop.yarn.server.resourcemanager.ResourceManager",
            conf_dir, run_dir)}
        for n in range(1, NODE_MANAGERS + 1):
            yarn[f"nodemanager-{n}"] = _spawn(
                f"nodemanager-{n}", "org.apache.hadoop.yarn.server.nodemanager.NodeManager",
                run_dir / f"nm-{n}" / "conf", run_dir)
        wait_for("HDFS to leave safe mode with a live DataNode", lambda: _hdfs_ready(cluster),
                 hdfs, run_dir, START_TIMEOUT_S)
        wait_for(f"{NODE_MANAGERS} NodeManagers to register", lambda: _nodes_ready(cluster),
                 yarn, run_dir, START_TIMEOUT_S)
    except ClusterError:
        stop(run_dir)
        raise
    return cluster


def stop(run_dir: Path = DEFAULT_RUN_DIR) -> None:
    """Stop the daemons started from `run_dir` (SIGTERM to each one's process group, with its
    containers; SIGKILL after 10 s), then delete the NodeManagers' local dirs (the localized
    archives, GBs each); the containers' logs stay."""
    for pid_file in sorted(run_dir.glob("*.pid")):
        services.stop_one(pid_file.stem, run_dir)
    for local_dir in run_dir.glob("nm-*/local"):
        shutil.rmtree(local_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    return up_down_main(argv, "yarn_cluster", __doc__, start, stop)


if __name__ == "__main__":
    sys.exit(main())
