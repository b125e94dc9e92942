"""`make demo`: the weekly story on this machine, with no AWS account.

Starts the local stack (moto, the local SageMaker server, MLflow), its S3 holding a source bucket of synthetic
ABID-like data in the public bucket's layout (moto writes it into its store as it starts), and runs `airflow dags
test inventory_retraining` once per week, all weeks in one Airflow process (`airflow.dag_runs`: Airflow's
start-up is paid once, while the stack starts):
  week 1: trains; there is no champion yet, so the model is promoted;
  week 2: same data, code and Params: `skipped_unchanged`, no training job;
  week 3: about 30 % new photos arrive (uploaded while week 2 runs, once its selection is pinned:
          `arrivals`): only those are copied, the job trains and scores the champion on the same test images,
          and the gate decides.
Each run's summary goes to build/demo/summary.json (`weeks`, in order; the last run's fields at the top). The
demo stops at the first failed run and exits non-zero; it stops what it started either way.

`DEMO_CONF='{"epochs": 5}' make demo` merges that JSON into every week's conf; `DEMO_WEEKS=1` runs week 1 only;
`DEMO_ROLLBACK=1` adds the on-call story: `model rollback --to 1`, a forced retrain that ends `held`, `model
release`, and a forced retrain that may promote again.
Where the policy asks a person (a gain the paired test cannot call significant, by default), the demo answers as
that person through Airflow's REST API (`approvals.Reviewer`): `DEMO_APPROVAL="Do not promote"` answers no.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from inventory_pipeline.airflow.runner import PROJECT_ROOT, DagRunSession, airflow_env

log = logging.getLogger("inventory_pipeline.demo")

BUILD_DIR = PROJECT_ROOT / "build" / "demo"
SOURCE_BUCKET = "abid-synthetic-source"
PROJECT_BUCKET = "inventory-retraining"
DEMO_IMAGES = int(os.environ.get("DEMO_IMAGES", "1500"))
SEED = 7
NEW_IMAGES_SHARE = 0.3  # week 3: new photos, as a share of week 1's
WEEK_DATES = ("2026-01-05", "2026-01-12", "2026-01-19")  # Mondays: the weekly schedule's logical dates
# Quick-run Params: a small dataset and the small CNN, so the loop finishes in minutes on 2 CPU cores.
QUICK_RUN_CONF: dict[str, Any] = {
    "source_bucket": SOURCE_BUCKET,
    "file_list": f"s3://{SOURCE_BUCKET}/file_list.json",
    "per_class_limit": 0,
    "model": "small_cnn",
    # measured on these synthetic photos (1500, seed 7): test accuracy 0.95 after 12 onecycle epochs
    "epochs": 12,
    "batch_size": 32,
    "lr": 0.004,
    "instance_type": "ml.c5.xlarge",
    "instance_count": 1,
    "rules_mode": "managed",
    "fail_on_rules": [],
}


def demo_conf() -> dict[str, Any]:
    extra = os.environ.get("DEMO_CONF", "").strip()
    try:
        overrides = json.loads(extra) if extra else {}
    except json.JSONDecodeError as exc:
        raise SystemExit(f"DEMO_CONF is not valid JSON: {exc}") from exc
    if not isinstance(overrides, dict):
        raise SystemExit("DEMO_CONF must be a JSON object, e.g. DEMO_CONF='{\"epochs\": 5}'")
    return {**QUICK_RUN_CONF, **overrides}


def demo_weeks() -> int:
    try:
        weeks = int(os.environ.get("DEMO_WEEKS", "3"))
    except ValueError as exc:
        raise SystemExit(f"DEMO_WEEKS must be 1, 2 or 3: {exc}") from exc
    if not 1 <= weeks <= len(WEEK_DATES):
        raise SystemExit(f"DEMO_WEEKS must be 1, 2 or 3, got {weeks}")
    return weeks


def wait_for_source(s3: Any, moto_log: Path, timeout_s: float = 300.0) -> None:
    """Until moto has written week 1's source (its file list comes last); moto exits if seeding fails."""
    from botocore.exceptions import ClientError, EndpointConnectionError

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            listed = json.loads(s3.get_object(Bucket=SOURCE_BUCKET, Key="file_list.json")["Body"].read())
            log.info("week 1: s3://%s holds %d synthetic photos", SOURCE_BUCKET, sum(map(len, listed.values())))
            return
        except EndpointConnectionError as exc:
            raise SystemExit(f"moto stopped while seeding s3://{SOURCE_BUCKET}: see {moto_log}") from exc
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("NoSuchBucket", "NoSuchKey", "404"):
                raise
        if time.monotonic() > deadline:
            raise SystemExit(f"s3://{SOURCE_BUCKET} was not seeded within {timeout_s:.0f} s: see {moto_log}")
        time.sleep(0.2)


def read_notifications(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    """Everything the pipeline announced since the last call (the stack subscribes this queue to the topic)."""
    messages = []
    while True:
        got = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0, MessageAttributeNames=["All"]
        ).get("Messages", [])
        if not got:
            return messages
        for message in got:
            messages.append(
                {
                    "body": message["Body"],
                    "decision": ((message.get("MessageAttributes") or {}).get("decision") or {}).get("StringValue"),
                }
            )
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


# DEMO_ROLLBACK=1: after the weeks, an on-call engineer rolls back to v1 with the real CLI; a forced retrain then
# ends `held`; `model release`; the next forced retrain may promote again (docs/operations.md).
ROLLBACK_DATES = ("2026-01-26", "2026-02-02")


def rollback_story(env: dict[str, str], conf: dict[str, Any], run: Any) -> bool:
    def cli(*args: str) -> None:
        log.info("$ inventory-pipeline %s", " ".join(args))
        done = subprocess.run(
            [sys.executable, "-m", "inventory_pipeline.cli", *args], env=env, text=True, capture_output=True
        )
        print(done.stdout, end="")
        if done.returncode != 0:
            raise SystemExit(f"inventory-pipeline {' '.join(args)} failed:\n{done.stderr[-2000:]}")

    forced = {**conf, "force_retrain": True}
    cli("model", "rollback", "--to", "1")
    cli("model", "list")
    if not run(4, forced, ROLLBACK_DATES[0]):
        return False
    cli("model", "release")
    return run(5, forced, ROLLBACK_DATES[1])


def main() -> int:
    from inventory_pipeline.aws.clients import make_client
    from inventory_pipeline.demo.arrivals import NewPhotos
    from inventory_pipeline.demo.reviewer import Reviewer
    from inventory_pipeline.demo.summary import build_summary, print_summary
    from inventory_pipeline.local_aws.stack import (
        LOCAL_ACCESS_KEY,
        LOCAL_SECRET_KEY,
        LocalStack,
        default_servers,
        moto_with_source,
    )

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    conf, weeks = demo_conf(), demo_weeks()
    started = time.monotonic()
    summaries: list[dict[str, Any]] = []
    ok = True
    # A fresh stack and Airflow DB per demo: the story starts with no champion.
    for stale in ("local-stack", "airflow"):
        shutil.rmtree(BUILD_DIR / stale, ignore_errors=True)
    # The one Airflow process of the story starts importing Airflow and migrating its DB now, while the stack
    # starts and the source is seeded; the stack's endpoints reach it with each week's request.
    deployment = {
        "INVENTORY_BUCKET": PROJECT_BUCKET,
        "INVENTORY_REPORT_DIR": str(BUILD_DIR / "reports"),
        # Local jobs take a minute or two: poll every second (a poke is one DescribeTrainingJob and a log read).
        "INVENTORY_POKE_INTERVAL_S": "1",
    }
    base_env = airflow_env(BUILD_DIR / "airflow", deployment)
    log.info("starting Airflow (one process for every week) with its metadata DB in %s", base_env["AIRFLOW_HOME"])
    # S3 starts with week 1's photos in the source bucket, as the public bucket is there before any run
    stack = LocalStack(
        BUILD_DIR / "local-stack", servers=default_servers(moto_with_source(SOURCE_BUCKET, DEMO_IMAGES, seed=SEED))
    )

    @functools.cache
    def client(service: str) -> Any:  # one per service; S3's is first needed while the stack still starts
        return make_client(
            service,
            endpoint_url=stack.endpoints[service],
            region_name=stack.region,
            aws_access_key_id=LOCAL_ACCESS_KEY,
            aws_secret_access_key=LOCAL_SECRET_KEY,
        )

    def week_1_source() -> None:  # S3 answers while MLflow and the SageMaker server still start
        client("s3").create_bucket(Bucket=PROJECT_BUCKET)
        wait_for_source(client("s3"), stack.state_dir / "moto.log")

    with DagRunSession(base_env) as airflow, contextlib.ExitStack() as cleanup:
        cleanup.callback(stack.stop)
        cleanup.callback(log.info, "stopping the local stack")
        stack.start(while_others_start=week_1_source)
        log.info("local stack up: %s", stack.endpoints)
        s3, sqs = client("s3"), client("sqs")
        env = {**base_env, **stack.env()}
        # answers approval requests as a person would, through the REST API (an API server only if one is needed)
        reviewer = Reviewer(env, answer=os.environ.get("DEMO_APPROVAL", "Promote"), user="demo-reviewer")

        setup_s = time.monotonic() - started  # the stack, week 1's source and Airflow's start, side by side

        def run(
            week: int, run_conf: dict[str, Any], logical_date: str, on_line: Callable[[str], None] | None = None
        ) -> bool:
            week_started = time.monotonic()

            def each_line(line: str) -> None:
                reviewer.on_line(line)
                if on_line is not None:
                    on_line(line)

            log.info(
                "week %d: airflow dags test inventory_retraining %s -c '%s'", week, logical_date, json.dumps(run_conf)
            )
            result = airflow.run(
                run_conf,
                BUILD_DIR / f"dags-test-week{week}.log",
                logical_date=logical_date,
                env=stack.env(),
                echo=True,
                on_line=each_line,
            )
            if result.run is None:
                log.error("week %d: no run to read back (exit %d); see %s", week, result.returncode, result.log_path)
                return False
            summary = build_summary(result.run, s3=s3, bucket=PROJECT_BUCKET, conf=run_conf)
            summary.update(
                week=week,
                notifications=read_notifications(sqs, stack.provisioned["queue_url"]),
                run_log=str(result.log_path),
                run_s=round(time.monotonic() - week_started, 1),  # the run and reading it back
            )
            summaries.append(summary)
            print_summary(summary, BUILD_DIR / "summary.json", result.log_path)
            if not (result.ok and summary.get("state") == "success"):
                log.error("week %d ended %s: stopping the story here", week, summary.get("state"))
                return False
            return True

        # Week 3's new photos are taken while week 2 runs and arrive once week 2 has pinned its selection.
        new_photos = NewPhotos(
            s3, SOURCE_BUCKET, max(1, round(DEMO_IMAGES * NEW_IMAGES_SHARE)), SEED, first_index=DEMO_IMAGES + 1
        )
        try:
            for week in range(1, weeks + 1):
                on_line = None
                if week == 3:
                    seeded = new_photos.arrived()
                    log.info("week 3: %d new photos arrived in s3://%s", seeded["images"], SOURCE_BUCKET)
                elif week == 2:
                    log.info("week 2: nothing changed in s3://%s since week 1", SOURCE_BUCKET)
                    if weeks >= 3:
                        new_photos.take()
                        on_line = new_photos.on_line
                ok = run(week, conf, WEEK_DATES[week - 1], on_line)
                if not ok:
                    break
            if ok and os.environ.get("DEMO_ROLLBACK"):
                ok = rollback_story(env, conf, run)
        finally:
            new_photos.close()
            reviewer.stop()
    final = {
        **(summaries[-1] if summaries else {}),
        "weeks": summaries,
        "wall_time_s": round(time.monotonic() - started, 1),
        "setup_s": round(setup_s, 1),
    }
    (BUILD_DIR / "summary.json").write_text(json.dumps(final, indent=2, default=str))
    print(f"\nweekly story: {' -> '.join((s.get('decision') or {}).get('status') or '?' for s in summaries)}")
    print(f"summary:  {BUILD_DIR / 'summary.json'}  ({final['wall_time_s']} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
