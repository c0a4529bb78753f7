"""Running the jobs on Amazon EMR: the launcher behind `python -m imagegraph.emr`.

- `settings`: the launcher's YAML settings (emr/launcher.yaml) and their checks.
- `package`: what `make package` leaves in build/package and where each file goes in S3.
- `templates`: step templates (emr/steps/*.json), their rendering, and the check of a step's
  job arguments against the job's own parser.
- `requests`: the boto3 request dicts (run_job_flow, add_job_flow_steps, start_job_run).
- `launcher`: uploads, sending the requests, waiting for steps and job runs.
- `command`: the command line.
"""
