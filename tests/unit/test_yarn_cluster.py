"""dev/yarn_cluster.py's configuration: what makes the local YARN behave as EMR's."""
import subprocess
import xml.etree.ElementTree as ET

import pytest
import services
import yarn_cluster
from spark_cluster import ClusterError, wait_for


def _properties(path) -> dict[str, str]:
    return {prop.findtext("name"): prop.findtext("value")
            for prop in ET.parse(path).getroot().iter("property")}


def test_each_node_manager_has_its_own_ports_and_directories_and_enforces_memory(tmp_path):
    (tmp_path / "conf").mkdir()
    ports = {name: 20000 + n for n, name in enumerate(
        ["namenode", "namenode_http", "datanode", "datanode_http", "datanode_ipc", "rm",
         "rm_scheduler", "rm_tracker", "rm_admin", "rm_http", "nm1", "nm1_localizer", "nm1_http",
         "nm2", "nm2_localizer", "nm2_http"])}
    conf_dir = yarn_cluster._write_configuration(tmp_path, ports)
    assert _properties(conf_dir / "core-site.xml")["fs.defaultFS"] == "hdfs://127.0.0.1:20000"
    nodes = [_properties(tmp_path / f"nm-{n}" / "conf" / "yarn-site.xml") for n in (1, 2)]
    for key in ("yarn.nodemanager.address", "yarn.nodemanager.localizer.address",
                "yarn.nodemanager.webapp.address", "yarn.nodemanager.local-dirs",
                "yarn.nodemanager.log-dirs"):
        assert nodes[0][key] != nodes[1][key], key
    for node in nodes:
        assert node["yarn.resourcemanager.resource-tracker.address"] == "127.0.0.1:20007"
        # as EMR: physical memory enforced over the container's process tree, virtual not
        assert node["yarn.nodemanager.pmem-check-enabled"] == "true"
        assert node["yarn.nodemanager.vmem-check-enabled"] == "false"
        # else Hadoop 3.3.4 leaves memory to cgroups and never runs the check above
        assert node["yarn.nodemanager.resource.memory.enforced"] == "false"
    scheduler = _properties(conf_dir / "capacity-scheduler.xml")
    # a 1 GiB driver plus overhead fits the application master's share of 12 GiB
    assert float(scheduler["yarn.scheduler.capacity.maximum-am-resource-percent"]) == 0.5


def test_the_ports_of_one_cluster_are_distinct():
    # Chosen one probe at a time, 500 ports in the ephemeral range repeat a few times on average;
    # one repeated port makes the second daemon given it exit at start.
    ports = services.free_ports(500)
    assert len(set(ports)) == 500


def test_a_daemon_that_exits_at_start_names_its_errors(tmp_path):
    (tmp_path / "nodemanager-1.log").write_text(
        "2026-12-06 INFO nodemanager.NodeManager: STARTUP_MSG\n"
        "2026-12-06 ERROR nodemanager.NodeManager: Error starting NodeManager\n"
        "java.net.BindException: Port in use: 127.0.0.1:40001\n"
        "\tat org.apache.hadoop.http.HttpServer2.bind(HttpServer2.java:1)\n"
        "Caused by: java.net.BindException: Address already in use\n")
    exited = subprocess.Popen(["false"])
    exited.wait()
    with pytest.raises(ClusterError) as raised:
        wait_for("2 NodeManagers to register", lambda: False, {"nodemanager-1": exited},
                 tmp_path, timeout_s=5)
    assert str(raised.value).splitlines()[1:] == [
        "    2026-12-06 ERROR nodemanager.NodeManager: Error starting NodeManager",
        "    java.net.BindException: Port in use: 127.0.0.1:40001",
        "    Caused by: java.net.BindException: Address already in use"]
