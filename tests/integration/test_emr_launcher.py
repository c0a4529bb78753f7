"""The EMR launcher against moto's server (S3, EMR and EMR Serverless on one port): the
uploaded objects, the cluster, its steps and the job runs exist with the shapes the launcher
promised; what the launcher refuses (an application without a custom image, more active steps
than EMR takes, Graviton nodes) is refused before anything is uploaded or started; a dry run
sends nothing."""
import json
import re
import subprocess
import sys

import boto3
import pytest
import services

from imagegraph.emr.command import main
from imagegraph.emr.launcher import Launched, Launcher
from imagegraph.emr.settings import AwsSettings
from imagegraph.emr.templates import check_step, parse_job_args

CODE_BUCKET = "imagegraph-emr-code"
CODE = f"s3://{CODE_BUCKET}/imagegraph/0.1.0"
ROLE = "arn:aws:iam::123456789012:role/imagegraph-job"
NEPTUNE = "wss://db.cluster-abc.us-east-1.neptune.amazonaws.com:8182/gremlin"
BACKFILL = ["backfill", "--inventory", "s3://inventory/images/config/manifest.json",
            "--model", "s3://models/digits/v1", "--output", "s3://results/backfill",
            "--gremlin-endpoint", NEPTUNE]


@pytest.fixture
def aws(endpoints, monkeypatch):
    """boto3 pointed at moto's server through the environment, as a user's shell would be."""
    env = endpoints.env()
    monkeypatch.chdir(services.ROOT)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(name, env[name])
    for name in ("AWS_PROFILE", "IMAGEGRAPH_CODE_URI", "IMAGEGRAPH_LOG_URI", "GREMLIN_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)

    def client(service):
        return boto3.client(service, endpoint_url=env["S3_ENDPOINT"], region_name="us-east-1")
    s3 = client("s3")
    if CODE_BUCKET not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
        s3.create_bucket(Bucket=CODE_BUCKET)
    create_default_roles(client("iam"))
    client.endpoint = env["S3_ENDPOINT"]
    return client


def create_default_roles(iam, service_role="EMR_DefaultRole", ec2_role="EMR_EC2_DefaultRole"):
    """What `aws emr create-default-roles` makes: the service role, and the EC2 role inside an
    instance profile of the same name (each only when missing)."""
    for name, principal in ((service_role, "elasticmapreduce.amazonaws.com"),
                            (ec2_role, "ec2.amazonaws.com")):
        trust = {"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"Service": principal}, "Action": "sts:AssumeRole"}]}
        if name not in {role["RoleName"] for role in iam.list_roles()["Roles"]}:
            iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))
    profiles = {p["InstanceProfileName"] for p in iam.list_instance_profiles()["InstanceProfiles"]}
    if ec2_role not in profiles:
        iam.create_instance_profile(InstanceProfileName=ec2_role)
        iam.add_role_to_instance_profile(InstanceProfileName=ec2_role, RoleName=ec2_role)


def launcher_args(aws, emr_package, *extra):
    return ["--endpoint-url", aws.endpoint, "--code-uri", CODE,
            "--set", f"package.dir={emr_package}",
            "--set", f"cluster.log_uri=s3://{CODE_BUCKET}/logs/",
            "--set", "cluster.os_release_label=2023.9.20251117.1",
            "--set", "cluster.ebs_root_volume_gb=40",
            "--set", "cluster.subnet_id=subnet-0neptune",
            "--set", "cluster.additional_security_groups=[sg-0neptune-clients]",
            "--set", f"serverless.execution_role_arn={ROLE}",
            "--set", f"serverless.log_uri=s3://{CODE_BUCKET}/serverless-logs/", *extra]


def launch(capsys, args):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def refused_code_uri(request):
    """A code prefix of this test's own, where a refused launch must have uploaded nothing."""
    return f"s3://{CODE_BUCKET}/refused/{request.node.name}"


def code_objects(aws, code_uri):
    """The keys under `code_uri` (s3://CODE_BUCKET/...)."""
    prefix = code_uri.split("/", 3)[3] + "/"
    listing = aws("s3").list_objects_v2(Bucket=CODE_BUCKET, Prefix=prefix)
    return [entry["Key"] for entry in listing.get("Contents", [])]


def job_run_count(serverless, app_id):
    """The application's job runs (moto answers ResourceNotFound for one that never had any)."""
    try:
        return len(serverless.list_job_runs(applicationId=app_id)["jobRuns"])
    except serverless.exceptions.ResourceNotFoundException:
        return 0


def step_count(emr, cluster_id):
    """How many steps the cluster has (list_steps answers 50 a page)."""
    return sum(len(page["Steps"]) for page in
               emr.get_paginator("list_steps").paginate(ClusterId=cluster_id))


def newest_cluster_id(emr):
    return max(emr.list_clusters()["Clusters"],
               key=lambda c: c["Status"]["Timeline"]["CreationDateTime"])["Id"]


def running_cluster(emr, release_label="emr-7.12.0"):
    """A cluster that was not made by the launcher, waiting for steps."""
    return emr.run_job_flow(
        Name="running", ReleaseLabel=release_label, JobFlowRole="EMR_EC2_DefaultRole",
        ServiceRole="EMR_DefaultRole", LogUri=f"s3://{CODE_BUCKET}/logs/",
        Instances={"MasterInstanceType": "m6i.xlarge", "SlaveInstanceType": "m6i.2xlarge",
                   "InstanceCount": 3, "KeepJobFlowAliveWhenNoSteps": True})["JobFlowId"]


def shard_args(steps):
    """Each step's --shard value, from the step as EMR lists it."""
    return sorted(args[args.index("--shard") + 1] for args in
                  (step["Config"]["Args"] for step in steps))


def test_new_cluster_runs_every_shard_of_a_backfill(aws, emr_package, capsys):
    code, out, err = launch(capsys, [*BACKFILL, "--shards", "4",
                                     *launcher_args(aws, emr_package)])
    assert code == 0, err

    s3 = aws("s3")
    for rel in ["requirements.txt", "bootstrap.sh", "jobs/infer.py", "jobs/train.py",
                "jobs/link.py", "imagegraph-env.tar.gz", "imagegraph-0.1.0-py3-none-any.whl"]:
        head = s3.head_object(Bucket=CODE_BUCKET, Key=f"imagegraph/0.1.0/{rel}")
        assert head["ContentLength"] == (emr_package / rel).stat().st_size, rel
    stored = s3.get_object(Bucket=CODE_BUCKET, Key="imagegraph/0.1.0/imagegraph-env.tar.gz")
    assert stored["Body"].read() == (emr_package / "imagegraph-env.tar.gz").read_bytes()
    config = s3.get_object(Bucket=CODE_BUCKET, Key="imagegraph/0.1.0/conf/emr.yaml")
    assert config["Body"].read() == (services.ROOT / "conf" / "emr.yaml").read_bytes()

    emr = aws("emr")
    cluster_id = newest_cluster_id(emr)
    assert f"cluster {cluster_id} (emr-7.12.0) started with 4 step(s)" in out
    cluster = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]
    assert cluster["ReleaseLabel"] == "emr-7.12.0"
    assert cluster["LogUri"] == f"s3://{CODE_BUCKET}/logs/"
    assert cluster["AutoTerminate"] is True
    assert {app["Name"] for app in cluster["Applications"]} == {"Hadoop", "Spark"}
    dry_run = json.loads(launch(capsys, [*BACKFILL, "--shards", "4", "--dry-run",
                                         *launcher_args(aws, emr_package)])[1])
    assert cluster["Configurations"] == dry_run["run_job_flow"]["Configurations"]
    assert {"Classification": "spark-env", "Properties": {}, "Configurations": [{
        "Classification": "export", "Properties": {"PYSPARK_PYTHON": "/usr/bin/python3.11"}}]} \
        in cluster["Configurations"]
    assert (cluster["ServiceRole"], cluster["Ec2InstanceAttributes"]["IamInstanceProfile"]) == \
        ("EMR_DefaultRole", "EMR_EC2_DefaultRole")
    assert {"Key": "for-use-with-amazon-emr-managed-policies", "Value": "true"} in \
        cluster["Tags"]
    assert cluster["EbsRootVolumeSize"] == 40
    assert cluster["Ec2InstanceAttributes"]["Ec2SubnetId"] == "subnet-0neptune"
    assert cluster["Ec2InstanceAttributes"]["AdditionalSlaveSecurityGroups"] == \
        ["sg-0neptune-clients"]
    groups = emr.list_instance_groups(ClusterId=cluster_id)["InstanceGroups"]
    assert sorted((g["InstanceGroupType"], g["InstanceType"], g["RequestedInstanceCount"])
                  for g in groups) == [("CORE", "m6i.2xlarge", 2), ("MASTER", "m6i.xlarge", 1)]
    assert emr.list_bootstrap_actions(ClusterId=cluster_id)["BootstrapActions"] == [
        {"Name": "imagegraph python", "ScriptPath": f"{CODE}/bootstrap.sh",
         "Args": ["/usr/bin/python3.11"]}]

    steps = emr.list_steps(ClusterId=cluster_id)["Steps"]
    assert shard_args(steps) == ["0/4", "1/4", "2/4", "3/4"]
    for step in steps:
        assert step["Config"]["Jar"] == "command-runner.jar"
        assert step["ActionOnFailure"] == "CONTINUE"
        assert "spark.yarn.maxAppAttempts=1" in step["Config"]["Args"]
        parsed = check_step({"Name": step["Name"], "HadoopJarStep": step["Config"]})
        assert parsed.resume is True
        assert parsed.inventory == "s3://inventory/images/config/manifest.json"
        assert step["Name"] == f"imagegraph backfill shard {parsed.shard.index}/4"


def test_steps_added_to_a_running_cluster_are_exactly_the_shards_asked_for(aws, emr_package,
                                                                            capsys):
    emr = aws("emr")
    cluster_id = running_cluster(emr)
    code, out, err = launch(capsys, [*BACKFILL, "--shards", "8", "--shard", "5",
                                     "--shard", "2", "--cluster-id", cluster_id,
                                     *launcher_args(aws, emr_package)])
    assert code == 0, err
    assert f"cluster {cluster_id}: 2 step(s) added" in out
    steps = emr.list_steps(ClusterId=cluster_id)["Steps"]
    assert shard_args(steps) == ["2/8", "5/8"]
    assert all(step["Id"] in out for step in steps)
    # that cluster's spark-defaults are not the job's: each step carries the job's tuning
    tuning = json.loads((services.ROOT / "emr" / "configurations.json").read_text())[0]
    for step in steps:
        args = step["Config"]["Args"]
        for key, value in tuning["Properties"].items():
            assert f"{key}={value}" in args, key


def test_a_running_cluster_is_not_given_more_than_256_active_steps(aws, emr_package, capsys,
                                                                   request):
    code_uri = refused_code_uri(request)
    emr = aws("emr")
    cluster_id = running_cluster(emr)
    emr.add_job_flow_steps(JobFlowId=cluster_id, Steps=[
        {"Name": f"other {i}", "ActionOnFailure": "CONTINUE",
         "HadoopJarStep": {"Jar": "command-runner.jar", "Args": ["true"]}} for i in range(250)])
    code, out, err = launch(capsys, [*BACKFILL, "--shards", "8", "--cluster-id", cluster_id,
                                     *launcher_args(aws, emr_package), "--code-uri", code_uri])
    assert code == 2 and out == ""
    assert err == (f"python -m imagegraph.emr: error: cluster {cluster_id} has 250 PENDING or "
                   "RUNNING steps: 8 more would pass EMR's 256; launch at most 6 shards now\n")
    assert step_count(emr, cluster_id) == 250
    assert code_objects(aws, code_uri) == []
    code, out, err = launch(capsys, [*BACKFILL, "--shards", "8", "--shard", "0", "--shard", "1",
                                     "--cluster-id", cluster_id,
                                     *launcher_args(aws, emr_package), "--code-uri", code_uri])
    assert code == 0, err
    assert step_count(emr, cluster_id) == 252


@pytest.mark.parametrize("release_label, terminated, line", [
    ("emr-7.10.0", False, "cluster {id} runs emr-7.10.0, not cluster.release_label emr-7.12.0: "
                          "use a cluster of that release, or --set "
                          "cluster.release_label=emr-7.10.0 to run on this one"),
    ("emr-6.15.0", False, "cluster {id} runs emr-6.15.0, not cluster.release_label emr-7.12.0: "
                          "use a cluster of that release, or --set "
                          "cluster.release_label=emr-6.15.0 to run on this one"),
    ("emr-7.12.0", True, "cluster {id} is TERMINATED: steps are added only to a WAITING or "
                         "RUNNING cluster"),
])
def test_steps_go_only_to_a_waiting_or_running_cluster_of_the_release(
        aws, emr_package, capsys, request, release_label, terminated, line):
    code_uri = refused_code_uri(request)
    emr = aws("emr")
    cluster_id = running_cluster(emr, release_label)
    if terminated:
        emr.terminate_job_flows(JobFlowIds=[cluster_id])
    code, out, err = launch(capsys, [*BACKFILL, "--shards", "2", "--cluster-id", cluster_id,
                                     *launcher_args(aws, emr_package), "--code-uri", code_uri])
    assert code == 2 and out == ""
    assert err == f"python -m imagegraph.emr: error: {line.format(id=cluster_id)}\n"
    assert step_count(emr, cluster_id) == 0
    assert code_objects(aws, code_uri) == []


@pytest.mark.parametrize("extra, message", [
    (["--shards", "257"], "257 steps are more than the 256 a cluster takes at once"),
    (["--shards", "2", "--set", "cluster.core_instance_type=m7g.2xlarge"],
     r"instance type m7g.2xlarge is Graviton \(arm64\)"),
    (["--shards", "2", "--set", "cluster.os_release_label="],
     "1 setting\\(s\\) that a new cluster needs are missing or invalid:\n"
     "  cluster.os_release_label: empty: "),
])
def test_a_cluster_emr_would_refuse_or_break_is_not_started(aws, emr_package, capsys, request,
                                                             extra, message):
    code_uri = refused_code_uri(request)
    before = len(aws("emr").list_clusters()["Clusters"])
    code, out, err = launch(capsys, [*BACKFILL, *launcher_args(aws, emr_package), *extra,
                                     "--code-uri", code_uri])
    assert code == 2 and out == "" and len(err.splitlines()) == message.count("\n") + 1
    assert re.search(message, err)
    assert len(aws("emr").list_clusters()["Clusters"]) == before
    assert code_objects(aws, code_uri) == []


@pytest.mark.parametrize("setting, missing", [
    ("cluster.service_role", "IAM role imagegraph-no-such-role"),
    ("cluster.instance_profile", "IAM instance profile imagegraph-no-such-role"),
])
def test_a_missing_role_names_the_command_that_creates_it(aws, emr_package, capsys, request,
                                                          setting, missing):
    code_uri = refused_code_uri(request)
    before = len(aws("emr").list_clusters()["Clusters"])
    code, out, err = launch(capsys, [*BACKFILL, "--shards", "2",
                                     *launcher_args(aws, emr_package), "--code-uri", code_uri,
                                     "--set", f"{setting}=imagegraph-no-such-role"])
    assert code == 2 and out == ""
    assert err == (f"python -m imagegraph.emr: error: {missing} ({setting}) does not exist: "
                   "`aws emr create-default-roles` creates the role EMR_DefaultRole and the "
                   "instance profile EMR_EC2_DefaultRole\n")
    assert len(aws("emr").list_clusters()["Clusters"]) == before
    assert code_objects(aws, code_uri) == []


def test_wait_prints_each_step_state_and_its_logs(aws, emr_package, capsys):
    # moto runs the first step forever and leaves the rest pending: the wait gives up.
    code, out, err = launch(capsys, [*BACKFILL, "--shards", "2", "--wait", "--poll-seconds",
                                     "0.05", "--wait-timeout", "0.3",
                                     *launcher_args(aws, emr_package)])
    assert code == 1, err
    cluster_id = newest_cluster_id(aws("emr"))
    steps = {s["Id"]: s for s in aws("emr").list_steps(ClusterId=cluster_id)["Steps"]}
    for step_id, step in steps.items():
        assert f"{step_id}  {step['Status']['State']:<11} {step['Name']}" in out
        assert f"logs: s3://{CODE_BUCKET}/logs/{cluster_id}/steps/{step_id}/" in out
    assert "stopped waiting after 0.3 s: 2 of 2 not finished" in out


def test_wait_stops_when_the_cluster_ends_under_its_steps(aws, emr_package, capsys):
    emr = aws("emr")
    cluster_id = running_cluster(emr)
    code, _, err = launch(capsys, [*BACKFILL, "--shards", "2", "--cluster-id", cluster_id,
                                   *launcher_args(aws, emr_package)])
    assert code == 0, err
    emr.terminate_job_flows(JobFlowIds=[cluster_id])
    steps = list(reversed(emr.list_steps(ClusterId=cluster_id)["Steps"]))
    launcher = Launcher(AwsSettings(endpoint_url=aws.endpoint), "us-east-1", sys.stdout)
    launched = Launched("add_job_flow_steps", cluster_id, [s["Id"] for s in steps],
                        [s["Name"] for s in steps])
    assert launcher.wait(launched, poll_s=0.05, timeout_s=10) is False
    out = capsys.readouterr().out
    assert f"cluster {cluster_id} TERMINATED" in out
    assert out.rstrip().endswith("0 of 2 succeeded")


def test_unchanged_files_are_not_uploaded_again(aws, emr_package, capsys):
    args = ["infer", "--input", "s3://images/", "--model", "s3://models/digits/v1",
            "--output", "s3://results/x", "--gremlin-endpoint", NEPTUNE,
            *launcher_args(aws, emr_package)]
    assert launch(capsys, args)[0] == 0
    (emr_package / "jobs" / "infer.py").write_text("# changed\n")
    code, out, _ = launch(capsys, args)
    assert code == 0
    assert f"uploaded   {CODE}/jobs/infer.py" in out
    assert f"unchanged  {CODE}/imagegraph-env.tar.gz" in out


def test_serverless_application_without_a_custom_image_is_refused_before_sending(
        aws, emr_package, capsys, request):
    """EMR Serverless 7.x's own image has Python 3.9, not the packed environment's 3.11:
    get_application shows no imageConfiguration (moto's never does), so nothing is uploaded
    and no job run is started."""
    serverless = aws("emr-serverless")
    app_id = serverless.create_application(name="imagegraph", releaseLabel="emr-7.12.0",
                                           type="SPARK")["applicationId"]
    code_uri = refused_code_uri(request)
    code, out, err = launch(capsys, [*BACKFILL, "--shards", "3", "--serverless", app_id,
                                     *launcher_args(aws, emr_package), "--code-uri", code_uri])
    assert code == 2 and out == ""
    assert err.startswith(f"python -m imagegraph.emr: error: EMR Serverless application "
                          f"{app_id} (emr-7.12.0) runs no custom image: its Python is 3.9")
    assert job_run_count(serverless, app_id) == 0
    assert code_objects(aws, code_uri) == []
    code, _, err = launch(capsys, [*BACKFILL, "--shards", "3", "--serverless", "00fnosuchapp",
                                   *launcher_args(aws, emr_package), "--code-uri", code_uri])
    assert code == 2 and "get_application 00fnosuchapp failed: " in err
    assert code_objects(aws, code_uri) == []


def test_serverless_job_runs_one_per_shard(aws, emr_package, capsys):
    serverless = aws("emr-serverless")
    app_id = serverless.create_application(name="imagegraph", releaseLabel="emr-7.12.0",
                                           type="SPARK")["applicationId"]
    code, out, err = launch(capsys, [*BACKFILL, "--shards", "3", "--serverless", app_id,
                                     "--wait", "--poll-seconds", "0.05",
                                     "--set", "serverless.require_custom_image=false",
                                     "--set", "steps.concurrency=1",
                                     *launcher_args(aws, emr_package)])
    assert code == 0, err
    # one run at a time: each run starts only after the one before it is seen to end
    lines = out.splitlines()

    def first(prefix):
        return next(index for index, line in enumerate(lines) if line.startswith(prefix))
    started = [line.split()[0] for line in lines
               if re.match(r"  \S+  imagegraph backfill shard", line)]
    assert len(started) == 3
    for earlier, later in zip(started, started[1:]):
        assert first(f"{earlier}  SUCCESS") < first(f"  {later}  ")
    runs = serverless.list_job_runs(applicationId=app_id)["jobRuns"]
    assert len(runs) == 3
    shards = []
    for listed in runs:
        run = serverless.get_job_run(applicationId=app_id, jobRunId=listed["id"])["jobRun"]
        assert run["executionRole"] == ROLE
        driver = run["jobDriver"]["sparkSubmit"]
        assert driver["entryPoint"] == f"{CODE}/jobs/infer.py"
        assert f"spark.archives={CODE}/imagegraph-env.tar.gz#environment" in \
            driver["sparkSubmitParameters"]
        parsed = parse_job_args(driver["entryPoint"], driver["entryPointArguments"])
        shards.append((parsed.shard.index, parsed.shard.count))
        assert run["configurationOverrides"]["monitoringConfiguration"] == {
            "s3MonitoringConfiguration": {"logUri": f"s3://{CODE_BUCKET}/serverless-logs/"}}
        assert (f"logs: s3://{CODE_BUCKET}/serverless-logs/applications/{app_id}/jobs/"
                f"{listed['id']}/") in out
    assert sorted(shards) == [(0, 3), (1, 3), (2, 3)]
    assert "3 of 3 succeeded" in out


def test_dry_run_sends_nothing(aws, emr_package, capsys):
    nowhere = f"http://127.0.0.1:{services.free_port()}"
    args = launcher_args(aws, emr_package)
    args[args.index("--endpoint-url") + 1] = nowhere
    code, out, err = launch(capsys, [*BACKFILL, "--shards", "2", "--dry-run", *args])
    assert code == 0, err
    plan = json.loads(out)
    assert [u["Key"] for u in plan["upload_file"]][-1] == "imagegraph/0.1.0/conf/emr.yaml"
    assert [s["Name"] for s in plan["run_job_flow"]["Steps"]] == \
        ["imagegraph backfill shard 0/2", "imagegraph backfill shard 1/2"]


def test_errors_are_one_line_with_exit_code_2(aws, emr_package, env_archive, capsys):
    (emr_package / "imagegraph-env.tar.gz").unlink()
    code, out, err = launch(capsys, [*BACKFILL, "--shards", "2",
                                     *launcher_args(aws, emr_package)])
    assert code == 2 and out == ""
    assert err == (f"python -m imagegraph.emr: error: {emr_package}/imagegraph-env.tar.gz is "
                   "missing; run `make package`\n")

    env_archive(emr_package / "imagegraph-env.tar.gz", "/usr/bin/python3.11")
    code, _, err = launch(capsys, [*BACKFILL, "--shards", "2", *launcher_args(aws, emr_package),
                                   "--code-uri", "s3://no-such-bucket/imagegraph"])
    assert code == 2
    assert err.startswith("python -m imagegraph.emr: error: upload to "
                          "s3://no-such-bucket/imagegraph/requirements.txt failed: ")
    assert "NoSuchBucket" in err and len(err.splitlines()) == 1


def test_help_documents_every_option():
    result = subprocess.run([sys.executable, "-m", "imagegraph.emr", "backfill", "--help"],
                            capture_output=True, text=True, cwd=services.ROOT, timeout=60)
    assert result.returncode == 0
    for option in ["--settings", "--set", "--region", "--endpoint-url", "--code-uri",
                   "--python-env", "--cluster-id", "--serverless", "--dry-run", "--wait",
                   "--poll-seconds", "--wait-timeout", "--inventory", "--manifest", "--model",
                   "--output", "--gremlin-endpoint", "--shards", "--shard"]:
        assert option in result.stdout
