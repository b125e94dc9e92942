"""Training-job names: unique per DAG run, identical across retries of the same task, valid for SageMaker."""

from __future__ import annotations

import hashlib
import re

MAX_JOB_NAME = 63
_VALID = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


def job_name_for_run(dag_id: str, run_id: str, prefix: str = "inventory", attempt: int = 1) -> str:
    """`<prefix>-<readable part of the run id>-<hash of dag+run>`, at most 63 characters.

    The hash makes the name unique per run (and so a retry of a task in the same run gets the same name);
    the readable part lets a person find the run from the SageMaker console. `attempt` > 1 names the job a
    cleared `train` starts after the run's earlier job ended Failed or Stopped (`-a<n>` before the hash, which
    covers the attempt too).
    """
    suffix = f"-a{attempt}" if attempt > 1 else ""
    salt = f"\x00{attempt}" if attempt > 1 else ""
    digest = hashlib.sha256(f"{dag_id}\x00{run_id}{salt}".encode()).hexdigest()[:10]
    readable = re.sub(r"[^a-zA-Z0-9]+", "-", run_id).strip("-")
    head = re.sub(r"[^a-zA-Z0-9]+", "-", prefix).strip("-") or "job"
    room = MAX_JOB_NAME - len(head) - len(digest) - 2 - len(suffix)
    readable = (readable[:room].strip("-") if room > 0 else "") + suffix
    name = "-".join(part.strip("-") for part in (head, readable, digest) if part.strip("-"))
    name = re.sub(r"-{2,}", "-", name)[:MAX_JOB_NAME].strip("-")
    validate_job_name(name)
    return name


def validate_job_name(name: str) -> str:
    if len(name) > MAX_JOB_NAME or not _VALID.match(name):
        raise ValueError(
            f"invalid training job name {name!r}: 1-{MAX_JOB_NAME} characters, letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return name
