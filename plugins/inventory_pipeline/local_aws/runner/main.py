"""Run one training job (a separate process per job, started by the local SageMaker server).

Starting -> Downloading (code, channels) -> Training (one process per host, system profiler, log shipping,
metrics to CloudWatch, debugger rules following the trial, MaxRuntime, Stop and Spot interruptions honoured) ->
Uploading (model.tar.gz, output.tar.gz, debug output, profiler output) -> Completed | Failed | Stopped; the
ProfilerReport and the debugger rules' conclusions then finish and update their own statuses.

StopTrainingJob and MaxRuntimeInSeconds end a job as SageMaker does: `Stopping`, SIGTERM to each host's entry
process, a window (`INVENTORY_LOCAL_STOP_WINDOW_S`, SageMaker's 120 s by default) to save /opt/ml/model, SIGKILL
of whatever is left, then the model artifacts are uploaded and the job is Stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
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

from inventory_pipeline.aws.call_recorder import EXECUTION_ROLE, install_from_env
from inventory_pipeline.aws.clients import make_client
from inventory_pipeline.local_aws.runner import container, outputs, workspace
from inventory_pipeline.local_aws.runner.job_store import JobStore
from inventory_pipeline.local_aws.runner.logs import LogShipper

log = logging.getLogger("inventory_pipeline.local_aws.runner")
TRAINING_CODE_DIR = Path(__file__).resolve().parents[4] / "training_code"
STOP_WINDOW_ENV = "INVENTORY_LOCAL_STOP_WINDOW_S"
SAGEMAKER_STOP_WINDOW_S = 120.0  # what SageMaker leaves a container between SIGTERM and SIGKILL
_PROGRESS = ("Downloading", "Training", "Uploading")
WATCH_S = 1.0  # how often a running job's stop, update and Spot markers and its MaxRuntime are checked
_HP_RESERVED = (
    "sagemaker_program",
    "sagemaker_submit_directory",
    "sagemaker_region",
    "sagemaker_container_log_level",
    "sagemaker_job_name",
)


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


def billable_seconds(job: dict[str, Any], training_s: float, unbilled_s: float = 0.0) -> int:
    """BillableTimeInSeconds as AWS reports it: per instance (clients multiply by InstanceCount themselves).
    On-demand instances bill the whole training time; Managed Spot does not bill the time spent waiting for
    capacity after an interruption (`unbilled_s`). Truncated like TrainingTimeInSeconds, so never above it."""
    billed = training_s - unbilled_s if job.get("EnableManagedSpotTraining") else training_s
    return max(1, int(billed))


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
        self._checkpoints: Any = None
        self.unbilled_s = 0.0  # Spot: time spent without instances (interrupted, waiting for capacity)
        self.interruptions = 0

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
                job["BillableTimeInSeconds"] = billable_seconds(job, now - self.instances_started, self.unbilled_s)
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
            source = channel["DataSource"]["S3DataSource"]
            uri = source["S3Uri"]
            count = workspace.download_channel(
                self.s3, name, uri, self.work / "data" / name, data_type=source.get("S3DataType", "S3Prefix")
            )
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
        # Environment values naming SageMaker's /opt/ml paths (a CheckpointConfig LocalPath) name this host's.
        env.update(
            {
                k: str(self.host_path(host, v)) if v.startswith("/opt/ml/") else v
                for k, v in self.job.get("Environment", {}).items()
            }
        )
        env.update(
            {
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
            }
        )
        env.update({f"SM_CHANNEL_{name.upper()}": str(path) for name, path in channels.items()})
        env.update({"TRAINING_JOB_NAME": self.name, "TRAINING_JOB_ARN": self.job["TrainingJobArn"]})
        if (self.work / "packages").is_dir():  # what install_requirements installed comes first
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.work / "packages"), env.get("PYTHONPATH")]))
        # The job's own S3 calls (self-hosted rules mode: smdebug and the sampler write to S3) reach the local S3.
        env.update(
            {
                "AWS_ENDPOINT_URL_S3": self.s3_endpoint,
                "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "local-access-key"),
                "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "local-secret-key"),
                "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
            }
        )
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
        in_container = container.uses_container_entrypoint(self.job)
        program = (
            " ".join(self.job["AlgorithmSpecification"]["ContainerEntrypoint"])
            if in_container
            else str(_decode(self.job["HyperParameters"]["sagemaker_program"]))
        )
        shippers = {host: LogShipper(self.logs, self.name, host) for host in self.hosts}
        network = IsolatedNetwork() if self.job.get("EnableNetworkIsolation") else contextlib.nullcontext()
        try:
            with network as isolated:
                self.install_requirements(isolated)
                self.restore_checkpoints()
                while True:  # one pass per Spot (re)start
                    outcome = self._run_processes(program, in_container, channels, shippers, isolated)
                    if outcome != "interrupted":
                        break
        except IsolationUnavailable as exc:
            raise JobFailed(f"ClientError: EnableNetworkIsolation: {exc}; the job was not run with network") from exc
        finally:
            for shipper in shippers.values():
                shipper.close()

    def host_command(
        self, host: str, program: str, in_container: bool, channels: dict[str, Path], port: int, isolated: Any
    ) -> tuple[list[str], Path, dict[str, str]]:
        """A host's command, working directory and environment. Both namespaces compose: a ContainerEntrypoint
        job gets its own mount namespace per host (its /opt/ml), entered from the job's one network namespace
        when isolated (shared by the hosts, so DDP peers still reach each other): `nsenter --net` execs
        `unshare --mount`, which execs the entry point, so the process the runner signals is the entry point."""
        env = self.host_env(host, channels, port)
        if in_container:
            root = self.host_dirs[host].root
            env.update({f"SM_CHANNEL_{n.upper()}": str(root / "input" / "data" / n) for n in channels})
            command, cwd, env = container.command(self.job, root), root, container.container_paths(env, root)
        else:
            command, cwd = [sys.executable, program, *self.args()], self.work / "code"
        return (isolated.wrap(command) if isolated else command), cwd, env

    def _run_processes(
        self, program: str, in_container: bool, channels: dict[str, Path], shippers: dict, isolated: Any
    ) -> str:
        """Run the entry point on every host until it ends, is stopped, times out or its Spot capacity goes."""
        from inventory_pipeline.local_aws.stack import free_port

        port = free_port()
        processes: dict[str, subprocess.Popen] = {}
        readers = []
        for host in self.hosts:
            command, cwd, env = self.host_command(host, program, in_container, channels, port, isolated)
            processes[host] = subprocess.Popen(
                command,
                cwd=cwd,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
            reader = threading.Thread(target=self._pump, args=(processes[host], shippers[host], host), daemon=True)
            reader.start()
            readers.append(reader)
        stopping = self.job.get("StoppingCondition", {})
        max_runtime = float(stopping.get("MaxRuntimeInSeconds", 86400))
        max_wait = float(stopping.get("MaxWaitTimeInSeconds", 0)) if self.job.get("EnableManagedSpotTraining") else 0
        outcome, capacity_wait, last_sync = "done", 0.0, time.monotonic()
        while any(p.poll() is None for p in processes.values()):
            if self.store.take_update_request(self.name) and self.on_update is not None:
                self.on_update(self.store.read(self.name))
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
                if outcome != "interrupted":  # a Spot interruption shows Interrupted, the job stays InProgress
                    from inventory_pipeline.local_aws.sagemaker_api import mark_stopping

                    self.job = self.store.update(self.name, mark_stopping)
                self._stop_processes(processes, stop_window_s())
                break
            if self.checkpoints is not None and time.monotonic() - last_sync > 1.0:
                self.checkpoints.sync()
                last_sync = time.monotonic()
            _wait_for_an_exit(processes, WATCH_S)
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
        command = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-index",
            "--target",
            str(self.work / "packages"),
            "-r",
            "requirements.txt",
        ]
        # Only the requirements file says where wheels come from (no PIP_* settings of this machine).
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")} | {"PIP_CONFIG_FILE": os.devnull}
        done = subprocess.run(
            isolated.wrap(command) if isolated else command,
            cwd=self.work / "code",
            env=env,
            capture_output=True,
            text=True,
        )
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


def _wait_for_an_exit(processes: dict[str, subprocess.Popen], timeout_s: float) -> None:
    """Up to `timeout_s`, returning as soon as a running host process exits: the job's end is seen at once
    however seldom the markers (stop, update, Spot) are checked."""
    running = [p for p in processes.values() if p.poll() is None]
    if running:
        with contextlib.suppress(subprocess.TimeoutExpired):
            running[0].wait(timeout=timeout_s)


def _decode(value: str) -> Any:
    """Hyperparameters arrive JSON-encoded by the SDK ('"train.py"', '3'); plain strings are kept as is."""
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value


def _load_rule_engine() -> None:
    """Import the rule engine and smdebug's trial reader (with pandas and the pure-Python protobuf) now.

    smdebug's utils `import torch.distributed` only to learn whether they run inside a distributed training
    process. This process trains nothing (the entry point runs in its own processes), and that import is
    two thirds of the rule engine's load: ~3 s of CPU taken from the job it watches on a small machine. So
    torch is hidden while smdebug loads (None in sys.modules fails the import as a missing package would,
    which smdebug expects) and visible again afterwards."""
    hide_torch = "torch" not in sys.modules
    if hide_torch:
        sys.modules["torch"] = None  # type: ignore[assignment]
    try:
        import inventory_pipeline.rules.debugger  # noqa: F401
        import inventory_pipeline.rules.profiler  # noqa: F401

        # After rules.debugger, which selects the protobuf implementation smdebug needs. Loaded now, or the first
        # rule to open the trial would import it (and pandas) while the job trains.
        importlib.import_module("smdebug.trials")
    except Exception:  # the rules report the import error themselves when they run
        log.exception("could not load the rule engine")
    finally:
        if hide_torch and sys.modules.get("torch", 0) is None:
            del sys.modules["torch"]


def run(
    store: JobStore,
    name: str,
    s3_endpoint: str,
    logs_endpoint: str,
    region: str,
    cloudwatch_endpoint: str | None = None,
) -> None:
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
            # On AWS the profile streams to S3 while the job trains, and the ProfilerReport reads it there: it is in
            # S3 before that rule can report, so whoever waits for the rules then reads all of it (the report's
            # utilisation plot). Uploaded before the rules conclude; a failure is logged and retried below.
            try:
                profiler.upload()
            except Exception:
                log.exception("could not upload the profiler output (retried after the job ends)")
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
