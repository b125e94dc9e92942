"""Run one training job (a separate process per job, started by the local SageMaker server).

Starting -> Downloading (code, channels) -> Training (one process per host, system profiler, log shipping,
debugger rules following the trial, MaxRuntime and Stop honoured) -> Uploading (model.tar.gz, output.tar.gz,
debug output, profiler output) -> Completed | Failed | Stopped; the ProfilerReport and the debugger rules'
conclusions then finish and update their own statuses.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from inventory_pipeline.aws_call_recorder import EXECUTION_ROLE, install_from_env
from inventory_pipeline.aws_clients import make_client
from inventory_pipeline.local_aws.runner import outputs, workspace
from inventory_pipeline.local_aws.runner.job_store import JobStore
from inventory_pipeline.local_aws.runner.logs import LogShipper

log = logging.getLogger("inventory_pipeline.local_aws.runner")
TRAINING_CODE_DIR = Path(__file__).resolve().parents[4] / "training_code"
_HP_RESERVED = ("sagemaker_program", "sagemaker_submit_directory", "sagemaker_region",
                "sagemaker_container_log_level", "sagemaker_job_name")  # fmt: skip


class JobFailed(Exception):
    pass


class JobRunner:
    def __init__(self, store: JobStore, name: str, s3: Any, logs: Any, s3_endpoint: str):
        self.store, self.name, self.s3, self.logs, self.s3_endpoint = store, name, s3, logs, s3_endpoint
        self.job = store.read(name)
        self.work = store.work_dir(name)
        self.hosts = [f"algo-{i + 1}" for i in range(int(self.job["ResourceConfig"]["InstanceCount"]))]
        self.host_dirs = {h: workspace.HostDirs(self.work / h) for h in self.hosts}
        self.started = time.time()
        self.training_started: float | None = None
        self.log_tail: list[str] = []
        self.metric_values: dict[str, float] = {}
        self.metric_patterns = [
            (m["Name"], re.compile(m["Regex"]))
            for m in self.job.get("AlgorithmSpecification", {}).get("MetricDefinitions", [])
        ]
        self._lock = threading.Lock()
        self._checkpoints: Any = None
        self.unbilled_s = 0.0  # Spot: time spent without instances (interrupted, waiting for capacity)
        self.interruptions = 0

    # --- status -----------------------------------------------------------------------------------------

    def secondary(self, status: str, message: str) -> None:
        now = time.time()

        def change(job: dict[str, Any]) -> None:
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
        trained_s = now - (self.training_started or now)
        # Per instance, as AWS reports it (clients multiply by InstanceCount); Spot waits are not billed.
        billable = int(trained_s - self.unbilled_s)  # truncated like TrainingTimeInSeconds: never above it

        def change(job: dict[str, Any]) -> None:
            job["TrainingJobStatus"] = status
            job["SecondaryStatusTransitions"][-1]["EndTime"] = now
            if failure:
                job["FailureReason"] = failure[:1024]
            if self.training_started:
                job["TrainingStartTime"] = self.training_started
                job["TrainingEndTime"] = now
                job["TrainingTimeInSeconds"] = max(1, int(now - self.training_started))
                job["BillableTimeInSeconds"] = max(1, billable)
            job["FinalMetricDataList"] = [
                {"MetricName": name, "Value": value, "Timestamp": now} for name, value in self.metric_values.items()
            ]

        self.job = self.store.update(self.name, change)

    # --- steps ------------------------------------------------------------------------------------------

    def download(self) -> dict[str, Path]:
        self.secondary("Downloading", "Downloading input data")
        hp = {k: _decode(v) for k, v in self.job.get("HyperParameters", {}).items()}
        if "sagemaker_submit_directory" not in hp or "sagemaker_program" not in hp:
            raise JobFailed("ClientError: HyperParameters must name sagemaker_program and sagemaker_submit_directory")
        workspace.extract_sourcedir(self.s3, str(hp["sagemaker_submit_directory"]), self.work / "code")
        if not (self.work / "code" / str(hp["sagemaker_program"])).is_file():
            raise JobFailed(f"ClientError: the entry point {hp['sagemaker_program']} is not in the source code")
        channels = {}
        for channel in self.job.get("InputDataConfig", []):
            name = channel["ChannelName"]
            source = channel["DataSource"]["S3DataSource"]
            uri = source["S3Uri"]
            count = workspace.download_channel(self.s3, name, uri, self.work / "data" / name,
                                               data_type=source.get("S3DataType", "S3Prefix"))  # fmt: skip
            log.info("channel %s: %d objects from %s", name, count, uri)
            channels[name] = self.work / "data" / name
        for host in self.hosts:
            workspace.write_configs(self.host_dirs[host], self.job, host, self.hosts)
        return channels

    def host_env(self, host: str, channels: dict[str, Path], master_port: int) -> dict[str, str]:
        dirs = self.host_dirs[host]
        hp = {k: _decode(v) for k, v in self.job.get("HyperParameters", {}).items()}
        user_hp = {k: v for k, v in hp.items() if k not in _HP_RESERVED}
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "AWS_"))}
        # Environment values naming SageMaker's /opt/ml paths (a CheckpointConfig LocalPath) name this host's.
        env.update({k: str(self.host_path(host, v)) if v.startswith("/opt/ml/") else v
                    for k, v in self.job.get("Environment", {}).items()})  # fmt: skip
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
            "SM_USER_ENTRY_POINT": str(hp["sagemaker_program"]),
            "SM_MODULE_DIR": str(hp["sagemaker_submit_directory"]),
            "SM_TRAINING_ENV": json.dumps({"job_name": self.name, "hosts": self.hosts, "current_host": host}),
            "MASTER_ADDR": "127.0.0.1",  # algo-N does not resolve on this machine
            "MASTER_PORT": str(master_port),
            "INVENTORY_OFFLINE": "1",  # no weight downloads: pretrained weights come from the pretrained channel
            "PYTHONUNBUFFERED": "1",
            "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python",
            "SMDEBUG_CONFIG_FILE_PATH": str(dirs.input_config / "debughookconfig.json"),
        })  # fmt: skip
        env.update({f"SM_CHANNEL_{name.upper()}": str(path) for name, path in channels.items()})
        if (self.work / "packages").is_dir():  # what install_requirements installed comes first
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.work / "packages"), env.get("PYTHONPATH")]))
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
        from inventory_pipeline.local_aws.runner.isolation import IsolatedNetwork, IsolationUnavailable

        self.secondary("Training", "Training image download completed. Training in progress.")
        self.training_started = time.time()
        program = str(_decode(self.job["HyperParameters"]["sagemaker_program"]))
        shippers = {host: LogShipper(self.logs, self.name, host) for host in self.hosts}
        network = IsolatedNetwork() if self.job.get("EnableNetworkIsolation") else contextlib.nullcontext()
        try:
            with network as isolated:
                self.install_requirements(isolated)
                self.restore_checkpoints()
                while True:  # one pass per Spot (re)start
                    outcome = self._run_processes(program, channels, shippers, isolated)
                    if outcome != "interrupted":
                        break
        except IsolationUnavailable as exc:
            raise JobFailed(f"ClientError: EnableNetworkIsolation: {exc}; the job was not run with network") from exc
        finally:
            for shipper in shippers.values():
                shipper.close()

    def _run_processes(self, program: str, channels: dict[str, Path], shippers: dict, isolated: Any) -> str:
        """Run the entry point on every host until it ends, is stopped, times out or its Spot capacity goes."""
        from inventory_pipeline.local_aws.stack import free_port

        port = free_port()
        processes: dict[str, subprocess.Popen] = {}
        readers = []
        for host in self.hosts:
            command = [sys.executable, program, *self.args()]
            processes[host] = subprocess.Popen(
                isolated.wrap(command) if isolated else command, cwd=self.work / "code",
                env=self.host_env(host, channels, port), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True, start_new_session=True,
            )  # fmt: skip
            reader = threading.Thread(target=self._pump, args=(processes[host], shippers[host]), daemon=True)
            reader.start()
            readers.append(reader)
        stopping = self.job.get("StoppingCondition", {})
        max_runtime = float(stopping.get("MaxRuntimeInSeconds", 86400))
        max_wait = float(stopping.get("MaxWaitTimeInSeconds", 0)) if self.job.get("EnableManagedSpotTraining") else 0
        outcome, capacity_wait, last_sync = "done", 0.0, time.monotonic()
        while any(p.poll() is None for p in processes.values()):
            interruption = self.store.take_interruption(self.name)
            if self.store.stop_requested(self.name):
                outcome = "stopped"
            elif time.time() - self.training_started - self.unbilled_s > max_runtime:
                outcome = "timeout"
            elif max_wait and time.time() - self.started > max_wait:
                outcome = "max_wait"
            elif interruption is not None and self.job.get("EnableManagedSpotTraining"):
                outcome, capacity_wait = "interrupted", interruption
            if outcome != "done":
                self._stop_processes(processes)
                break
            if self.checkpoints is not None and time.monotonic() - last_sync > 1.0:
                self.checkpoints.sync()
                last_sync = time.monotonic()
            time.sleep(0.3)
        for reader in readers:
            reader.join(timeout=10)
        if self.checkpoints is not None:
            self.checkpoints.sync()
        if outcome == "interrupted":
            self.spot_restart(capacity_wait)
            return outcome
        if outcome == "stopped":
            raise _Stopped("Stopped", "Training job stopped by StopTrainingJob")
        if outcome == "timeout":
            raise _Stopped("MaxRuntimeExceeded", f"Training job exceeded MaxRuntimeInSeconds ({max_runtime:.0f})")
        if outcome == "max_wait":
            raise _Stopped("MaxWaitTimeExceeded", f"Training job exceeded MaxWaitTimeInSeconds ({max_wait:.0f})")
        failed = {h: p.returncode for h, p in processes.items() if p.returncode != 0}
        if failed:
            host = sorted(failed)[0]
            failure_file = self.host_dirs[host].output / "failure"
            detail = failure_file.read_text().strip() if failure_file.exists() else "\n".join(self.log_tail[-5:])
            raise JobFailed(
                f"AlgorithmError: ExecuteUserScriptError: {program} exited with code {failed[host]} on {host}: {detail}"
            )
        return outcome

    def install_requirements(self, isolated: Any) -> None:
        """SageMaker's training toolkit pip-installs the code's requirements.txt before the entry point. The runner
        does the same for an offline one (wheels shipped in the archive, `--no-index`), into the job's own
        directory and inside the job's network namespace when isolated, so a download would fail here as on
        SageMaker. A requirements.txt that needs an index is not installed: this machine's environment already
        provides the project's packages, and a local job must not reach the internet either."""
        requirements = self.work / "code" / "requirements.txt"
        if not requirements.is_file() or not requirements.read_text().startswith("--no-index"):
            return
        command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-index",
                   "--target", str(self.work / "packages"), "-r", "requirements.txt"]  # fmt: skip
        # Only the requirements file says where wheels come from (no PIP_* settings of this machine).
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")} | {"PIP_CONFIG_FILE": os.devnull}
        done = subprocess.run(isolated.wrap(command) if isolated else command, cwd=self.work / "code", env=env,
                              capture_output=True, text=True)  # fmt: skip
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise JobFailed(f"AlgorithmError: InstallRequirementsError: pip install -r requirements.txt: {detail}")
        log.info("installed requirements.txt offline into %s", self.work / "packages")

    # --- Managed Spot ---------------------------------------------------------------------------------

    @property
    def checkpoints(self) -> Any:
        """The job's CheckpointConfig sync (None without one)."""
        config = self.job.get("CheckpointConfig")
        if not config:
            return None
        if self._checkpoints is None:
            from inventory_pipeline.local_aws.runner.checkpoints import CheckpointSync

            local = [self.host_path(h, config.get("LocalPath", "/opt/ml/checkpoints")) for h in self.hosts]
            self._checkpoints = CheckpointSync(self.s3, config["S3Uri"], local)
        return self._checkpoints

    def restore_checkpoints(self) -> None:
        if self.checkpoints is not None:
            self.checkpoints.restore()

    def spot_restart(self, capacity_wait: float) -> None:
        """What SageMaker does when Spot capacity is reclaimed: the instances go (the entry point had its SIGTERM
        window and the checkpoints are synced), the job waits for capacity (not billed), then restarts on fresh
        instances with the checkpoints restored and runs the entry point again."""
        self.secondary("Interrupted", "Training job interrupted: Spot capacity was reclaimed")
        interrupted = time.time()
        deadline = time.monotonic() + capacity_wait
        while time.monotonic() < deadline and not self.store.stop_requested(self.name):
            time.sleep(0.1)
        self.secondary("Restarting", "Restarting the training job on new Spot capacity")
        for host in self.hosts:  # a fresh instance: nothing of the interrupted one survives but the checkpoints
            for path in (self.host_dirs[host].model, self.host_dirs[host].output_data):
                shutil.rmtree(path, ignore_errors=True)
                path.mkdir(parents=True, exist_ok=True)
            (self.host_dirs[host].output / "failure").unlink(missing_ok=True)
        self.restore_checkpoints()
        self.unbilled_s += time.time() - interrupted
        self.interruptions += 1
        if self.store.stop_requested(self.name):
            raise _Stopped("Stopped", "Training job stopped by StopTrainingJob")
        self.secondary("Training", "Training resumed from the restored checkpoints")

    def host_path(self, host: str, path: str) -> Path:
        """A path of SageMaker's instance (/opt/ml/...) in this host's job directory."""
        relative = Path(path).relative_to("/opt/ml") if Path(path).is_relative_to("/opt/ml") else Path(path.lstrip("/"))
        return self.host_dirs[host].root / relative

    def _pump(self, process: subprocess.Popen, shipper: LogShipper) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            shipper.write(line)
            with self._lock:
                self.log_tail = (self.log_tail + [line.rstrip()])[-50:]
                for name, pattern in self.metric_patterns:
                    for match in pattern.finditer(line):
                        try:
                            self.metric_values[name] = float(match.group(1))
                        except (ValueError, IndexError):
                            pass

    @staticmethod
    def _stop_processes(processes: dict[str, subprocess.Popen]) -> None:
        for process in processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.time() + 10
        for process in processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def upload(self) -> None:
        self.secondary("Uploading", "Uploading generated training model")
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


def run(store: JobStore, name: str, s3_endpoint: str, logs_endpoint: str, region: str) -> None:
    s3 = make_client("s3", endpoint_url=s3_endpoint, region_name=region)
    logs = make_client("logs", endpoint_url=logs_endpoint, region_name=region)
    runner = JobRunner(store, name, s3, logs, s3_endpoint)
    from inventory_pipeline.local_aws.runner.profiling import JobProfiler
    from inventory_pipeline.local_aws.runner.rule_evaluation import RuleEvaluations

    profiler = JobProfiler(runner)
    rules = RuleEvaluations(runner)
    # Downloading waits on the network: load the rule engine (smdebug and its pure-Python protobuf take
    # seconds of CPU) now, rather than when training starts and needs every core.
    warm = threading.Thread(target=_load_rule_engine, daemon=True, name="load-rule-engine")
    warm.start()
    try:
        channels = runner.download()
        warm.join()
        profiler.start()
        rules.start_debugger_rules()
        try:
            runner.train(channels)
        finally:
            profiler.stop()
            rules.training_over()
        runner.upload()
        runner.finish("Completed", "Completed", "Training job completed")
    except _Stopped as stop:
        reason = stop.message if stop.secondary != "Stopped" else None
        runner.finish("Stopped", stop.secondary, stop.message, failure=reason)
    except (JobFailed, workspace.WorkspaceError) as exc:
        runner.finish("Failed", "Failed", str(exc)[:200], failure=str(exc))
    except Exception as exc:  # a runner bug must still end the job, with the reason
        log.exception("runner error")
        runner.finish("Failed", "Failed", "internal error", failure=f"InternalServerError: {type(exc).__name__}: {exc}")
    finally:
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
    parser.add_argument("--region", default="us-east-1")
    args = parser.parse_args(argv)
    # Everything this process and its training processes call, they call as the job's execution role.
    install_from_env(principal=EXECUTION_ROLE)  # no-op unless INVENTORY_RECORD_AWS_CALLS is set
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run(JobStore(args.state_dir), args.job, args.s3_endpoint, args.logs_endpoint, args.region)
    return 0


if __name__ == "__main__":
    sys.exit(main())
