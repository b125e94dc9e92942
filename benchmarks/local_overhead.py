"""What the local SageMaker server + runner cost over running train.py directly, side by side in one run.

(a) train.py as a subprocess under the SM_* contract on local channels, with the job's own debugger hook
    configuration (as SageMaker's container gets it): the same training code doing the same work;
(b) the same job (same data, hyperparameters and code) through CreateTrainingJob on the local stack, until
    the job and every rule evaluation are terminal (download, profiler, debugger hook, rules, uploads).
Runs (a) and (b) interleaved `--repeats` times and compares medians. Prints one JSON object: direct_s,
runner_s, overhead_ratio (= b/a), each run's seconds and where the runner's time went. Target
overhead_ratio <= 1.15. `--job-features` turns on Managed Spot (per-epoch checkpoints, synced to S3 by the
runner; the direct run writes the same checkpoints locally) and network isolation (the job in its own network
namespace), so their cost is measured too.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from script_mode import run_train, script_env

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))

from inventory_pipeline.aws.clients import make_client  # noqa: E402
from inventory_pipeline.dataset.seed import seed_synthetic  # noqa: E402
from inventory_pipeline.dataset.stages import build_dataset  # noqa: E402
from inventory_pipeline.local_aws.runner.workspace import download_channel  # noqa: E402
from inventory_pipeline.local_aws.stack import LocalStack  # noqa: E402
from inventory_pipeline.settings import Settings  # noqa: E402
from inventory_pipeline.training.package import upload_sourcedir  # noqa: E402
from inventory_pipeline.training.request import build_training_request  # noqa: E402

OBSERVER_POLL_S = 5.0


def phases(job: dict) -> dict[str, float]:
    """Where a runner job's time went: each secondary status's seconds, and how long its rules ran past it."""
    rules = job.get("DebugRuleEvaluationStatuses", []) + job.get("ProfilerRuleEvaluationStatuses", [])
    seconds = {
        t["Status"]: round((t.get("EndTime", t["StartTime"]) - t["StartTime"]).total_seconds(), 2)
        for t in job["SecondaryStatusTransitions"]
    }
    last_rule = max((r["LastModifiedTime"] for r in rules), default=job["TrainingEndTime"])
    seconds["rules_after_job"] = round(max(0.0, (last_rule - job["TrainingEndTime"]).total_seconds()), 2)
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs of each; medians are compared")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--job-features", action="store_true", help="use_spot + network_isolation on")
    args = parser.parse_args()
    creds = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench"}
    with tempfile.TemporaryDirectory() as tmp, LocalStack(Path(tmp) / "stack") as stack:
        s3 = make_client("s3", stack.endpoints["s3"], stack.region, **creds)
        sm = make_client("sagemaker", stack.endpoints["sagemaker"], stack.region, **creds)
        seed_synthetic(s3, "bench-src", images=args.images, seed=2)
        s3.create_bucket(Bucket="bench")
        settings = Settings(
            source_bucket="bench-src",
            file_list="s3://bench-src/file_list.json",
            bucket="bench",
            model="small_cnn",
            epochs=args.epochs,
            instance_count=1,
            use_spot=args.job_features,
            enable_network_isolation=args.job_features,
        )
        dataset = build_dataset(s3, settings)
        code_uri = upload_sourcedir(s3, "bench", settings.root).s3_uri

        def request_for(name: str) -> dict:
            # Each job its own output, debug-output and checkpoint prefixes, as the DAG names them: a shared
            # checkpoint prefix would make every later Spot job resume from the first one's last epoch.
            return build_training_request(settings, name, dataset["channels"], code_uri)

        request = request_for("overhead-job-direct")

        # (a) direct: the same channels on local disk, the same arguments and hook configuration; no profiler,
        # no rules, no log shipping, no uploads (what the runner adds).
        local = Path(tmp) / "direct"
        local.mkdir()
        hook_config = local / "debughookconfig.json"
        hook_config.write_text(json.dumps({**request["DebugHookConfig"], "LocalPath": str(local / "tensors")}))
        for channel in request["InputDataConfig"]:  # laid out as the runner (and SageMaker) lay them out
            source = channel["DataSource"]["S3DataSource"]
            download_channel(
                s3,
                channel["ChannelName"],
                source["S3Uri"],
                local / channel["ChannelName"],
                data_type=source["S3DataType"],
            )
        hp = {k: json.loads(v) for k, v in request["HyperParameters"].items() if not k.startswith("sagemaker_")}
        env = script_env({s: local / s for s in ("train", "valid", "test")}, local, hook_config)
        if args.job_features:  # train.py checkpoints every epoch in both; only the runner syncs them to S3
            env["INVENTORY_CHECKPOINT_DIR"] = str(local / "checkpoints")
        argv = [a for k, v in hp.items() for a in (f"--{k}", str(v))]

        def direct() -> float:
            shutil.rmtree(local / "tensors", ignore_errors=True)  # smdebug refuses an existing trial
            shutil.rmtree(local / "checkpoints", ignore_errors=True)  # else the next run resumes, not trains
            started = time.perf_counter()
            run_train(argv, env).check_returncode()
            return time.perf_counter() - started

        def through_runner(name: str) -> tuple[float, dict]:
            # Ends at the job's own timestamps (its last change and its rules' last), read with this machine's
            # clock, so how often the observer polls adds no detection delay. It polls every OBSERVER_POLL_S (a
            # sensor polls every 60 s, a boto3 waiter every 120 s): each describe costs this process and the
            # server tens of ms of CPU, which on 2 cores would be charged to the runner it measures.
            job_request = request_for(name)  # the caller's work (0.35 s, mostly the SDK's image URI lookups)
            started = time.time()
            sm.create_training_job(**job_request)
            while True:
                time.sleep(OBSERVER_POLL_S)
                job = sm.describe_training_job(TrainingJobName=name)
                rules = job.get("DebugRuleEvaluationStatuses", []) + job.get("ProfilerRuleEvaluationStatuses", [])
                if job["TrainingJobStatus"] not in ("InProgress", "Stopping") and all(
                    r["RuleEvaluationStatus"] not in ("InProgress", "Stopping") for r in rules
                ):
                    ended = max([job["LastModifiedTime"], *(r["LastModifiedTime"] for r in rules)])
                    return ended.timestamp() - started, job

        # Interleaved repeats, medians of each: this machine is shared and noisy.
        direct_runs, runner_runs, jobs = [], [], []
        for i in range(args.repeats):
            direct_runs.append(direct())
            seconds, job = through_runner(f"overhead-job-{i}")
            runner_runs.append(seconds)
            jobs.append(job)
    direct_s, runner_s = statistics.median(direct_runs), statistics.median(runner_runs)
    job = jobs[runner_runs.index(sorted(runner_runs)[len(runner_runs) // 2])]
    rules = job.get("DebugRuleEvaluationStatuses", []) + job.get("ProfilerRuleEvaluationStatuses", [])
    result = {
        "images": args.images,
        "epochs": args.epochs,
        "repeats": args.repeats,
        "job_features": args.job_features,
        "job_statuses": sorted({j["TrainingJobStatus"] for j in jobs}),
        "rule_statuses": {r["RuleConfigurationName"]: r["RuleEvaluationStatus"] for r in rules},
        "direct_runs_s": [round(x, 2) for x in direct_runs],
        "runner_runs_s": [round(x, 2) for x in runner_runs],
        "direct_s": round(direct_s, 2),
        "runner_s": round(runner_s, 2),
        "overhead_ratio": round(runner_s / direct_s, 3),
        "runner_phases_s": phases(job),
        "runner_runs_phases_s": [phases(j) for j in jobs],
    }
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
