"""Run one training job (a separate process per job, started by the local SageMaker server).

Starting -> Downloading (code, channels) -> Training (one process per host, system profiler, log shipping,
metrics to CloudWatch, debugger rules following the trial) -> Uploading (model.tar.gz, output.tar.gz, debug
output, profiler output) -> Completed | Failed; the ProfilerReport and the debugger rules' conclusions then finish
and update their own statuses.

StopTrainingJob and MaxRuntimeInSeconds end a job as SageMaker does: `Stopping`, SIGTERM to each host's entry
process, a window (`INVENTORY_LOCAL_STOP_WINDOW_S`, SageMaker's 120 s by default) to save /opt/ml/model, SIGKILL
of whatever is left, then the model artifacts are uploaded and the job is Stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from inventory_pipeline.aws_call_recorder import EXECUTION_ROLE, install_from_env
from inventory_pipeline.aws_clients import make_client
from inventory_pipeline.local_aws.runner import container, outputs, workspace
from inventory_pipeline.local_aws.runner.job_store import JobStore
from inventory_pipeline.local_aws.runner.logs import LogShipper

log = logging.getLogger("inventory_pipeline.local_aws.runner")
TRAINING_CODE_DIR = Path(__file__).resolve().parents[4] / "training_code"
STOP_WINDOW_ENV = "INVENTORY_LOCAL_STOP_WINDOW_S"
SAGEMAKER_STOP_WINDOW_S = 120.0  # what SageMaker leaves a container between SIGTERM and SIGKILL
_PROGRESS = ("Downloading", "Training", "Uploading")
_HP_RESERVED = ("sagemaker_program", "sagemaker_submit_directory", "sagemaker_region",
                "sagemaker_container_log_level", "sagemaker_job_name")  # fmt: skip


class JobFailed(Exception):
    pass


def stop_window_s() -> float:
    """Seconds between SIGTERM and SIGKILL when a job is stopped (tests and demos shorten it)."""
    text = os.environ.get(STOP_WINDOW_ENV, "")
    try:
        return max(0.0, float(text)) if text else SAGEMAKER_STOP_WINDOW_S
    except ValueError:
        log.warning("%s=%r is not a number of seconds: using %.0f", STOP_WINDOW_ENV, text, SAGEMAKER_STOP_WINDOW_S)
        return SAGEMAKER_STOP_WINDOW_S


def billable_seconds(job: dict[str, Any], training_s: int) -> int:
    """BillableTimeInSeconds as AWS reports it: per instance (clients multiply by InstanceCount themselves);
    on-demand instances bill the whole training time."""
    return training_s


class JobRunner:
    def __init__(self, store: JobStore, name: str, s3: Any, logs: Any, s3_endpoint: str, metrics: Any = None):
        self.store, self.name, self.s3, self.logs, self.s3_endpoint = store, name, s3, logs, s3_endpoint
        self.metrics = metrics  # a MetricPublisher, or None
        self.job = store.read(name)
        self.work = store.work_dir(name)
        self.hosts = [f"algo-{i + 1}" for i in range(int(self.job["ResourceConfig"]["InstanceCount"]))]
        self.host_dirs = {h: workspace.HostDirs(self.work / h) for h in self.hosts}
        self.started = time.time()
        self.instances_started: float | None = None  # TrainingStartTime: instances up, billing starts
        self.training_started: float | None = None
        self.log_tail: list[str] = []
        self.metric_values: dict[str, float] = {}
        self.metric_patterns = [
            (m["Name"], re.compile(m["Regex"]))
            for m in self.job.get("AlgorithmSpecification", {}).get("MetricDefinitions", [])
        ]
        self._lock = threading.Lock()
        self.on_update: Any = None  # called with the job after UpdateTrainingJob (the profiler applies it)

    # --- status -----------------------------------------------------------------------------------------

    def secondary(self, status: str, message: str) -> None:
        now = time.time()

        def change(job: dict[str, Any]) -> None:
            if job.get("TrainingJobStatus") == "Stopping" and status in _PROGRESS:
                return  # a job being stopped shows Stopping until it has stopped
            transitions = job.setdefault("SecondaryStatusTransitions", [])
            if transitions and "EndTime" not in transitions[-1]:
                transitions[-1]["EndTime"] = now
            transitions.append({"Status": status, "StartTime": now, "StatusMessage": message})
            job["SecondaryStatus"] = status

        self.job = self.store.update(self.name, change)
        log.info("%s: %s (%s)", self.name, status, message)

    def finish(self, status: str, secondary: str, message: str, failure: str | None = None) -> None:
        self.secondary(secondary, message)
        now = time.time()

        def change(job: dict[str, Any]) -> None:
            job["TrainingJobStatus"] = status
            job["SecondaryStatusTransitions"][-1]["EndTime"] = now
            if failure:
                job["FailureReason"] = failure[:1024]
            if self.instances_started:
                # AWS: billed from TrainingStartTime (instances up, before the download) to TrainingEndTime
                # (after the upload); the training time is that interval.
                job["TrainingStartTime"] = self.instances_started
                job["TrainingEndTime"] = now
                job["TrainingTimeInSeconds"] = max(1, int(now - self.instances_started))
                job["BillableTimeInSeconds"] = billable_seconds(job, job["TrainingTimeInSeconds"])
            if job.get("ResourceConfig", {}).get("KeepAlivePeriodInSeconds"):
                # the local runner keeps no instances after a job: a warm pool asked for ends with the job
                job["WarmPoolStatus"] = {"Status": "Terminated", "ResourceRetainedBillableTimeInSeconds": 0}
            job["FinalMetricDataList"] = [
                {"MetricName": name, "Value": value, "Timestamp": now} for name, value in self.metric_values.items()
            ]

        self.job = self.store.update(self.name, change)

    # --- steps ------------------------------------------------------------------------------------------

    def download(self) -> dict[str, Path]:
        self.instances_started = time.time()
        self.secondary("Downloading", "Downloading input data")
        hp = {k: _decode(v) for k, v in self.job.get("HyperParameters", {}).items()}
        if not container.uses_container_entrypoint(self.job):  # script mode: the framework image runs the program
            if "sagemaker_submit_directory" not in hp or "sagemaker_program" not in hp:
                raise JobFailed(
                    "ClientError: HyperParameters must name sagemaker_program and sagemaker_submit_directory "
                    "(or AlgorithmSpecification a ContainerEntrypoint)"
                )
            workspace.extract_sourcedir(self.s3, str(hp["sagemaker_submit_directory"]), self.work / "code")
            if not (self.work / "code" / str(hp["sagemaker_program"])).is_file():
                raise JobFailed(f"ClientError: the entry point {hp['sagemaker_program']} is not in the source code")
        channels = {}
        for channel in self.job.get("InputDataConfig", []):
            name = channel["ChannelName"]
            uri = channel["DataSource"]["S3DataSource"]["S3Uri"]
            count = workspace.download_channel(self.s3, name, uri, self.work / "data" / name)
            log.info("channel %s: %d objects from %s", name, count, uri)
            channels[name] = self.work / "data" / name
        for host in self.hosts:
            workspace.write_configs(self.host_dirs[host], self.job, host, self.hosts)
            if container.uses_container_entrypoint(self.job):
                container.link_channels(self.host_dirs[host].root / "input" / "data", channels)
        return channels

    def host_env(self, host: str, channels: dict[str, Path], master_port: int) -> dict[str, str]:
        dirs = self.host_dirs[host]
        hp = {k: _decode(v) for k, v in self.job.get("HyperParameters", {}).items()}
        user_hp = {k: v for k, v in hp.items() if k not in _HP_RESERVED}
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "AWS_"))}
        env.update(self.job.get("Environment", {}))
        env.update({
            "SM_MODEL_DIR": str(dirs.model),
            "SM_OUTPUT_DIR": str(dirs.output),
            "SM_OUTPUT_DATA_DIR": str(dirs.output_data),
            "SM_OUTPUT_FAILURE": str(dirs.output / "failure"),
            "SM_INPUT_DIR": str(dirs.root / "input"),
            "SM_INPUT_CONFIG_DIR": str(dirs.input_config),
            "SM_CHANNELS": json.dumps(sorted(channels)),
            "SM_HPS": json.dumps(user_hp),
            "SM_HOSTS": json.dumps(self.hosts),
            "SM_CURRENT_HOST": host,
            "SM_NUM_CPUS": str(max(1, (os.cpu_count() or 1) // len(self.hosts))),
            "SM_NUM_GPUS": "0",
            "SM_USER_ENTRY_POINT": str(hp.get("sagemaker_program", "")),
            "SM_MODULE_DIR": str(hp.get("sagemaker_submit_directory", "")),
            "SM_TRAINING_ENV": json.dumps({"job_name": self.name, "hosts": self.hosts, "current_host": host}),
            "MASTER_ADDR": "127.0.0.1",  # algo-N does not resolve on this machine
            "MASTER_PORT": str(master_port),
            "INVENTORY_OFFLINE": "1",  # no weight downloads: pretrained weights come from the pretrained channel
            "PYTHONUNBUFFERED": "1",
            "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python",
            "SMDEBUG_CONFIG_FILE_PATH": str(dirs.input_config / "debughookconfig.json"),
        })  # fmt: skip
        env.update({f"SM_CHANNEL_{name.upper()}": str(path) for name, path in channels.items()})
        env.update({"TRAINING_JOB_NAME": self.name, "TRAINING_JOB_ARN": self.job["TrainingJobArn"]})
        # The job's own S3 calls (self-hosted rules mode: smdebug and the sampler write to S3) reach the local S3.
        env.update({
            "AWS_ENDPOINT_URL_S3": self.s3_endpoint,
            "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "local-access-key"),
            "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "local-secret-key"),
            "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        })  # fmt: skip
        return env

    def args(self) -> list[str]:
        hp = {k: _decode(v) for k, v in self.job.get("HyperParameters", {}).items()}
        args = []
        for key, value in sorted(hp.items()):
            if key not in _HP_RESERVED:
                args += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
        return args

    def train(self, channels: dict[str, Path]) -> None:
        from inventory_pipeline.local_aws.stack import free_port

        self.secondary("Training", "Training image download completed. Training in progress.")
        self.training_started = time.time()
        in_container = container.uses_container_entrypoint(self.job)
        program = (" ".join(self.job["AlgorithmSpecification"]["ContainerEntrypoint"]) if in_container
                   else str(_decode(self.job["HyperParameters"]["sagemaker_program"])))  # fmt: skip
        port = free_port()
        processes: dict[str, subprocess.Popen] = {}
        shippers: dict[str, LogShipper] = {}
        readers = []
        for host in self.hosts:
            shippers[host] = LogShipper(self.logs, self.name, host)
            env = self.host_env(host, channels, port)
            if in_container:
                root = self.host_dirs[host].root
                env.update({f"SM_CHANNEL_{n.upper()}": str(root / "input" / "data" / n) for n in channels})
                command, cwd, env = container.command(self.job, root), root, container.container_paths(env, root)
            else:
                command, cwd = [sys.executable, program, *self.args()], self.work / "code"
            processes[host] = subprocess.Popen(
                command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                start_new_session=True,
            )  # fmt: skip
            reader = threading.Thread(target=self._pump, args=(processes[host], shippers[host], host), daemon=True)
            reader.start()
            readers.append(reader)
        max_runtime = float(self.job.get("StoppingCondition", {}).get("MaxRuntimeInSeconds", 86400))
        outcome = "done"
        while any(p.poll() is None for p in processes.values()):
            if self.store.take_update_request(self.name) and self.on_update is not None:
                self.on_update(self.store.read(self.name))
            if self.store.stop_requested(self.name):
                outcome = "stopped"
            elif time.time() - self.training_started > max_runtime:
                outcome = "timeout"
            if outcome != "done":
                from inventory_pipeline.local_aws.sagemaker_api import mark_stopping

                self.job = self.store.update(self.name, mark_stopping)
                self._stop_processes(processes, stop_window_s())
                break
            time.sleep(0.3)
        for reader in readers:
            reader.join(timeout=10)
        for shipper in shippers.values():
            shipper.close()
        if outcome == "stopped":
            raise _Stopped("Stopped", "Training job stopped by StopTrainingJob")
        if outcome == "timeout":
            raise _Stopped("MaxRuntimeExceeded", f"Training job exceeded MaxRuntimeInSeconds ({max_runtime:.0f})")
        failed = {h: p.returncode for h, p in processes.items() if p.returncode != 0}
        if failed:
            host = sorted(failed)[0]
            failure_file = self.host_dirs[host].output / "failure"
            detail = failure_file.read_text().strip() if failure_file.exists() else "\n".join(self.log_tail[-5:])
            raise JobFailed(
                f"AlgorithmError: ExecuteUserScriptError: {program} exited with code {failed[host]} on {host}: {detail}"
            )

    def _pump(self, process: subprocess.Popen, shipper: LogShipper, host: str) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            shipper.write(line)
            found = {}
            with self._lock:
                self.log_tail = (self.log_tail + [line.rstrip()])[-50:]
                for name, pattern in self.metric_patterns:
                    for match in pattern.finditer(line):
                        try:
                            found[name] = self.metric_values[name] = float(match.group(1))
                        except (ValueError, IndexError):
                            pass
            if found and self.metrics is not None:
                self.metrics.record(host, found)

    @staticmethod
    def _stop_processes(processes: dict[str, subprocess.Popen], window_s: float) -> None:
        """As `docker stop` on SageMaker: SIGTERM to each host's entry process, the window to save the model,
        then SIGKILL to everything the host started (the entry process's group) that is still there."""
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.time() + window_s
        for process in processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                log.warning("pid %d still running %.0f s after SIGTERM: SIGKILL", process.pid, window_s)
        for process in processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # its group: session leader's pid
            process.wait()

    def upload(self) -> None:
        self.secondary("Uploading", "Uploading generated training model")  # a stopping job stays Stopping
        out = self.job["OutputDataConfig"]["S3OutputPath"].rstrip("/")
        bucket, prefix = workspace.split_s3_uri(f"{out}/{self.name}/output")
        main = self.host_dirs[self.hosts[0]]
        self.s3.put_object(Bucket=bucket, Key=f"{prefix}/model.tar.gz", Body=outputs.tar_gz(main.model))
        self.s3.put_object(Bucket=bucket, Key=f"{prefix}/output.tar.gz", Body=outputs.tar_gz(main.output_data))
        artifact = f"s3://{bucket}/{prefix}/model.tar.gz"
        self.job = self.store.update(self.name, lambda j: j.update(ModelArtifacts={"S3ModelArtifacts": artifact}))

    def upload_debug_output(self) -> None:
        hook = self.job.get("DebugHookConfig")
        if not hook:
            return
        bucket, prefix = workspace.split_s3_uri(f"{hook['S3OutputPath'].rstrip('/')}/{self.name}/debug-output")
        for host in self.hosts:
            outputs.upload_tree(self.s3, self.host_dirs[host].tensors, bucket, prefix)


class _Stopped(Exception):
    def __init__(self, secondary: str, message: str):
        super().__init__(message)
        self.secondary, self.message = secondary, message


def _decode(value: str) -> Any:
    """Hyperparameters arrive JSON-encoded by the SDK ('"train.py"', '3'); plain strings are kept as is."""
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value


def _load_rule_engine() -> None:
    try:
        import inventory_pipeline.rules.debugger  # noqa: F401
        import inventory_pipeline.rules.profiler  # noqa: F401
    except Exception:  # the rules report the import error themselves when they run
        log.exception("could not load the rule engine")


def run(store: JobStore, name: str, s3_endpoint: str, logs_endpoint: str, region: str,
        cloudwatch_endpoint: str | None = None) -> None:  # fmt: skip
    from inventory_pipeline.local_aws.runner.metrics import MetricPublisher

    s3 = make_client("s3", endpoint_url=s3_endpoint, region_name=region)
    logs = make_client("logs", endpoint_url=logs_endpoint, region_name=region)
    cloudwatch = make_client("cloudwatch", endpoint_url=cloudwatch_endpoint or logs_endpoint, region_name=region)
    metrics = MetricPublisher(cloudwatch, name)
    runner = JobRunner(store, name, s3, logs, s3_endpoint, metrics)
    from inventory_pipeline.local_aws.runner.profiling import JobProfiler
    from inventory_pipeline.local_aws.runner.rule_evaluation import RuleEvaluations

    profiler = JobProfiler(runner)
    runner.on_update = profiler.apply_update
    rules = RuleEvaluations(runner)
    # Downloading waits on the network: load the rule engine (smdebug and its pure-Python protobuf take
    # seconds of CPU) now, rather than when training starts and needs every core.
    warm = threading.Thread(target=_load_rule_engine, daemon=True, name="load-rule-engine")
    if runner.job.get("DebugRuleConfigurations") or runner.job.get("ProfilerRuleConfigurations"):
        warm.start()  # a job without rules never needs it
    try:
        channels = runner.download()
        if warm.is_alive():
            warm.join()
        if store.stop_requested(name):  # stopped before any training: nothing to save or upload
            raise _Stopped("Stopped", "Training job stopped by StopTrainingJob")
        profiler.start()
        rules.start_debugger_rules()
        try:
            runner.train(channels)
        finally:
            profiler.stop()
            rules.training_over()
            metrics.close()
        runner.upload()
        runner.finish("Completed", "Completed", "Training job completed")
    except _Stopped as stop:
        reason = stop.message if stop.secondary != "Stopped" else None
        if runner.training_started:
            # What the job saved in /opt/ml/model during the stop window is its model, as on SageMaker.
            try:
                runner.upload()
            except Exception as exc:
                log.exception("could not upload the stopped job's model")
                reason = f"{stop.message}; the model artifacts could not be uploaded: {exc}"
        runner.finish("Stopped", stop.secondary, stop.message, failure=reason)
    except (JobFailed, workspace.WorkspaceError, container.ContainerUnavailable) as exc:
        runner.finish("Failed", "Failed", str(exc)[:200], failure=str(exc))
    except Exception as exc:  # a runner bug must still end the job, with the reason
        log.exception("runner error")
        runner.finish("Failed", "Failed", "internal error", failure=f"InternalServerError: {type(exc).__name__}: {exc}")
    finally:
        metrics.close()
        # As on AWS, the debug output and the rule evaluations can finish after the job's own status.
        try:
            runner.upload_debug_output()
            profiler.upload()
        except Exception:
            log.exception("could not upload debug/profiler output")
        rules.finish()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--job", required=True)
    parser.add_argument("--s3-endpoint", required=True)
    parser.add_argument("--logs-endpoint", required=True)
    parser.add_argument("--cloudwatch-endpoint", default=None)
    parser.add_argument("--region", default="us-east-1")
    args = parser.parse_args(argv)
    # Everything this process and its training processes call, they call as the job's execution role.
    install_from_env(principal=EXECUTION_ROLE)  # no-op unless INVENTORY_RECORD_AWS_CALLS is set
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run(JobStore(args.state_dir), args.job, args.s3_endpoint, args.logs_endpoint, args.region, args.cloudwatch_endpoint)
    return 0


if __name__ == "__main__":
    sys.exit(main())
