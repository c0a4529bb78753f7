"""Sending a `Plan`: first the checks only AWS can answer (a new cluster's IAM service role and
instance profile; the EMR Serverless application's architecture and image; a running
cluster's state, release and active steps), then uploads to S3, then
run_job_flow, add_job_flow_steps or start_job_run (at most `plan.concurrency` job runs at
once: the next starts when one ends), and, when asked, waiting for the steps or job runs while
printing each state change and where its logs are.

boto3 clients take their credentials from boto3's default chain; nothing here prints a
credential. AWS errors become `JobError` with the operation and AWS's own message.
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Callable, TextIO

import boto3
from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import BotoCoreError, ClientError

from imagegraph.emr.package import Upload
from imagegraph.emr.requests import (
    CLUSTER_TAKING_STEPS,
    MAX_ACTIVE_STEPS,
    Plan,
    serverless_application_problem,
)
from imagegraph.emr.settings import AwsSettings
from imagegraph.errors import JobError

STEP_DONE = {"COMPLETED"}
STEP_FAILED = {"CANCELLED", "FAILED", "INTERRUPTED"}
RUN_DONE = {"SUCCESS"}
RUN_FAILED = {"FAILED", "CANCELLED"}
CLUSTER_ENDED = {"TERMINATED", "TERMINATED_WITH_ERRORS"}
STEP_ACTIVE = ["PENDING", "RUNNING"]
_UNKNOWN_OBJECT_CODES = {"404", "NoSuchKey", "NotFound", "403", "Forbidden", "AccessDenied"}
CREATE_DEFAULT_ROLES = ("`aws emr create-default-roles` creates the role EMR_DefaultRole and the "
                        "instance profile EMR_EC2_DefaultRole")


def resolve_region(aws: AwsSettings) -> str:
    """`aws.region`, else boto3's (AWS_DEFAULT_REGION, the profile), read without
    any request; empty when neither names one (`requests.missing_settings` says so)."""
    return boto3.session.Session(region_name=aws.region or None).region_name or ""


@dataclass(frozen=True)
class Launched:
    """What a launch started: the cluster (`j-...`) or EMR Serverless application, and the ids
    of its steps or job runs with their names, in launch order."""

    operation: str
    resource_id: str
    ids: list[str]
    names: list[str]


class Launcher:
    """Sends plans to AWS (or to `aws.endpoint_url`) in `region`, printing progress to `out`."""

    def __init__(self, aws: AwsSettings, region: str, out: TextIO,
                 sleep: Callable[[float], None] = time.sleep):
        self._session = boto3.session.Session(region_name=region)
        self._endpoint_url = aws.endpoint_url or None
        self._out = out
        self._sleep = sleep

    def _client(self, service: str):
        return self._session.client(service, endpoint_url=self._endpoint_url)

    def _print(self, line: str) -> None:
        print(line, file=self._out, flush=True)

    def launch(self, plan: Plan, poll_s: float = 30.0) -> Launched:
        """Check what only AWS can tell, upload what changed, then send the plan's request(s);
        job runs beyond `plan.concurrency` start as earlier ones end (polled every `poll_s`
        seconds)."""
        self.check(plan)
        self.upload(plan.uploads)
        return _calling(plan.operation, lambda: self._send(plan, poll_s))

    def check(self, plan: Plan) -> None:
        """`JobError` when a new cluster's service role or instance profile does not exist in
        IAM, the EMR Serverless application cannot run the jobs, or a running cluster is not
        WAITING or RUNNING, runs another release than the settings' or would hold more than
        EMR's 256 active steps."""
        if plan.operation == "run_job_flow":
            self._check_roles(plan.requests[0]["ServiceRole"], plan.requests[0]["JobFlowRole"])
        elif plan.operation == "start_job_run":
            app_id = plan.requests[0]["applicationId"]
            serverless = self._client("emr-serverless")
            application = _calling(f"get_application {app_id}", lambda: serverless.get_application(
                applicationId=app_id))["application"]
            problem = serverless_application_problem(application, plan.require_custom_image)
            if problem:
                raise JobError(problem)
        elif plan.operation == "add_job_flow_steps":
            cluster_id = plan.requests[0]["JobFlowId"]
            emr = self._client("emr")
            cluster = _calling(f"describe_cluster {cluster_id}", lambda: emr.describe_cluster(
                ClusterId=cluster_id))["Cluster"]
            state = cluster["Status"]["State"]
            if state not in CLUSTER_TAKING_STEPS:
                raise JobError(f"cluster {cluster_id} is {state}: steps are added only to a "
                               f"{' or '.join(CLUSTER_TAKING_STEPS)} cluster")
            release = cluster.get("ReleaseLabel")
            if release != plan.release_label:
                raise JobError(f"cluster {cluster_id} runs {release}, not cluster.release_label "
                               f"{plan.release_label}: use a cluster of that release, or --set "
                               f"cluster.release_label={release} to run on this one")
            active = _calling(f"list_steps {cluster_id}", lambda: sum(
                len(page["Steps"]) for page in emr.get_paginator("list_steps").paginate(
                    ClusterId=cluster_id, StepStates=STEP_ACTIVE)))
            adding = len(plan.requests[0]["Steps"])
            if active + adding > MAX_ACTIVE_STEPS:
                raise JobError(f"cluster {cluster_id} has {active} PENDING or RUNNING steps: "
                               f"{adding} more would pass EMR's {MAX_ACTIVE_STEPS}; launch "
                               f"at most {MAX_ACTIVE_STEPS - active} shards now")

    def _check_roles(self, service_role: str, instance_profile: str) -> None:
        """`JobError` naming the command that creates them when the IAM role `service_role`
        or the instance profile `instance_profile` does not exist."""
        iam = self._client("iam")
        checks = [(f"get_role {service_role}",
                   functools.partial(iam.get_role, RoleName=service_role),
                   f"IAM role {service_role} (cluster.service_role)"),
                  (f"get_instance_profile {instance_profile}",
                   functools.partial(iam.get_instance_profile,
                                     InstanceProfileName=instance_profile),
                   f"IAM instance profile {instance_profile} (cluster.instance_profile)")]
        for operation, call, what in checks:
            if not _calling(operation, functools.partial(_iam_entity_exists, call)):
                raise JobError(f"{what} does not exist: {CREATE_DEFAULT_ROLES}")

    def upload(self, uploads: list[Upload]) -> None:
        """Upload each file unless an object with the same SHA-256 is already at its key."""
        s3 = self._client("s3")
        for upload in uploads:
            uri = f"s3://{upload.bucket}/{upload.key}"
            stored = _calling(f"head_object {uri}", functools.partial(_stored_sha256, s3, upload))
            if stored == upload.sha256:
                self._print(f"unchanged  {uri}")
                continue
            _calling(f"upload to {uri}", functools.partial(s3.upload_file, **upload.request()))
            self._print(f"uploaded   {uri} ({upload.path.stat().st_size:,} bytes)")

    def _send(self, plan: Plan, poll_s: float) -> Launched:
        if plan.operation == "start_job_run":
            return self._start_job_runs(plan, poll_s)
        emr = self._client("emr")
        request = plan.requests[0]
        if plan.operation == "run_job_flow":
            cluster_id = emr.run_job_flow(**request)["JobFlowId"]
            self._print(f"cluster {cluster_id} ({request['ReleaseLabel']}) started with "
                        f"{len(request['Steps'])} step(s)")
            step_ids = _step_ids_in_order(emr, cluster_id, request["Steps"])
        else:
            cluster_id = request["JobFlowId"]
            step_ids = emr.add_job_flow_steps(**request)["StepIds"]
            self._print(f"cluster {cluster_id}: {len(step_ids)} step(s) added")
        names = [step["Name"] for step in request["Steps"]]
        for step_id, name in zip(step_ids, names):
            self._print(f"  {step_id}  {name}")
        return Launched(plan.operation, cluster_id, step_ids, names)

    def _start_job_runs(self, plan: Plan, poll_s: float) -> Launched:
        """Start the plan's job runs, at most `plan.concurrency` running at once: the next
        starts when get_job_run shows an earlier one ended. Each id is printed as soon as its
        run exists."""
        serverless = self._client("emr-serverless")
        app = plan.requests[0]["applicationId"]
        self._print(f"EMR Serverless application {app}: {len(plan.requests)} job run(s), "
                    f"at most {plan.concurrency} at once")
        run_ids: list[str] = []
        running: dict[str, str] = {}
        for index, request in enumerate(plan.requests):
            while len(running) >= plan.concurrency:
                self._sleep(poll_s)
                for run_id, name in list(running.items()):
                    state = serverless.get_job_run(applicationId=app,
                                                   jobRunId=run_id)["jobRun"]["state"]
                    if state in RUN_DONE | RUN_FAILED:
                        del running[run_id]
                        self._print(f"{run_id}  {state:<11} {name}; "
                                    f"{len(plan.requests) - index} run(s) to start")
            run_ids.append(serverless.start_job_run(**request)["jobRunId"])
            running[run_ids[-1]] = request["name"]
            self._print(f"  {run_ids[-1]}  {request['name']}")
        return Launched(plan.operation, app, run_ids, [r["name"] for r in plan.requests])

    def wait(self, launched: Launched, poll_s: float, timeout_s: float) -> bool:
        """Poll every `poll_s` seconds until every step or job run has ended, printing each
        state change with its log location; True when all succeeded, False when any failed or
        `timeout_s` seconds passed first (0: no limit)."""
        if launched.operation == "start_job_run":
            poll = self._job_run_poller(launched)
            done, failed = RUN_DONE, RUN_FAILED
        else:
            poll = _calling("describe_cluster", lambda: self._step_poller(launched))
            done, failed = STEP_DONE, STEP_FAILED
        names = dict(zip(launched.ids, launched.names))
        seen: dict[str, str] = {}
        deadline = time.monotonic() + timeout_s if timeout_s else None
        while True:
            states, notes, ended_because = _calling("polling", poll)
            for job_id in launched.ids:
                state = states.get(job_id, "UNKNOWN")
                if seen.get(job_id) != state:
                    seen[job_id] = state
                    self._print(f"{job_id}  {state:<11} {names[job_id]}")
                    for note in notes.get(job_id, []):
                        self._print(f"    {note}")
            open_ids = [i for i in launched.ids if seen[i] not in done | failed]
            if not open_ids or ended_because:
                if ended_because:
                    self._print(ended_because)
                ok = not ended_because and all(seen[i] in done for i in launched.ids)
                succeeded = sum(seen[i] in done for i in launched.ids)
                self._print(f"{succeeded} of {len(launched.ids)} succeeded")
                return ok
            if deadline is not None and time.monotonic() >= deadline:
                self._print(f"stopped waiting after {timeout_s:g} s: {len(open_ids)} of "
                            f"{len(launched.ids)} not finished ({launched.resource_id} "
                            "carries on)")
                return False
            self._sleep(poll_s)

    def _step_poller(self, launched: Launched):
        emr = self._client("emr")
        cluster = emr.describe_cluster(ClusterId=launched.resource_id)["Cluster"]
        log_root = (cluster.get("LogUri") or "").rstrip("/")
        wanted = set(launched.ids)

        def poll():
            states, notes = {}, {}
            for page in emr.get_paginator("list_steps").paginate(ClusterId=launched.resource_id):
                for step in page["Steps"]:
                    if step["Id"] not in wanted:
                        continue
                    status = step["Status"]
                    states[step["Id"]] = status["State"]
                    notes[step["Id"]] = _step_notes(status, log_root, launched.resource_id,
                                                    step["Id"])
            status = emr.describe_cluster(ClusterId=launched.resource_id)["Cluster"]["Status"]
            ended = None
            if status["State"] in CLUSTER_ENDED and any(
                    states.get(i) not in STEP_DONE | STEP_FAILED for i in launched.ids):
                reason = status.get("StateChangeReason", {}).get("Message", "")
                ended = f"cluster {launched.resource_id} {status['State']}: {reason}".rstrip(": ")
            return states, notes, ended
        return poll

    def _job_run_poller(self, launched: Launched):
        serverless = self._client("emr-serverless")
        app = launched.resource_id

        def poll():
            states, notes = {}, {}
            for run_id in launched.ids:
                run = serverless.get_job_run(applicationId=app, jobRunId=run_id)["jobRun"]
                states[run_id] = run["state"]
                log_uri = (run.get("configurationOverrides", {}).get("monitoringConfiguration", {})
                           .get("s3MonitoringConfiguration", {}).get("logUri", ""))
                notes[run_id] = ([f"logs: {log_uri.rstrip('/')}/applications/{app}/jobs/{run_id}/"]
                                 if log_uri else ["logs: none kept (serverless.log_uri is empty)"])
                if run.get("stateDetails"):
                    notes[run_id].append(run["stateDetails"])
            return states, notes, None
        return poll


def _step_notes(status: dict, log_root: str, cluster_id: str, step_id: str) -> list[str]:
    notes = [f"logs: {log_root}/{cluster_id}/steps/{step_id}/ (spark-submit), "
             f"{log_root}/{cluster_id}/containers/ (driver and executors)"
             if log_root else "logs: none kept (the cluster has no LogUri)"]
    failure = status.get("FailureDetails") or {}
    if failure:
        notes.append(" ".join(filter(None, [failure.get("Reason"), failure.get("Message"),
                                            failure.get("LogFile")])))
    return notes


def _step_ids_in_order(emr, cluster_id: str, steps: list[dict]) -> list[str]:
    """The ids of the steps run_job_flow created, in the order they were given (list_steps
    returns the newest first)."""
    listed = [step["Id"] for page in emr.get_paginator("list_steps").paginate(
        ClusterId=cluster_id) for step in page["Steps"]]
    return list(reversed(listed))[:len(steps)]


def _stored_sha256(s3, upload: Upload) -> str | None:
    """The sha256 metadata of the object already at the upload's key; None when there is none
    or it cannot be told (without s3:ListBucket, S3 answers 403 for a missing key)."""
    try:
        head = s3.head_object(Bucket=upload.bucket, Key=upload.key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in _UNKNOWN_OBJECT_CODES:
            return None
        raise
    return head.get("Metadata", {}).get("sha256")


def _iam_entity_exists(call: Callable[[], object]) -> bool:
    """`call()` (an IAM get_...): False when IAM answers NoSuchEntity."""
    try:
        call()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "NoSuchEntity":
            return False
        raise
    return True


def _calling(what: str, call):
    """`call()`, with AWS errors turned into one-line `JobError`s naming `what`."""
    try:
        return call()
    except ClientError as exc:
        error = exc.response.get("Error", {})
        message = f"{error.get('Code', 'error')}: {error.get('Message', exc)}"
    except (BotoCoreError, S3UploadFailedError) as exc:
        message = str(exc)
    raise JobError(f"{what} failed: {' '.join(message.split())[:500]}")
