"""The promotion gate: the new model becomes the champion only when it is better and no blocking rule fired.

Better = higher test accuracy by at least `min_improvement`; on equal accuracy, lower RMSE of the count.
The first model promotes. Promotion copies model.tar.gz and then metrics.json (last: it is what the next
run compares against) to `models/champion/`, and every decision is appended to `models/history.jsonl` once
per job, so a retried task never promotes twice or half-way.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

log = logging.getLogger(__name__)


def _read_json(s3: Any, bucket: str, key: str) -> Any | None:
    from botocore.exceptions import ClientError

    try:
        return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise


def _history(s3: Any, bucket: str, key: str) -> list[dict[str, Any]]:
    from botocore.exceptions import ClientError

    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return []
        raise
    return [json.loads(line) for line in body.splitlines() if line.strip()]


def compare(candidate: dict[str, Any], champion: dict[str, Any] | None, min_improvement: float) -> tuple[bool, str]:
    if candidate.get("accuracy") is None:
        return False, "the new model has no test accuracy"
    if champion is None:
        return True, "first model: no champion yet"
    gain = candidate["accuracy"] - champion.get("accuracy", 0.0)
    if gain > min_improvement or (min_improvement == 0 and gain > 0):
        return True, f"accuracy {candidate['accuracy']:.4f} beats the champion's {champion['accuracy']:.4f}"
    if gain == 0 and candidate.get("rmse") is not None and candidate["rmse"] < champion.get("rmse", float("inf")):
        return True, f"same accuracy, lower RMSE ({candidate['rmse']:.4f} < {champion['rmse']:.4f})"
    return False, (f"accuracy {candidate['accuracy']:.4f} vs champion {champion['accuracy']:.4f} (needs +"
                   f"{min_improvement:g}; RMSE {candidate.get('rmse')} vs {champion.get('rmse')})")  # fmt: skip


def evaluate_and_promote(
    s3: Any, bucket: str, root: str, job_name: str, model_artifact_uri: str, metrics: dict[str, Any],
    blocked: bool, min_improvement: float, run_id: str,
) -> dict[str, Any]:  # fmt: skip
    champion_prefix, history_key = f"{root}models/champion/", f"{root}models/history.jsonl"
    history = _history(s3, bucket, history_key)
    previous = next((h for h in history if h.get("job") == job_name), None)
    if previous is not None:
        log.info("job %s was already decided (%s): not deciding twice", job_name, previous["reason"])
        return {**previous, "repeated": True}
    champion = _read_json(s3, bucket, f"{champion_prefix}metrics.json")
    candidate = {"job": job_name, **{k: metrics.get(k) for k in ("accuracy", "rmse", "per_class_accuracy")}}
    if blocked:
        promoted, reason = False, "a blocking rule fired: not promoting"
    else:
        promoted, reason = compare(candidate, champion, min_improvement)
    if promoted:
        src_bucket, _, src_key = model_artifact_uri[5:].partition("/")
        s3.copy_object(Bucket=bucket, Key=f"{champion_prefix}model.tar.gz",
                       CopySource={"Bucket": src_bucket, "Key": src_key})  # fmt: skip
        body = json.dumps({**candidate, "model": model_artifact_uri, "run_id": run_id}, indent=1)
        s3.put_object(Bucket=bucket, Key=f"{champion_prefix}metrics.json", Body=body.encode())
    decision = {
        "job": job_name, "run_id": run_id, "promoted": promoted, "reason": reason,
        "candidate": candidate, "champion_before": champion,
        "decided": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }  # fmt: skip
    lines = "".join(json.dumps(h) + "\n" for h in [*history, decision])
    s3.put_object(Bucket=bucket, Key=history_key, Body=lines.encode())
    log.info("promotion of %s: %s (%s)", job_name, promoted, reason)
    return decision
