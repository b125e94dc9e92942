"""The promotion gate: the new model becomes the champion only when it is better and no blocking rule fired.

Better = higher test accuracy by at least `min_improvement`; on equal accuracy, lower RMSE of the count.
The first model promotes. Promotion copies model.tar.gz and then metrics.json (last: it is what the next
run compares against) to `models/champion/`, and every decision is appended to `models/history.jsonl` once
per job, so a retried task never promotes twice or half-way. metrics.json is the commit record: it names the
model and the ETag its copy got, and a model.tar.gz that disagrees with it (a promotion that died between the
two writes and was never retried) is put back to the recorded champion before the next decision.
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


def _restore_champion_model(s3: Any, bucket: str, prefix: str, champion: dict[str, Any]) -> None:
    """Put the recorded champion's model back when champion/model.tar.gz is not the copy metrics.json records."""
    from botocore.exceptions import ClientError

    recorded = champion.get("model_etag")
    if not recorded or not str(champion.get("model", "")).startswith("s3://"):
        return  # recorded before model_etag existed: nothing to compare with
    key = f"{prefix}model.tar.gz"
    try:
        current = s3.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("NoSuchKey", "404", "NotFound"):
            raise
        current = None
    if current == recorded:
        return
    log.warning("champion/model.tar.gz (%s) is not the champion's model (%s, %s): an earlier promotion was "
                "interrupted; restoring it", current, champion["model"], recorded)  # fmt: skip
    src_bucket, _, src_key = champion["model"][5:].partition("/")
    copied = s3.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": src_bucket, "Key": src_key})
    restored = copied["CopyObjectResult"]["ETag"].strip('"')
    if restored != recorded:  # a re-encrypted copy (SSE-KMS) gets a new ETag: record it
        body = json.dumps({**champion, "model_etag": restored}, indent=1)
        s3.put_object(Bucket=bucket, Key=f"{prefix}metrics.json", Body=body.encode())


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
    if champion is not None:
        _restore_champion_model(s3, bucket, champion_prefix, champion)
    candidate = {"job": job_name, **{k: metrics.get(k) for k in ("accuracy", "rmse", "per_class_accuracy")}}
    if blocked:
        promoted, reason = False, "a blocking rule fired: not promoting"
    else:
        promoted, reason = compare(candidate, champion, min_improvement)
    if promoted:
        src_bucket, _, src_key = model_artifact_uri[5:].partition("/")
        copied = s3.copy_object(Bucket=bucket, Key=f"{champion_prefix}model.tar.gz",
                                CopySource={"Bucket": src_bucket, "Key": src_key})  # fmt: skip
        model_etag = copied["CopyObjectResult"]["ETag"].strip('"')
        body = json.dumps({**candidate, "model": model_artifact_uri, "model_etag": model_etag, "run_id": run_id},
                          indent=1)  # fmt: skip
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
