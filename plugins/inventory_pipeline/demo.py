"""`make demo`: the whole loop on this machine, with no AWS account.

Starts the local stack, seeds a source bucket with synthetic ABID-like data in the public bucket's layout,
runs `airflow dags test inventory_retraining` with quick-run Params against it, writes
build/demo/summary.json, prints where the report is, and stops what it started. Exits non-zero when the run
fails (the summary is written either way).

`DEMO_CONF='{"epochs": 5}' make demo` merges that JSON into the run's conf.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from typing import Any

from inventory_pipeline.airflow_runner import PROJECT_ROOT, airflow_env, dags_test, db_migrate

log = logging.getLogger("inventory_pipeline.demo")

BUILD_DIR = PROJECT_ROOT / "build" / "demo"
SOURCE_BUCKET = "abid-synthetic-source"
PROJECT_BUCKET = "inventory-retraining"
DEMO_IMAGES = int(os.environ.get("DEMO_IMAGES", "600"))
# Quick-run Params: a small dataset and the small CNN, so the loop finishes in minutes on 2 CPU cores.
QUICK_RUN_CONF: dict[str, Any] = {
    "source_bucket": SOURCE_BUCKET,
    "file_list": f"s3://{SOURCE_BUCKET}/file_list.json",
    "per_class_limit": 0,
    "model": "small_cnn",
    "epochs": 4,
    "batch_size": 32,
    "lr": 0.002,
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


def read_run_summary(env: dict[str, str]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "inventory_pipeline.run_summary"], env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"could not read the run back from Airflow's DB: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    from inventory_pipeline.aws_clients import make_client
    from inventory_pipeline.dataset.seed import seed_synthetic
    from inventory_pipeline.demo_summary import build_summary, print_summary
    from inventory_pipeline.local_aws.stack import LocalStack

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    conf = demo_conf()
    started = time.monotonic()
    with LocalStack(BUILD_DIR / "local-stack") as stack:
        log.info("local stack up: %s", stack.endpoints)
        creds = {"aws_access_key_id": "local-access-key", "aws_secret_access_key": "local-secret-key"}
        s3 = make_client("s3", endpoint_url=stack.endpoints["s3"], region_name=stack.region, **creds)
        s3.create_bucket(Bucket=PROJECT_BUCKET)
        seeded = seed_synthetic(s3, SOURCE_BUCKET, prefix="", images=DEMO_IMAGES, seed=7)
        log.info("seeded s3://%s with %s synthetic images %s", SOURCE_BUCKET, seeded["images"], seeded["counts"])

        env = airflow_env(
            PROJECT_ROOT / "build" / "airflow",
            {
                **stack.env(),
                "INVENTORY_BUCKET": PROJECT_BUCKET,
                "INVENTORY_REPORT_DIR": str(BUILD_DIR / "reports"),
                # Local jobs take a minute or two: poll every few seconds instead of every minute.
                "INVENTORY_POKE_INTERVAL_S": "4",
            },
        )
        log.info("preparing Airflow's metadata DB in %s", env["AIRFLOW_HOME"])
        db_migrate(env)
        log.info("running: airflow dags test inventory_retraining -c '%s'", json.dumps(conf))
        result = dags_test(env, conf, log_path=BUILD_DIR / "dags-test.log", echo=True)
        run = read_run_summary(env)
        summary = build_summary(run, s3=s3, bucket=PROJECT_BUCKET, conf=conf)
        summary["wall_time_s"] = round(time.monotonic() - started, 1)
    (BUILD_DIR / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print_summary(summary, BUILD_DIR / "summary.json", result.log_path)
    ok = result.ok and summary.get("state") == "success"
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
