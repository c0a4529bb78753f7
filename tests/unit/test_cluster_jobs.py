"""dev/cluster_jobs.py: a job for the local standalone cluster is the EMR launcher's rendered
step, with the code at a local directory laid out as the upload, plus the standalone options."""
import sys
from pathlib import Path

import cluster_jobs
from spark_cluster import Cluster
from yarn_cluster import YarnCluster

from imagegraph.emr import package

CLUSTER = Cluster(master_url="spark://127.0.0.1:7077", master_ui="http://127.0.0.1:8080",
                  run_dir="/nonexistent", worker_ports={})
SERVICES_ENV = {"S3_ENDPOINT": "http://127.0.0.1:9090",
                "GREMLIN_ENDPOINT": "ws://127.0.0.1:8182/gremlin"}


def test_infer_is_the_rendered_step_with_the_code_at_a_local_directory(emr_package, tmp_path):
    submission = cluster_jobs.submission(
        CLUSTER, "infer", {"input": "s3a://b/in/", "model": "s3a://b/m", "output": "s3a://b/o"},
        tmp_path / "work", SERVICES_ENV, ("--partitions", "2"), package_dir=emr_package)
    code = (tmp_path / "work" / "code").resolve()
    argv = submission.argv
    assert argv[0].endswith("/spark-submit")
    # the launcher's python_env options and --files, as rendered for EMR
    archive = f"file://{code}/{package.ENV_ARCHIVE}#environment"
    assert argv[argv.index("--archives") + 1] == archive
    assert "spark.executorEnv.PYSPARK_PYTHON=./environment/bin/python" in argv
    assert argv[argv.index("--files") + 1] == f"file://{code}/conf/local.yaml"
    # the standalone options come after the template's YARN cluster mode, so they win
    deploy_modes = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--deploy-mode"]
    assert deploy_modes == ["cluster", "client"]
    assert argv[argv.index("--master") + 1] == "spark://127.0.0.1:7077"
    entry = argv.index(f"file://{code}/jobs/infer.py")
    assert argv[entry + 1:] == [
        "--config", "local.yaml", "--input", "s3a://b/in/", "--model", "s3a://b/m",
        "--output", "s3a://b/o", "--gremlin-endpoint", "ws://127.0.0.1:8182/gremlin",
        "--set", "graph.region=us-east-1", "--set", "s3.region=us-east-1", "--partitions", "2"]
    # the code directory links the package as the launcher uploads it
    for name in (package.ENV_ARCHIVE, "jobs/infer.py", "imagegraph-0.1.0-py3-none-any.whl"):
        assert (code / name).resolve() == (emr_package / name).resolve()
    # the driver's working directory holds the --files, as YARN's container would
    assert submission.cwd == tmp_path / "work" / "driver"
    assert (submission.cwd / "local.yaml").read_text() == \
        (cluster_jobs.ROOT / "conf" / "local.yaml").read_text()
    # the driver runs this interpreter; the executors the driver's PYSPARK_PYTHON
    assert submission.env["PYSPARK_DRIVER_PYTHON"] == sys.executable
    assert submission.env["PYSPARK_PYTHON"] == "./environment/bin/python"
    assert submission.env["S3_ENDPOINT"] == "http://127.0.0.1:9090"
    # the driver's scratch (where it unpacks the archive too) inside the work directory
    assert submission.env["SPARK_LOCAL_DIRS"] == str(tmp_path / "work" / "driver-local")


def test_a_second_submission_relinks_the_same_layout(emr_package, tmp_path):
    for _ in range(2):
        submission = cluster_jobs.submission(
            CLUSTER, "train", {"input": "s3a://b/train/", "output": "s3a://b/m"},
            tmp_path / "work", SERVICES_ENV, package_dir=emr_package)
    assert Path(submission.argv[submission.argv.index("--files") + 1][7:]).is_file()


def test_yarn_runs_the_rendered_step_in_cluster_mode_with_the_servers_in_the_drivers_env(
        emr_package, tmp_path):
    yarn = YarnCluster(run_dir="/nonexistent", conf_dir="/nonexistent/conf",
                       hdfs="hdfs://127.0.0.1:9000", resource_manager="http://127.0.0.1:8088",
                       name_node="http://127.0.0.1:9870")
    submission = cluster_jobs.yarn_submission(
        yarn, "infer", {"input": "s3a://b/in/", "model": "s3a://b/m", "output": "s3a://b/o"},
        tmp_path / "work", SERVICES_ENV, spark_options=("--conf", "spark.x=1"),
        package_dir=emr_package)
    argv = submission.argv
    code = (tmp_path / "work" / "code").resolve()
    # the template's cluster mode stands: nothing after it names another deploy mode
    assert [argv[i + 1] for i, arg in enumerate(argv) if arg == "--deploy-mode"] == ["cluster"]
    assert argv[argv.index("--master") + 1] == "yarn"
    assert argv[argv.index("--archives") + 1] == f"file://{code}/{package.ENV_ARCHIVE}#environment"
    assert "spark.yarn.appMasterEnv.PYSPARK_PYTHON=./environment/bin/python" in argv
    assert "spark.yarn.maxAppAttempts=1" in argv
    assert "spark.yarn.appMasterEnv.S3_ENDPOINT=http://127.0.0.1:9090" in argv
    assert f"spark.yarn.jars=local:{cluster_jobs.SPARK_HOME / 'jars'}/*" in argv
    # the test's own options last, just before the entry file
    entry = argv.index(f"file://{code}/jobs/infer.py")
    assert argv[entry - 2:entry] == ["--conf", "spark.x=1"]
    assert submission.env["HADOOP_CONF_DIR"] == "/nonexistent/conf"
