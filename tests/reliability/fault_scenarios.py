"""Fault injection against the local stack and the code paths the DAG's tasks run, shared by
`tests/reliability/test_faults.py` (one test per scenario) and `benchmarks/faults.py --json` (one table).

Each scenario injects one fault (bad input, S3 throttling or an outage, a killed process, a lost response, an
unsafe archive or checkpoint, a re-run) into the real functions: `inventory_pipeline.airflow.tasks` for the data
plane, the DAG's `TrainingJobOperator` / `TrainingJobSensor` (the Amazon provider's classes inside) for
training, the local SageMaker server and runner for the job, `promotion` for the champion. Then the same
audit runs for every fault and fills one row:

- `outcome` / `handled`: the fault ended as it should: a clear error of the expected kind, a counted reject or
  skip, or a retry that recovered;
- `objects_lost`: objects that should be at the destination (raw area, published dataset) and are not;
- `objects_duplicated`: an image twice in a dataset, objects a manifest does not account for, the same
  content published as two versions;
- `jobs_duplicated`: more than one training job for one DAG run;
- `inconsistent_state`: a manifest naming missing objects, a refused run that published anything, a rejected
  image published, a job or rule left InProgress with nothing running, a rule saying NoIssuesFound without
  having evaluated anything, a champion replaced by a model that is not better or whose files disagree.

Not product code: it imports the project (installed in the venv) and `fault_proxy` beside it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import tarfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from fault_proxy import DROP, DROP_RESPONSE, HOLD, Action, FaultProxy, Request, json_error, s3_error
from support import accuracy_metrics, collect, tar_archive, wait_until

ROOT = Path(__file__).resolve().parents[2]
DAG_ID = "inventory_retraining"
PREFIX = "abid"
ROOT_PREFIX = f"{PREFIX}/"
IMAGES, SEED = 40, 4  # 40 images, seed 4: every count in the train split 5+ times, valid and test not empty
CREDS = {"aws_access_key_id": "local-access-key", "aws_secret_access_key": "local-secret-key"}
NON_TERMINAL = ("InProgress", "Stopping")
SLEEPER = "import os, time\nprint('sleeping', flush=True)\ntime.sleep(float(os.environ.get('SLEEP_S', '300')))\n"
# A NoIssuesFound must say what it looked at ("no issue in 14 checks", "over 25 samples"), else it is a default.
EVIDENCE = re.compile(r"\b[1-9]\d* (checks?|samples?|steps?)\b")
CHILD_TASK = (
    "import json, sys\nfrom inventory_pipeline.airflow import tasks as dag_tasks\n"
    "print(json.dumps(getattr(dag_tasks, sys.argv[1])(json.loads(sys.argv[2]), json.loads(sys.argv[3]))))"
)


@dataclass
class Row:
    fault: str
    outcome: str
    handled: bool
    objects_lost: int = 0
    objects_duplicated: int = 0
    jobs_duplicated: int = 0
    inconsistent_state: bool = False
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def clean(self) -> bool:
        return self.handled and not (
            self.objects_lost or self.objects_duplicated or self.jobs_duplicated or self.inconsistent_state
        )


@dataclass(frozen=True)
class Scenario:
    name: str
    run: Callable[[FaultEnv], Row]
    slow: bool = False  # runs a training job to its end (the test marks it slow)


SCENARIOS: list[Scenario] = []


def scenario(name: str, slow: bool = False) -> Callable[[Callable[[FaultEnv], Row]], Callable[[FaultEnv], Row]]:
    def register(fn: Callable[[FaultEnv], Row]) -> Callable[[FaultEnv], Row]:
        SCENARIOS.append(Scenario(name, fn, slow))
        return fn

    return register


def run_scenario(env: FaultEnv, item: Scenario) -> Row:
    """The scenario's row; a scenario that crashes is a row that says so (never a silent pass)."""
    started = time.monotonic()
    try:
        row = item.run(env)
    except Exception as exc:
        tail = "".join(traceback.format_exception(exc)[-3:])
        row = Row(item.name, f"scenario crashed: {type(exc).__name__}: {exc}", False, detail=tail[-1500:])
    row.detail = f"{row.detail} [{time.monotonic() - started:.1f} s]".strip()
    return row


def summarize(rows: list[Row]) -> dict[str, Any]:
    return {
        "faults_tried": len(rows),
        "handled": sum(r.handled for r in rows),
        "objects_lost": sum(r.objects_lost for r in rows),
        "objects_duplicated": sum(r.objects_duplicated for r in rows),
        "jobs_duplicated": sum(r.jobs_duplicated for r in rows),
        "inconsistent_states": sum(r.inconsistent_state for r in rows),
        "rows": [r.to_dict() for r in rows],
    }


# --- the environment: a local stack, clients, the Airflow connection, shared inputs ---------------------------


class _TaskInstance:
    """What the operators use of the task instance: XCom pushes (the extra links)."""

    def __init__(self) -> None:
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


@dataclass
class Names:
    fault: str
    source: str
    bucket: str
    run_id: str


@dataclass
class FaultEnv:
    """A started `LocalStack` (the session's, or the benchmark's own) and a scratch directory."""

    stack: Any
    work: Path
    _images: list[Any] | None = field(default=None, init=False)
    _shared: dict[str, Any] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.work = Path(self.work)
        self.work.mkdir(parents=True, exist_ok=True)
        # Operators read Airflow's configuration; keep an unconfigured process away from ~/airflow.
        os.environ.setdefault("AIRFLOW_HOME", str(self.work / "airflow-home"))
        os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

    # clients -----------------------------------------------------------------------------------------------

    def client(self, service: str, endpoint: str | None = None, **config: Any) -> Any:
        from inventory_pipeline.aws.clients import make_client

        return make_client(service, endpoint or self.stack.endpoints[service], self.stack.region, **CREDS, **config)

    @property
    def s3(self) -> Any:
        return self.client("s3")

    @property
    def sm(self) -> Any:
        return self.client("sagemaker")

    @contextlib.contextmanager
    def connection(
        self,
        *,
        s3: str | None = None,
        sagemaker: str | None = None,
        credentials: bool = True,
        config_kwargs: dict[str, Any] | None = None,
    ) -> Iterator[None]:
        """`aws_default` for in-process tasks (and children started inside), optionally through a proxy."""
        from inventory_pipeline.local_aws.stack import airflow_connection

        endpoints = {
            **self.stack.endpoints,
            **({"s3": s3} if s3 else {}),
            **({"sagemaker": sagemaker} if sagemaker else {}),
        }
        conn = airflow_connection(endpoints, self.stack.region)
        if not credentials:
            conn.pop("login"), conn.pop("password")
        if config_kwargs:
            conn["extra"]["config_kwargs"] = config_kwargs
        changes: dict[str, str | None] = {
            "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(conn),
            "INVENTORY_REPORT_DIR": str(self.work / "reports"),
        }
        if not credentials:  # nothing else in botocore's chain may supply any
            changes.update(
                dict.fromkeys(
                    (
                        "AWS_ACCESS_KEY_ID",
                        "AWS_SECRET_ACCESS_KEY",
                        "AWS_SESSION_TOKEN",
                        "AWS_PROFILE",
                        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                    )
                )
            )
            changes.update(
                AWS_SHARED_CREDENTIALS_FILE=str(self.work / "no-credentials"),
                AWS_CONFIG_FILE=str(self.work / "no-config"),
                AWS_EC2_METADATA_DISABLED="true",
            )
        saved = {name: os.environ.get(name) for name in changes}
        try:
            for name, value in changes.items():
                _set_env(name, value)
            yield
        finally:
            for name, value in saved.items():
                _set_env(name, value)

    # names and inputs --------------------------------------------------------------------------------------

    def names(self, fault: str) -> Names:
        tag = uuid.uuid4().hex[:8]
        base = re.sub(r"[^a-z0-9]+", "-", fault.lower()).strip("-")[:30]
        return Names(fault, f"flt-{base}-{tag}-src", f"flt-{base}-{tag}", f"fault__{base}__{tag}")

    @property
    def images(self) -> list[Any]:
        if self._images is None:
            from inventory_pipeline.dataset.synthetic import generate

            self._images = list(generate(IMAGES, seed=SEED))
        return self._images

    def labels(self) -> dict[str, int]:
        return {image.image_id: image.label for image in self.images}

    def victims(self, count: int) -> list[str]:
        """Images whose loss leaves every split usable: in the train split, of counts with 5+ train images."""
        from collections import Counter

        from inventory_pipeline.dataset.split import assign_split

        train = [i for i in self.images if assign_split(i.image_id) == "train"]
        per_label = Counter(i.label for i in train)
        chosen: list[str] = []
        for image in train:
            if per_label[image.label] >= 5 and image.label not in {self.labels()[c] for c in chosen}:
                chosen.append(image.image_id)
        return chosen[:count]

    def seed_source(self, bucket: str, file_list: bool = True) -> None:
        from inventory_pipeline.dataset.abid import image_key, metadata_key
        from inventory_pipeline.dataset.synthetic import file_list as make_file_list

        s3 = self.s3
        s3.create_bucket(Bucket=bucket)
        for image in self.images:
            s3.put_object(Bucket=bucket, Key=image_key("", image.image_id), Body=image.jpeg)
            s3.put_object(Bucket=bucket, Key=metadata_key("", image.image_id), Body=json.dumps(image.metadata).encode())
        if file_list:
            s3.put_object(Bucket=bucket, Key="file_list.json", Body=json.dumps(make_file_list(self.images)).encode())

    def data_params(self, names: Names, file_list: bool = True, **extra: Any) -> dict[str, Any]:
        return {
            "source_bucket": names.source,
            "file_list": f"s3://{names.source}/file_list.json" if file_list else "",
            "bucket": names.bucket,
            "prefix": PREFIX,
            "copy_workers": 8,
            "per_class_limit": 0,
            **extra,
        }

    def shared(self) -> dict[str, Any]:
        """Built once: a published tiny dataset, the real training code, and a sleeping entry point."""
        if self._shared is None:
            names = self.names("shared")
            self.seed_source(names.source)
            self.s3.create_bucket(Bucket=names.bucket)
            params = self.data_params(names)
            with self.connection():
                from inventory_pipeline.airflow import tasks as dag_tasks

                dataset = dag_tasks.split_dataset(
                    params, dag_tasks.copy_images(params, dag_tasks.select_source(params))
                )
                code = dag_tasks.package_code(params)
            sleeper = f"{ROOT_PREFIX}code/sleeper.tar.gz"
            self.s3.put_object(Bucket=names.bucket, Key=sleeper, Body=tar_archive({"train.py": SLEEPER.encode()}))
            self._shared = {
                "names": names,
                "dataset": dataset,
                "code": code,
                "sleeper": {"s3_uri": f"s3://{names.bucket}/{sleeper}"},
            }
        return self._shared

    def train_params(self, **extra: Any) -> dict[str, Any]:
        shared = self.shared()
        return {
            "source_bucket": shared["names"].source,
            "bucket": shared["names"].bucket,
            "prefix": PREFIX,
            "model": "small_cnn",
            "epochs": 1,
            "batch_size": 8,
            "instance_count": 1,
            "instance_type": "ml.c5.xlarge",
            "max_runtime_s": 300,
            "rules_mode": "self_hosted",
            "fail_on_rules": [],
            "min_improvement": 0.0,
            **extra,
        }

    # local processes -------------------------------------------------------------------------------------

    def job_dir(self, job: str, stack: Any = None) -> Path:
        return Path((stack or self.stack).state_dir) / "sagemaker" / "work" / job

    def runner_process(self, job: str, stack: Any = None) -> Any:
        """The runner of `job`: a child of the stack's SageMaker server (a process this harness started)."""
        import psutil

        servers = (stack or self.stack).state()["servers"]
        server_pid = next(s["pid"] for s in servers if s["name"] == "sagemaker")
        for child in psutil.Process(server_pid).children():
            with contextlib.suppress(psutil.Error):
                cmdline = child.cmdline()
                if "inventory_pipeline.local_aws.runner.main" in cmdline and job in cmdline:
                    return child
        return None

    def training_processes(self, job: str) -> list[Any]:
        import psutil

        runner = self.runner_process(job)
        if runner is None:
            return []
        found = []
        for child in runner.children():
            with contextlib.suppress(psutil.Error):
                if any(part.endswith("train.py") for part in child.cmdline()):
                    found.append(child)
        return found


def _set_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def rule_statuses(job: dict[str, Any]) -> list[dict[str, Any]]:
    return job.get("DebugRuleEvaluationStatuses", []) + job.get("ProfilerRuleEvaluationStatuses", [])


def settled(sm: Any, job: str, timeout: float = 120) -> dict[str, Any]:
    """The job once it and every rule evaluation are terminal."""

    def done() -> dict[str, Any] | None:
        described = sm.describe_training_job(TrainingJobName=job)
        busy = described["TrainingJobStatus"] in NON_TERMINAL or any(
            s["RuleEvaluationStatus"] in NON_TERMINAL for s in rule_statuses(described)
        )
        return None if busy else described

    return wait_until(done, timeout, 0.5, f"job {job} and its rules terminal")


def stop_quietly(sm: Any, job: str) -> None:
    """Cleanup: a job a scenario left running stops, so the next scenario has the CPUs."""
    with contextlib.suppress(Exception):
        if sm.describe_training_job(TrainingJobName=job)["TrainingJobStatus"] in NON_TERMINAL:
            sm.stop_training_job(TrainingJobName=job)
        settled(sm, job, timeout=60)


# --- the audit every scenario ends with ---------------------------------------------------------------------


def list_keys(s3: Any, bucket: str, prefix: str) -> dict[str, str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {o["Key"]: o["ETag"].strip('"') for page in pages for o in page.get("Contents", [])}


def read_json(s3: Any, bucket: str, key: str) -> Any:
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def registry_for(env: FaultEnv, bucket: str) -> Any:
    """The registered model of one scenario (named after its bucket, so scenarios never share a champion)."""
    from inventory_pipeline.decision.registry import Registry

    return Registry(env.stack.endpoints["mlflow"], f"counting-{bucket}")


def champion_snapshot(env: FaultEnv, bucket: str) -> dict[str, Any]:
    keys = list_keys(env.s3, bucket, f"{ROOT_PREFIX}models/champion/")
    metrics_key = f"{ROOT_PREFIX}models/champion/metrics.json"
    champion = registry_for(env, bucket).champion()
    return {
        "version": champion.version if champion else None,
        "metrics": read_json(env.s3, bucket, metrics_key) if metrics_key in keys else None,
        "model_etag": keys.get(f"{ROOT_PREFIX}models/champion/model.tar.gz"),
    }


def seed_champion(env: FaultEnv, bucket: str, accuracy: float = 0.5) -> dict[str, Any]:
    """An earlier run's champion (registered, aliased, copied), so a scenario can show it was (or was not)
    rightly replaced."""
    from inventory_pipeline.decision.apply import follow_registry

    model_key = f"{ROOT_PREFIX}training-jobs/champion-before/output/model.tar.gz"
    env.s3.put_object(Bucket=bucket, Key=model_key, Body=tar_archive({"model.pth": b"earlier weights"}))
    registry = registry_for(env, bucket)
    version = registry.register(
        "champion-before",
        f"s3://{bucket}/{model_key}",
        "",
        {"accuracy": str(accuracy), "rmse": "1.0", "decision": "promoted"},
    )
    registry.set_champion(version.version)
    follow_registry(env.s3, bucket, ROOT_PREFIX, registry.champion())
    return champion_snapshot(env, bucket)


def run_gate_for(
    env: FaultEnv,
    bucket: str,
    job: str,
    run_id: str,
    *,
    report: dict[str, Any] | None,
    metrics: dict[str, Any],
    model_uri: str | None,
    checkpoint: Callable[[str], None] | None = None,
    notify: Callable[[str, dict[str, Any]], None] | None = None,
    registry: Any = None,
    states: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The gate as `evaluate_and_promote` runs it, for a run whose tasks all succeeded up to the report (unless
    `states` says otherwise); `registry`: another client of the scenario's registry (through a proxy)."""
    from inventory_pipeline.decision.decide import GateInputs, GatePolicy, RunFacts
    from inventory_pipeline.decision.facts import registry_state
    from inventory_pipeline.decision.gate import run_gate

    registry = registry or registry_for(env, bucket)
    champion = registry.champion()
    states = states or dict.fromkeys(("train", "wait_for_training", "wait_for_rules", "parse_rule_reports"), "success")
    if report and report["decision"]["failed"]:
        states["parse_rule_reports"] = "failed"
    facts = RunFacts(
        job=job,
        task_states=states,
        report=report,
        metrics=metrics,
        lineage={"lineage": {"dataset_version": "fault-dataset"}, "champion": champion.to_dict() if champion else None},
    )
    facts.champion_now, facts.hold = registry_state(registry, env.s3, bucket, ROOT_PREFIX)  # as the gate's gather
    inputs = GateInputs(dag_id=DAG_ID, run_id=run_id, model_uri=model_uri, params={"model": "small_cnn"})
    extra = {"checkpoint": checkpoint} if checkpoint else {}
    return run_gate(env.s3, bucket, ROOT_PREFIX, registry, facts, inputs, GatePolicy(), notify=notify, **extra)


class Audit:
    """Counters and problems for one scenario's row."""

    def __init__(self, env: FaultEnv, fault: str):
        self.env, self.fault = env, fault
        self.lost = self.duplicated = self.jobs_duplicated = 0
        self.problems: list[str] = []

    def dataset(
        self, bucket: str, expected: set[str] | None, forbidden: set[str] | frozenset[str] = frozenset()
    ) -> None:
        """`expected`: ids that must be published (None: the run was refused, nothing may be published)."""
        s3 = self.env.s3
        keys = list_keys(s3, bucket, f"{ROOT_PREFIX}datasets/")
        manifests = sorted(k for k in keys if re.fullmatch(rf"{ROOT_PREFIX}datasets/[^/]+/manifest\.json", k))
        contents: list[frozenset[str]] = []
        published: dict[str, set[str]] = {}
        raw = list_keys(s3, bucket, f"{ROOT_PREFIX}raw/")
        packs: dict[str, bytes] = {}

        def stored(pack_key: str) -> bytes | None:
            if pack_key not in packs and pack_key in raw:
                packs[pack_key] = s3.get_object(Bucket=bucket, Key=pack_key)["Body"].read()
            return packs.get(pack_key)

        for manifest_key in manifests:
            manifest = read_json(s3, bucket, manifest_key)
            version_prefix = manifest_key[: -len("manifest.json")]
            ids = [entry["image_id"] for entry in manifest["entries"]]
            self.duplicated += len(ids) - len(set(ids))
            for entry in manifest["entries"]:  # a version names a byte range of a pack: the photo's own bytes
                pack = stored(f"{ROOT_PREFIX}{entry['pack']}")
                start, end = entry["offset"], entry["offset"] + entry["size"]
                if pack is None:
                    self.problems.append(f"{manifest_key} names {entry['pack']}, which is missing (partial dataset)")
                elif hashlib.md5(pack[start:end]).hexdigest() != entry["etag"]:  # ETag: MD5 of a simple upload
                    self.problems.append(f"{manifest_key}: {entry['image_id']} in {entry['pack']} is other bytes")
            listed = {manifest_key} | {
                f"{version_prefix}{split}{suffix}"
                for split in ("train", "valid", "test")
                for suffix in (".manifest", "/labels.json")
            }
            strays = [k for k in keys if k.startswith(version_prefix) and k not in listed]
            self.duplicated += len(strays)
            if set(ids) & set(forbidden):
                self.problems.append(f"{manifest_key} publishes rejected image(s) {sorted(set(ids) & set(forbidden))}")
            contents.append(frozenset(ids))
            published[manifest_key] = set(ids)
        self.duplicated += len(contents) - len(set(contents))  # the same content published as two versions
        latest_key = f"{ROOT_PREFIX}datasets/latest.json"
        latest = read_json(s3, bucket, latest_key) if latest_key in keys else None
        if latest is not None and latest.get("manifest_key") not in published:
            self.problems.append(f"latest.json names {latest.get('manifest_key')}, which is not a published manifest")
        if expected is None:
            if manifests or latest is not None:
                self.problems.append(f"the run was refused but published {manifests or [latest_key]}")
            return
        current = published.get((latest or {}).get("manifest_key", ""), set())
        self.lost += len(expected - current)
        indexed: dict[str, list[str]] = {}  # the raw index: each photo stored once, in an existing pack
        for key in (k for k in raw if k.startswith(f"{ROOT_PREFIX}raw/index/")):
            for image_id, entry in read_json(s3, bucket, key)["entries"].items():
                indexed.setdefault(image_id, []).append(entry["pack"])
        for image_id in expected:
            self.lost += not any(f"{ROOT_PREFIX}{pack}" in raw for pack in indexed.get(image_id, []))
        indexed_packs = {f"{ROOT_PREFIX}{p}" for found in indexed.values() for p in found}
        self.duplicated += len([k for k in raw if k.startswith(f"{ROOT_PREFIX}raw/packs/") and k not in indexed_packs])

    def nothing_copied(self, bucket: str) -> None:
        raw = list_keys(self.env.s3, bucket, f"{ROOT_PREFIX}raw/")
        if raw:
            self.problems.append(f"a refused run copied {len(raw)} object(s) into raw/")

    def jobs(self, job: str, expected: int = 1) -> list[dict[str, Any]]:
        summaries = self.env.sm.list_training_jobs(NameContains=job, MaxResults=100)["TrainingJobSummaries"]
        self.jobs_duplicated += max(0, len(summaries) - expected)
        if len(summaries) < expected:
            self.problems.append(f"expected {expected} job(s) named {job}*, found {len(summaries)}")
        return summaries

    def job_state(self, described: dict[str, Any]) -> None:
        name, status = described["TrainingJobName"], described["TrainingJobStatus"]
        if status in NON_TERMINAL:
            self.problems.append(f"job {name} still {status}")
        if status in ("Failed",) and not described.get("FailureReason"):
            self.problems.append(f"job {name} Failed without a FailureReason")
        for rule in rule_statuses(described):
            state, details = rule["RuleEvaluationStatus"], rule.get("StatusDetails", "")
            if state in NON_TERMINAL:
                self.problems.append(f"rule {rule['RuleConfigurationName']} still {state}")
            if state == "NoIssuesFound" and not EVIDENCE.search(details):
                self.problems.append(
                    f"rule {rule['RuleConfigurationName']} NoIssuesFound without evidence: {details!r}"
                )

    def champion(self, bucket: str, before: dict[str, Any]) -> None:
        """The registry's champion changed only through a recorded promotion of a better model, and the
        deployable copy in S3 is the registry champion's model."""
        from inventory_pipeline.decision.store import DecisionStore

        after = champion_snapshot(self.env, bucket)
        if after == before:
            return
        registry = registry_for(self.env, bucket)
        champion = registry.champion()
        if champion is None or after["metrics"] is None or after["model_etag"] is None:
            self.problems.append("the champion lost its registry alias, its metrics or its model")
            return
        if after["version"] != before["version"]:
            record = DecisionStore(self.env.s3, bucket, ROOT_PREFIX).read(champion.tags.get("job", "")) or {}
            if record.get("status") not in ("promoted", "rolled_back"):
                self.problems.append(f"champion moved to v{champion.version} with no promotion recorded ({record})")
            elif (record.get("champion") or {}).get("accuracy") is not None and not (
                record["candidate"]["accuracy"] > record["champion"]["accuracy"]
            ):
                self.problems.append(f"champion replaced by a model that is not better: {record}")
        if after["metrics"].get("version") != champion.version:
            self.problems.append(
                f"models/champion/ holds v{after['metrics'].get('version')}, the registry "
                f"champion is v{champion.version}"
            )
        src_bucket, _, src_key = champion.source[5:].partition("/")
        source = list_keys(self.env.s3, src_bucket, src_key).get(src_key)
        if source != after["model_etag"]:
            self.problems.append("champion/model.tar.gz is not the registry champion's model")
        body = self.env.s3.get_object(Bucket=bucket, Key=f"{ROOT_PREFIX}models/champion/model.tar.gz")["Body"].read()
        try:
            names = tarfile.open(fileobj=io.BytesIO(body)).getnames()
        except tarfile.TarError:
            names = []
        if not any(n.endswith((".pth", ".pt")) for n in names):
            self.problems.append(f"champion/model.tar.gz holds no model ({names})")

    def row(self, outcome: str, handled: bool, detail: str = "") -> Row:
        detail = "; ".join([detail, *self.problems]) if self.problems else detail
        return Row(
            self.fault, outcome, handled, self.lost, self.duplicated, self.jobs_duplicated, bool(self.problems), detail
        )


# --- helpers the scenarios share ----------------------------------------------------------------------------


def run_data_plane(params: dict[str, Any]) -> dict[str, Any]:
    """select_source -> copy_images -> split_dataset, as the DAG's tasks call them."""
    from inventory_pipeline.airflow import tasks as dag_tasks

    selection = dag_tasks.select_source(params)
    copied = dag_tasks.copy_images(params, selection)
    return {"select": selection, "copy": copied, "split": dag_tasks.split_dataset(params, copied)}


def expect_error(fn: Callable[[], Any], kind: type[BaseException]) -> tuple[bool, str]:
    try:
        fn()
    except kind as exc:
        return True, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    except Exception as exc:
        return False, f"unexpected {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    return False, "no error raised"


def context(run_id: str, params: dict[str, Any]) -> dict[str, Any]:
    """What TrainingJobOperator / the sensors read from Airflow's task context."""
    return {"params": params, "dag": SimpleNamespace(dag_id=DAG_ID), "run_id": run_id, "ti": _TaskInstance()}


def train_operator(code: dict[str, Any], dataset: dict[str, Any]) -> Any:
    from inventory_pipeline.airflow.operators import TrainingJobOperator

    return TrainingJobOperator(task_id="train", dataset=dataset, code=code)


def job_name(run_id: str) -> str:
    from inventory_pipeline.training.naming import job_name_for_run

    return job_name_for_run(DAG_ID, run_id)


def _bad_input_fault(
    env: FaultEnv,
    fault: str,
    corrupt: Callable[[Any, str, str], None],
    reason: str,
    file_list: bool = True,
    published: bool = False,
) -> Row:
    """One bad pair among 40: a counted reject (or exclusion), the 39 others published, nothing else."""
    names = env.names(fault)
    env.seed_source(names.source, file_list=file_list)
    env.s3.create_bucket(Bucket=names.bucket)
    [victim] = env.victims(1)
    corrupt(env.s3, names.source, victim)
    with env.connection():
        result = run_data_plane(env.data_params(names, file_list=file_list))
    audit = Audit(env, fault)
    expected = set(env.labels()) - ({victim} if not published else set())
    audit.dataset(names.bucket, expected, forbidden=set() if published else {victim})
    counted = [r for r in result["copy"]["rejects"] if victim in r["key"] and reason in r["reason"]]
    excluded = result["select"]["excluded"] == 1 and reason == "excluded"
    handled = bool(counted) or excluded or published
    outcome = (
        f"counted reject: {counted[0]['reason']}"
        if counted
        else "counted as excluded by select_source (count outside 1-5)"
        if excluded
        else f"not counted: rejects {result['copy']['rejects']}, excluded {result['select']['excluded']}"
    )
    return audit.row(
        outcome, handled, f"{result['split']['total']} images published, version {result['split']['version']}"
    )


# --- data plane: bad input ----------------------------------------------------------------------------------


def _image(image_id: str) -> str:
    return f"bin-images/{image_id}.jpg"


def _metadata(image_id: str) -> str:
    return f"metadata/{image_id}.json"


@scenario("truncated JPEG")
def truncated_jpeg(env: FaultEnv) -> Row:
    def corrupt(s3: Any, bucket: str, victim: str) -> None:
        photo = s3.get_object(Bucket=bucket, Key=_image(victim))["Body"].read()
        s3.put_object(Bucket=bucket, Key=_image(victim), Body=photo[: len(photo) // 2])  # an upload cut short

    return _bad_input_fault(env, "truncated JPEG", corrupt, "truncated")


@scenario("corrupt JPEG")
def corrupt_jpeg(env: FaultEnv) -> Row:
    """Signature and end marker intact, garbage between: only decoding can tell, and the data plane does not
    decode (it checks signature, size and end marker). Published; the training loader skips it and counts it."""
    fault = "corrupt JPEG"
    names = env.names(fault)
    env.seed_source(names.source)
    env.s3.create_bucket(Bucket=names.bucket)
    [victim] = env.victims(1)
    garbage = b"\xff\xd8\xff\xe0" + random.Random(7).randbytes(6000).replace(b"\xff", b"\x00") + b"\xff\xd9"
    env.s3.put_object(Bucket=names.source, Key=_image(victim), Body=garbage)
    with env.connection():
        result = run_data_plane(env.data_params(names))
    audit = Audit(env, fault)
    audit.dataset(names.bucket, set(env.labels()))
    skipped = training_loader_skips(env, names.bucket, result["split"]["channels"]["train"])
    handled = [s.rsplit("[", 1)[-1].rstrip("]") for s in skipped] == [victim]  # <pack>[<image id>]
    return audit.row(
        f"published, then skipped and counted by the training loader: {len(skipped)} image(s)",
        handled,
        f"skipped {[Path(s).name for s in skipped]}",
    )


def training_loader_skips(env: FaultEnv, bucket: str, channel_uri: str) -> list[str]:
    """training_code/data.py's dataset over the published channel (a ManifestFile, downloaded as the local
    runner and SageMaker lay it out): the samples it skips as undecodable."""
    from inventory_pipeline.local_aws.runner.workspace import download_channel

    local = env.work / "channels" / uuid.uuid4().hex[:8]
    download_channel(env.s3, "train", channel_uri, local, data_type="ManifestFile")
    spec = importlib.util.spec_from_file_location("training_code_data", ROOT / "training_code" / "data.py")
    assert spec and spec.loader
    data = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = data  # as an import would: its dataclasses look their module up there
    spec.loader.exec_module(data)
    dataset = data.CountingImageFolder("train", local, transform=None, require_all_classes=False)
    items = [dataset[i] for i in range(len(dataset))]
    return sorted(item["skipped"] for item in items if isinstance(item, dict))  # what collate_skipping passes on


@scenario("metadata not JSON")
def metadata_not_json(env: FaultEnv) -> Row:
    def corrupt(s3: Any, bucket: str, victim: str) -> None:
        s3.put_object(Bucket=bucket, Key=_metadata(victim), Body=b"<html>502 Bad Gateway</html>")

    return _bad_input_fault(env, "metadata not JSON", corrupt, "not JSON")


@scenario("metadata without EXPECTED_QUANTITY")
def metadata_without_quantity(env: FaultEnv) -> Row:
    def corrupt(s3: Any, bucket: str, victim: str) -> None:
        s3.put_object(Bucket=bucket, Key=_metadata(victim), Body=json.dumps({"BIN_FCSKU_DATA": {}}).encode())

    return _bad_input_fault(env, "metadata without EXPECTED_QUANTITY", corrupt, "no EXPECTED_QUANTITY")


@scenario("quantity out of range")
def quantity_out_of_range(env: FaultEnv) -> Row:
    """Selection by listing (no file list): a count of 9 is data, just not ours: excluded and counted."""

    def corrupt(s3: Any, bucket: str, victim: str) -> None:
        s3.put_object(Bucket=bucket, Key=_metadata(victim), Body=json.dumps({"EXPECTED_QUANTITY": 9}).encode())

    return _bad_input_fault(env, "quantity out of range", corrupt, "excluded", file_list=False)


@scenario("bad input above the reject threshold")
def too_many_rejects(env: FaultEnv) -> Row:
    from inventory_pipeline.dataset.errors import TooManyRejects

    fault = "bad input above the reject threshold"
    names = env.names(fault)
    env.seed_source(names.source)
    env.s3.create_bucket(Bucket=names.bucket)
    for victim in env.victims(3):  # 3 of 40 = 7.5% > 5%
        env.s3.put_object(Bucket=names.source, Key=_metadata(victim), Body=b"{truncated")
    params = env.data_params(names)
    with env.connection():
        from inventory_pipeline.airflow import tasks as dag_tasks

        selection = dag_tasks.select_source(params)
        handled, outcome = expect_error(lambda: dag_tasks.copy_images(params, selection), TooManyRejects)
    audit = Audit(env, fault)
    audit.dataset(names.bucket, None)
    audit.nothing_copied(names.bucket)
    return audit.row(outcome, handled and "3 of 40" in outcome)


# --- data plane: missing or unreachable source --------------------------------------------------------------


@scenario("empty source")
def empty_source(env: FaultEnv) -> Row:
    from inventory_pipeline.dataset.errors import EmptySelection

    fault = "empty source"
    names = env.names(fault)
    env.s3.create_bucket(Bucket=names.source)
    env.s3.create_bucket(Bucket=names.bucket)
    with env.connection():
        handled, outcome = expect_error(lambda: run_data_plane(env.data_params(names, file_list=False)), EmptySelection)
    audit = Audit(env, fault)
    audit.dataset(names.bucket, None)
    audit.nothing_copied(names.bucket)
    return audit.row(outcome, handled and names.source in outcome)


@scenario("missing source bucket")
def missing_source_bucket(env: FaultEnv) -> Row:
    from inventory_pipeline.dataset.errors import SourceNotFound

    fault = "missing source bucket"
    names = env.names(fault)
    env.s3.create_bucket(Bucket=names.bucket)
    with env.connection():
        handled, outcome = expect_error(lambda: run_data_plane(env.data_params(names, file_list=False)), SourceNotFound)
    audit = Audit(env, fault)
    audit.dataset(names.bucket, None)
    audit.nothing_copied(names.bucket)
    return audit.row(outcome, handled and names.source in outcome)


@scenario("no credentials")
def no_credentials(env: FaultEnv) -> Row:
    from inventory_pipeline.dataset.errors import NoCredentials

    fault = "no credentials"
    names = env.names(fault)
    env.seed_source(names.source)
    env.s3.create_bucket(Bucket=names.bucket)
    with env.connection(credentials=False):
        handled, outcome = expect_error(lambda: run_data_plane(env.data_params(names)), NoCredentials)
    audit = Audit(env, fault)
    audit.dataset(names.bucket, None)
    audit.nothing_copied(names.bucket)
    return audit.row(outcome, handled)


# --- data plane: S3 misbehaving under load ------------------------------------------------------------------


def _through_proxy(
    env: FaultEnv,
    fault: str,
    rule: Callable[[FaultProxy], Callable[[Request], Action | None]],
    describe: Callable[[FaultProxy], str],
) -> Row:
    """The three stages with S3 behind a FaultProxy; a stage that still fails is retried once (Airflow)."""
    names = env.names(fault)
    env.seed_source(names.source)
    env.s3.create_bucket(Bucket=names.bucket)
    params = env.data_params(names)
    attempts: list[str] = []
    with FaultProxy(env.stack.endpoints["s3"]) as proxy:
        proxy.rule = rule(proxy)
        with env.connection(s3=proxy.url):
            from inventory_pipeline.airflow import tasks as dag_tasks

            result: dict[str, Any] = {}
            for stage, call in (
                ("select_source", lambda: dag_tasks.select_source(params)),
                ("copy_images", lambda: dag_tasks.copy_images(params, result["select_source"])),
                ("split_dataset", lambda: dag_tasks.split_dataset(params, result["copy_images"])),
            ):
                try:
                    result[stage] = call()
                except Exception as exc:  # what the task's Airflow retry would do: run it again
                    attempts.append(f"{stage} failed once ({type(exc).__name__}: {str(exc)[:120]}), retried")
                    result[stage] = call()
        injected = describe(proxy)
    audit = Audit(env, fault)
    audit.dataset(names.bucket, set(env.labels()))
    rejected = result["copy_images"]["rejected"]
    outcome = "recovered by botocore's retries" if not attempts else "recovered by a task retry"
    return audit.row(
        outcome,
        rejected == 0 and bool(injected),
        f"{injected}; {'; '.join(attempts) or 'no task failed'}; {rejected} rejected",
    )


@scenario("S3 503 SlowDown burst")
def s3_slowdown_burst(env: FaultEnv) -> Row:
    throttled: list[str] = []

    def rule(proxy: FaultProxy) -> Callable[[Request], Action | None]:
        def answer(request: Request) -> Action | None:
            # Every other first attempt of the validation and copy burst, 4 in all, as S3 answers when a
            # prefix's request rate is exceeded (botocore numbers its attempts in amz-sdk-request).
            first_attempt = request.headers.get("amz-sdk-request", "attempt=1").startswith("attempt=1")
            if (
                request.operation in ("PutObject", "GetObject")
                and first_attempt
                and len(throttled) < 4
                and len(proxy.seen) % 2
            ):
                throttled.append(request.operation)
                return s3_error(503, "SlowDown", "Please reduce your request rate.")
            return None

        return answer

    return _through_proxy(
        env, "S3 503 SlowDown burst", rule, lambda proxy: f"{len(throttled)} requests answered 503 SlowDown"
    )


@scenario("S3 500 InternalError burst")
def s3_internal_error_burst(env: FaultEnv) -> Row:
    failed: list[str] = []

    def rule(proxy: FaultProxy) -> Callable[[Request], Action | None]:
        def answer(request: Request) -> Action | None:
            if request.operation in ("PutObject", "GetObject") and len(failed) < 8 and len(proxy.seen) % 3 == 0:
                failed.append(request.operation)
                return s3_error(500, "InternalError", "We encountered an internal error. Please try again.")
            return None

        return answer

    return _through_proxy(
        env,
        "S3 500 InternalError burst",
        rule,
        lambda proxy: f"{len(failed)} requests answered 500 ({sorted(set(failed))})",
    )


@scenario("S3 endpoint restarted mid-copy")
def s3_outage_mid_copy(env: FaultEnv) -> Row:
    """After the 40th GetObject (photos read to be stored) the S3 endpoint goes away for 2 s: open connections
    reset, new ones refused, then it comes back with its data (see fault_proxy: restarting moto itself would
    erase every object)."""
    outages: list[float] = []

    def rule(proxy: FaultProxy) -> Callable[[Request], Action | None]:
        def answer(request: Request) -> Action | None:
            if request.operation == "GetObject" and proxy.count("GetObject") == 40 and not outages:
                outages.append(time.monotonic())
                threading.Thread(target=proxy.outage, args=(2.0,), daemon=True).start()
                return Action(DROP)
            return None

        return answer

    return _through_proxy(
        env, "S3 endpoint restarted mid-copy", rule, lambda proxy: f"{len(outages)} outage of 2 s after 40 reads"
    )


# --- data plane: tasks killed and retried ----------------------------------------------------------------------


def _killed_stage(env: FaultEnv, fault: str, stage: str, is_target: Callable[[Request], bool], after: int) -> Row:
    """Run `stage` (copy_images or split_dataset) in a child process; once it has sent `after` of its copies,
    hold the rest and SIGKILL the child, as a worker dies mid-task. Then the Airflow retry runs it again."""
    names = env.names(fault)
    env.seed_source(names.source)
    env.s3.create_bucket(Bucket=names.bucket)
    params = env.data_params(names)
    from inventory_pipeline.airflow import tasks as dag_tasks

    with env.connection():
        selection = dag_tasks.select_source(params)
        previous = dag_tasks.copy_images(params, selection) if stage == "split_dataset" else selection
    release = threading.Event()
    targeted: list[str] = []

    def rule(request: Request) -> Action | None:
        if is_target(request):
            targeted.append(request.target)
            if len(targeted) > after:
                return Action(HOLD, release=release)
        return None

    audit = Audit(env, fault)
    with FaultProxy(env.stack.endpoints["s3"], rule=rule) as proxy, env.connection(s3=proxy.url):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD_TASK, stage, json.dumps(params), json.dumps(previous)],
            env=dict(os.environ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            wait_until(lambda: len(targeted) > after or child.poll() is not None, 120, 0.05, f"{after} copies")
        finally:
            child.send_signal(signal.SIGKILL)
            child.communicate(timeout=30)
            proxy.rule = None
            release.set()
    killed_after = len(targeted)
    # Between the kill and the retry nothing may be announced: no manifest, no latest.json.
    interim = list_keys(env.s3, names.bucket, f"{ROOT_PREFIX}datasets/")
    announced = [k for k in interim if k.endswith(("manifest.json", "latest.json"))]
    if announced:
        audit.problems.append(f"published before the killed task finished: {announced}")
    with env.connection():
        if stage == "copy_images":
            retried = dag_tasks.copy_images(params, selection)
            manifest = dag_tasks.split_dataset(params, retried)
            redone = f"the retry stored {retried['copied']} photos in {retried['packs']} pack(s), each once"
            handled = retried["copied"] + retried["skipped"] == IMAGES
        else:
            manifest = dag_tasks.split_dataset(params, previous)
            redone = f"the retry wrote the version's {len(interim)} earlier file(s) again and then its manifest"
            handled = manifest["copied"] == 0 and bool(manifest["version"])
    audit.dataset(names.bucket, set(env.labels()))
    outcome = f"killed (SIGKILL) after {killed_after} targeted requests; retried to completion, manifest written once"
    return audit.row(
        outcome,
        handled and child.returncode == -signal.SIGKILL,
        f"{redone}; {len(interim)} objects under datasets/ before the retry; version {manifest['version']}",
    )


@scenario("copy task killed mid-copy, then retried")
def copy_killed(env: FaultEnv) -> Row:
    return _killed_stage(
        env,
        "copy task killed mid-copy, then retried",
        "copy_images",
        lambda r: r.operation == "GetObject" and "/bin-images/" in r.target,  # reading photos to store them
        after=30,
    )


@scenario("split task killed mid-publish, then retried")
def split_killed(env: FaultEnv) -> Row:
    return _killed_stage(
        env,
        "split task killed mid-publish, then retried",
        "split_dataset",
        lambda r: r.operation == "PutObject" and "/datasets/" in r.target,  # a version's small files
        after=2,
    )


# --- training: the train task and SageMaker's API -------------------------------------------------------------


@scenario("train task retried after the job was created")
def train_retried(env: FaultEnv) -> Row:
    fault = "train task retried after the job was created"
    names = env.names(fault)
    params, shared = env.train_params(), env.shared()
    ctx = context(names.run_id, params)
    name = job_name(names.run_id)
    audit = Audit(env, fault)
    try:
        with env.connection():
            first = train_operator(shared["sleeper"], shared["dataset"]).execute(ctx)
            # The retry is a new process with a new operator instance: nothing carried over but the run id.
            second = train_operator(shared["sleeper"], shared["dataset"]).execute(context(names.run_id, params))
        same = first["Training"]["TrainingJobArn"] == second["Training"]["TrainingJobArn"]
        audit.jobs(name)
    finally:
        stop_quietly(env.sm, name)
    audit.job_state(env.sm.describe_training_job(TrainingJobName=name))
    return audit.row("the retry re-attached to the run's job", same, f"job {name}")


@scenario("SageMaker 503 on the train task, then task retry")
def sagemaker_unavailable(env: FaultEnv) -> Row:
    """botocore gives up (one attempt here); the error must stay retryable so Airflow's retry creates the job."""
    from airflow.sdk.exceptions import AirflowFailException

    fault = "SageMaker 503 on the train task, then task retry"
    names = env.names(fault)
    params, shared = env.train_params(), env.shared()
    name = job_name(names.run_id)
    answered: list[str] = []

    def rule(request: Request) -> Action | None:
        if not answered:
            answered.append(request.operation)
            return json_error(503, "ServiceUnavailable", "Service is temporarily unavailable")
        return None

    audit = Audit(env, fault)
    try:
        with (
            FaultProxy(env.stack.endpoints["sagemaker"], rule=rule) as proxy,
            env.connection(
                sagemaker=proxy.url, config_kwargs={"retries": {"mode": "standard", "total_max_attempts": 1}}
            ),
        ):
            error: BaseException | None = None
            try:
                train_operator(shared["sleeper"], shared["dataset"]).execute(context(names.run_id, params))
            except Exception as exc:
                error = exc
            retryable = error is not None and not isinstance(error, AirflowFailException)
            train_operator(shared["sleeper"], shared["dataset"]).execute(context(names.run_id, params))
        audit.jobs(name)
    finally:
        stop_quietly(env.sm, name)
    audit.job_state(env.sm.describe_training_job(TrainingJobName=name))
    shown = f"{type(error).__name__}: {str(error)[:120]}" if error else "no error"
    return audit.row(
        f"first attempt raised a retryable {type(error).__name__}; the retry created the job",
        retryable,
        f"{answered} answered 503; {shown}",
    )


@scenario("CreateTrainingJob response lost")
def create_response_lost(env: FaultEnv) -> Row:
    """The create reaches SageMaker, the answer never comes back (connection dropped): botocore retries the
    create, SageMaker answers ResourceInUse for the run's own job: re-attach, never a second job or a failure."""
    fault = "CreateTrainingJob response lost"
    names = env.names(fault)
    params, shared = env.train_params(), env.shared()
    name = job_name(names.run_id)
    dropped: list[str] = []

    def rule(request: Request) -> Action | None:
        if request.operation == "SageMaker.CreateTrainingJob" and not dropped:
            dropped.append(request.operation)
            return Action(DROP_RESPONSE)
        return None

    audit = Audit(env, fault)
    try:
        with FaultProxy(env.stack.endpoints["sagemaker"], rule=rule) as proxy, env.connection(sagemaker=proxy.url):
            handled, outcome = True, "the lost create was retried by botocore and the task re-attached"
            try:
                result = train_operator(shared["sleeper"], shared["dataset"]).execute(context(names.run_id, params))
                handled = result["Training"]["TrainingJobName"] == name
            except Exception as exc:
                handled, outcome = False, f"the task failed: {type(exc).__name__}: {str(exc)[:200]}"
            creates = proxy.count("SageMaker.CreateTrainingJob")
        audit.jobs(name)
    finally:
        stop_quietly(env.sm, name)
    return audit.row(outcome, handled and bool(dropped), f"{creates} CreateTrainingJob requests, 1 answer dropped")


def _refused_request(env: FaultEnv, fault: str, **bad: Any) -> Row:
    """A request SageMaker (or the request builder) refuses: AirflowFailException at once, no job, no retry."""
    from airflow.sdk.exceptions import AirflowFailException

    names = env.names(fault)
    shared = env.shared()
    ctx = context(names.run_id, env.train_params(**bad))
    with env.connection():
        handled, outcome = expect_error(
            lambda: train_operator(shared["sleeper"], shared["dataset"]).execute(ctx), AirflowFailException
        )
    audit = Audit(env, fault)
    audit.jobs(job_name(names.run_id), expected=0)
    return audit.row(outcome, handled, "AirflowFailException: Airflow fails the task without retrying")


@scenario("CreateTrainingJob ValidationException")
def create_validation_exception(env: FaultEnv) -> Row:
    # Settings take any role ARN; SageMaker checks the model's pattern (12-digit account) server-side.
    return _refused_request(env, "CreateTrainingJob ValidationException", role_arn="arn:aws:iam::1234:role/inventory")


@scenario("instance type SageMaker cannot train on")
def bad_instance_type(env: FaultEnv) -> Row:
    # Matches the settings' ml.<family>.<size> shape, but SageMaker has no ml.c5.large training instance.
    return _refused_request(env, "instance type SageMaker cannot train on", instance_type="ml.c5.large")


@scenario("train task killed (on_kill)")
def train_task_killed(env: FaultEnv) -> Row:
    fault = "train task killed (on_kill)"
    names = env.names(fault)
    params, shared = env.train_params(), env.shared()
    name = job_name(names.run_id)
    operator = train_operator(shared["sleeper"], shared["dataset"])
    audit = Audit(env, fault)
    try:
        with env.connection():
            operator.execute(context(names.run_id, params))
            operator.on_kill()  # what Airflow's task runner calls on SIGTERM (a killed or cleared task)
        described = settled(env.sm, name, 60)
        audit.jobs(name)
    finally:
        stop_quietly(env.sm, name)
    audit.job_state(described)
    return audit.row(
        f"job {described['TrainingJobStatus']} by StopTrainingJob",
        described["TrainingJobStatus"] == "Stopped",
        f"job {name}",
    )


@scenario("wait_for_training killed (on_kill)")
def sensor_killed(env: FaultEnv) -> Row:
    """Killing or clearing the sensor only stops the waiting: the job keeps running (only the train task,
    which started it, stops it when killed)."""
    from inventory_pipeline.airflow.sensors import TrainingJobSensor

    fault = "wait_for_training killed (on_kill)"
    names = env.names(fault)
    params, shared = env.train_params(), env.shared()
    name = job_name(names.run_id)
    audit = Audit(env, fault)
    try:
        with env.connection():
            train_operator(shared["sleeper"], shared["dataset"]).execute(context(names.run_id, params))
            sensor = TrainingJobSensor(task_id="wait_for_training", job_name=name, print_log=False, timeout=60)
            poked = sensor.poke(context(names.run_id, params))
            sensor.on_kill()
        time.sleep(2)
        after_kill = env.sm.describe_training_job(TrainingJobName=name)["TrainingJobStatus"]
        audit.jobs(name)
    finally:
        stop_quietly(env.sm, name)
    audit.job_state(settled(env.sm, name, 60))
    return audit.row(
        f"job still {after_kill} after the sensor was killed",
        after_kill == "InProgress" and poked is False,
        f"job {name}",
    )


@scenario("a foreign job holds this run's name")
def foreign_job(env: FaultEnv) -> Row:
    """Another deployment sharing the account created a job with this run's (predictable) name. The train task
    must not adopt it as its own: it fails at once naming the job and the tags that differ, creates nothing,
    and leaves the other deployment's job running untouched."""
    from airflow.sdk.exceptions import AirflowFailException

    from inventory_pipeline.settings import Settings
    from inventory_pipeline.training.ownership import DEPLOYMENT_TAG
    from inventory_pipeline.training.request import build_training_request

    fault = "a foreign job holds this run's name"
    names = env.names(fault)
    params, shared = env.train_params(), env.shared()
    name = job_name(names.run_id)
    foreign = build_training_request(
        Settings.from_sources({**params, "deployment_id": "another-deployment"}, env={}),
        name,
        shared["dataset"]["channels"],
        shared["sleeper"]["s3_uri"],
        run_id=names.run_id,
        dag_id=DAG_ID,
    )
    env.sm.create_training_job(**foreign)
    audit = Audit(env, fault)
    try:
        with env.connection():
            handled, outcome = expect_error(
                lambda: train_operator(shared["sleeper"], shared["dataset"]).execute(context(names.run_id, params)),
                AirflowFailException,
            )
        described = env.sm.describe_training_job(TrainingJobName=name)
        tags = {t["Key"]: t["Value"] for t in env.sm.list_tags(ResourceArn=described["TrainingJobArn"])["Tags"]}
        audit.jobs(name)
        untouched = described["TrainingJobStatus"] == "InProgress" and tags.get(DEPLOYMENT_TAG) == "another-deployment"
        if not untouched:
            audit.problems.append(f"the foreign job was touched: {described['TrainingJobStatus']}, tags {tags}")
        named = name in outcome and DEPLOYMENT_TAG in outcome
    finally:
        stop_quietly(env.sm, name)
    return audit.row(outcome, handled and named, f"foreign job {name} kept running, not adopted")


@scenario("Spot capacity reclaimed mid-training", slow=True)
def spot_interrupted(env: FaultEnv) -> Row:
    """Managed Spot: the instances are reclaimed after the first checkpoint reached S3. As on SageMaker the job
    goes Interrupted -> Restarting -> Training, train.py resumes from the restored checkpoint and finishes
    exactly the epochs asked for, on the same training images; the wait for capacity is not billed."""
    from inventory_pipeline.local_aws.runner.job_store import JobStore
    from inventory_pipeline.training.request import JobPaths, output_path

    fault = "Spot capacity reclaimed mid-training"
    names = env.names(fault)
    shared = env.shared()
    # The interruption comes after the first checkpoint reaches S3 (synced every second); on a fast machine a
    # 3-epoch job on these 33 photos finished before it landed: 6 epochs leave it room to land mid-training.
    epochs = 6
    params = env.train_params(use_spot=True, max_wait_s=600, epochs=epochs)
    name = job_name(names.run_id)
    bucket = shared["names"].bucket
    audit = Audit(env, fault)
    try:
        with env.connection():
            train_operator(shared["code"], shared["dataset"]).execute(context(names.run_id, params))
        from inventory_pipeline.settings import Settings

        checkpoints = JobPaths(output_path(Settings.from_sources(params, env={})), name).checkpoints
        prefix = checkpoints.split("/", 3)[3]
        wait_until(lambda: list_keys(env.s3, bucket, prefix), 180, 0.2, "the first checkpoint in S3")
        JobStore(Path(env.stack.state_dir) / "sagemaker").request_interruption(name, capacity_wait_s=3.0)
        described = settled(env.sm, name, 300)
        audit.jobs(name)
    finally:
        stop_quietly(env.sm, name)
    audit.job_state(described)
    statuses = [t["Status"] for t in described["SecondaryStatusTransitions"]]
    restarted = statuses[statuses.index("Interrupted") :] if "Interrupted" in statuses else []
    metrics: dict[str, Any] = {}
    if described["TrainingJobStatus"] == "Completed":
        body = env.s3.get_object(
            Bucket=bucket,
            Key=described["ModelArtifacts"]["S3ModelArtifacts"]
            .split("/", 3)[3]
            .replace("model.tar.gz", "output.tar.gz"),
        )["Body"].read()
        metrics = json.loads(tarfile.open(fileobj=io.BytesIO(body)).extractfile("metrics.json").read())
    # the train channel is a ManifestFile whose labels.json lists every training photo
    train_labels = shared["dataset"]["channels"]["train"].split("/", 3)[3].replace(".manifest", "/labels.json")
    train_images = len(read_json(env.s3, bucket, train_labels)["samples"])
    epochs_seen = [row["epoch"] for row in metrics.get("history", [])]
    same_data = sum(metrics.get("class_counts", {}).get("train", {}).values()) == train_images
    resumed = 0 < metrics.get("resumed_after_epoch", 0) < epochs
    billed, trained = described.get("BillableTimeInSeconds", 0), described.get("TrainingTimeInSeconds", 0)
    handled = (
        restarted[:3] == ["Interrupted", "Restarting", "Training"]
        and epochs_seen == list(range(1, epochs + 1))
        and resumed
        and same_data
        and 0 < billed < trained
    )
    return audit.row(
        f"job {described['TrainingJobStatus']}: resumed after epoch {metrics.get('resumed_after_epoch')}, "
        f"epochs {epochs_seen}, billable {billed} s of {trained} s",
        handled,
        f"transitions {statuses}; train images {train_images} (job saw {metrics.get('class_counts', {}).get('train')})",
    )


# --- training: the job's own faults --------------------------------------------------------------------------


@scenario("training process killed", slow=True)
def training_process_killed(env: FaultEnv) -> Row:
    """SIGKILL of train.py mid-training (as the OOM killer does): the job Fails with the reason, the rules
    end Error or evaluate what was saved, the sensor fails the task with the reason, nothing is promoted."""
    from airflow.sdk.exceptions import AirflowException

    from inventory_pipeline.airflow.sensors import TrainingJobSensor

    fault = "training process killed"
    names = env.names(fault)
    shared = env.shared()
    before = seed_champion(env, shared["names"].bucket)
    params = env.train_params(rules_mode="managed", epochs=50)
    name = job_name(names.run_id)
    audit = Audit(env, fault)
    try:
        with env.connection():
            train_operator(shared["code"], shared["dataset"]).execute(context(names.run_id, params))
        index = env.job_dir(name) / "algo-1" / "output" / "tensors" / "index"
        wait_until(
            lambda: len(list(index.rglob("*.json"))) >= 3 if index.is_dir() else False, 120, 0.2, "three saved steps"
        )
        victims = env.training_processes(name)
        for process in victims:
            process.send_signal(signal.SIGKILL)
        described = settled(env.sm, name, 180)
        with env.connection():
            sensor = TrainingJobSensor(task_id="wait_for_training", job_name=name, print_log=False, timeout=60)
            sensed, message = expect_error(lambda: sensor.poke(context(names.run_id, params)), AirflowException)
        audit.jobs(name)
    finally:
        stop_quietly(env.sm, name)
    audit.job_state(described)
    audit.champion(shared["names"].bucket, before)
    reason = described.get("FailureReason", "")
    rules = {s["RuleConfigurationName"]: s["RuleEvaluationStatus"] for s in rule_statuses(described)}
    handled = bool(victims) and described["TrainingJobStatus"] == "Failed" and "-9" in reason and sensed
    return audit.row(f"job Failed: {reason[:140]}", handled, f"rules {rules}; sensor: {message[:160]}")


@scenario("job stopped mid-training (stop window)", slow=True)
def job_stopped_mid_training(env: FaultEnv) -> Row:
    """StopTrainingJob while train.py trains: the job shows Stopping at once, train.py gets SIGTERM and saves
    its model inside the stop window, the runner uploads it (ModelArtifacts) and the job ends Stopped; the rules
    end terminal, the sensor fails the task with the job's status, nothing is promoted."""
    from airflow.sdk.exceptions import AirflowException

    from inventory_pipeline.airflow.sensors import TrainingJobSensor

    fault = "job stopped mid-training (stop window)"
    names = env.names(fault)
    shared = env.shared()
    before = seed_champion(env, shared["names"].bucket)
    params = env.train_params(rules_mode="managed", epochs=50)
    name = job_name(names.run_id)
    audit = Audit(env, fault)
    model_files: list[str] = []
    try:
        with env.connection():
            train_operator(shared["code"], shared["dataset"]).execute(context(names.run_id, params))
        index = env.job_dir(name) / "algo-1" / "output" / "tensors" / "index"
        wait_until(
            lambda: len(list(index.rglob("*.json"))) >= 3 if index.is_dir() else False, 120, 0.2, "three saved steps"
        )
        env.sm.stop_training_job(TrainingJobName=name)
        stopping = env.sm.describe_training_job(TrainingJobName=name)
        described = settled(env.sm, name, 180)
        artifact = described.get("ModelArtifacts", {}).get("S3ModelArtifacts", "")
        if artifact:
            bucket, _, key = artifact[5:].partition("/")
            body = env.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            model_files = tarfile.open(fileobj=io.BytesIO(body)).getnames()
        with env.connection():
            sensor = TrainingJobSensor(task_id="wait_for_training", job_name=name, print_log=False, timeout=60)
            sensed, message = expect_error(lambda: sensor.poke(context(names.run_id, params)), AirflowException)
        audit.jobs(name)
    finally:
        stop_quietly(env.sm, name)
    audit.job_state(described)
    audit.champion(shared["names"].bucket, before)
    shown = (stopping["TrainingJobStatus"], stopping["SecondaryStatus"])
    handled = (
        shown == ("Stopping", "Stopping")
        and (described["TrainingJobStatus"], described["SecondaryStatus"]) == ("Stopped", "Stopped")
        and {"model.pth", "model_info.json"} <= set(model_files)
        and sensed
    )
    return audit.row(f"Stopping, then Stopped with model {sorted(model_files)}", handled, f"sensor: {message[:160]}")


@contextlib.contextmanager
def sagemaker_behind(env: FaultEnv, s3_endpoint: str) -> Iterator[Any]:
    """A second local SageMaker server (own state) whose runners reach S3 at `s3_endpoint` (a FaultProxy)."""
    from inventory_pipeline.local_aws.stack import LocalStack, ServerSpec, sagemaker_command

    def command(host: str, port: int, endpoints: dict[str, str], state_dir: Path) -> list[str]:
        return sagemaker_command(host, port, {**env.stack.endpoints, "s3": s3_endpoint}, state_dir)

    spec = ServerSpec(name="sagemaker", services=("sagemaker",), command=command, health_path="/ping")
    with LocalStack(env.work / f"sagemaker-{uuid.uuid4().hex[:6]}", servers=[spec]) as side:
        yield side


@scenario("rule evaluation crashed", slow=True)
def rule_evaluation_crashed(env: FaultEnv) -> Row:
    """The process evaluating the rules dies after the job Completed, while the rules are still running (the
    local runner, whose threads are the rule jobs, is SIGKILLed while its rule outputs are on their way to
    S3). Every unfinished rule must end Error, the report must not count it as passed, and the promotion gate
    still leaves a consistent champion."""
    from inventory_pipeline.airflow import tasks as dag_tasks
    from inventory_pipeline.rules import evaluate_debugger_rule

    fault = "rule evaluation crashed"
    names = env.names(fault)
    shared = env.shared()
    bucket = shared["names"].bucket
    before = seed_champion(env, bucket)
    params = env.train_params(rules_mode="managed")
    name = job_name(names.run_id)
    audit = Audit(env, fault)
    release, held, killed = threading.Event(), [], []

    def hold_rule_outputs(request: Request) -> Action | None:
        if request.method == "PUT" and "/rule-output/" in request.target:
            held.append(request.target)
            return Action(HOLD, release=release)
        return None

    with (
        FaultProxy(env.stack.endpoints["s3"], rule=hold_rule_outputs) as proxy,
        sagemaker_behind(env, proxy.url) as side,
    ):
        sm = env.client("sagemaker", side.endpoints["sagemaker"])
        try:
            with env.connection(sagemaker=side.endpoints["sagemaker"]):
                train_operator(shared["code"], shared["dataset"]).execute(context(names.run_id, params))

            def completed_with_rules_running() -> bool:
                described = sm.describe_training_job(TrainingJobName=name)
                running = [
                    s["RuleConfigurationName"]
                    for s in rule_statuses(described)
                    if s["RuleEvaluationStatus"] in NON_TERMINAL
                ]
                if described["TrainingJobStatus"] in NON_TERMINAL or not held:
                    return False
                runner = env.runner_process(name, side)
                if described["TrainingJobStatus"] == "Completed" and running and runner is not None:
                    runner.send_signal(signal.SIGKILL)  # its parent, the server, reaps it
                    killed.extend(running)
                return True

            wait_until(completed_with_rules_running, 240, 0.1, "the job Completed with its rules running")
            release.set()
            described = settled(sm, name, 60)
            with env.connection(sagemaker=side.endpoints["sagemaker"]):
                from inventory_pipeline.airflow.sensors import RuleEvaluationSensor

                waited = RuleEvaluationSensor(task_id="wait_for_rules", job_name=name, timeout=60)
                rules_done = waited.poke(context(names.run_id, params))
                report = dag_tasks.parse_rule_reports(params, name, shared["dataset"], None)
                decision = report["decision"]
                from inventory_pipeline.reports.build import training_metrics

                promotion = run_gate_for(
                    env,
                    bucket,
                    name,
                    names.run_id,
                    report=report,
                    metrics=training_metrics(env.s3, described),
                    model_uri=(described.get("ModelArtifacts") or {}).get("S3ModelArtifacts"),
                )
            summaries = sm.list_training_jobs(NameContains=name)["TrainingJobSummaries"]
            audit.jobs_duplicated += max(0, len(summaries) - 1)
        finally:
            release.set()
            stop_quietly(sm, name)
        tensors = env.job_dir(name, side) / "algo-1" / "output" / "tensors"
        # A rule that raises inside the engine (the trial unreadable) is an Error too, never NoIssuesFound.
        trial = env.work / f"trial-{uuid.uuid4().hex[:6]}"
        raised = "no trial to corrupt"
        if tensors.is_dir():
            import shutil

            shutil.copytree(tensors, trial)
    audit.job_state(described)
    audit.champion(bucket, before)
    statuses = {s["RuleConfigurationName"]: s["RuleEvaluationStatus"] for s in rule_statuses(described)}
    errored = bool(killed) and all(statuses[rule] == "Error" for rule in killed)
    reported = set(killed) <= set(decision["errors"]) and not decision["message"].startswith("all rules passed")
    if trial.is_dir():
        for event_file in (trial / "events").rglob("*.tfevents"):
            event_file.write_bytes(b"\x00" * 64)
        config = described["DebugRuleConfigurations"][0]
        outcome = evaluate_debugger_rule(config, str(trial), job_finished=lambda: True)
        raised = f"{outcome.name} on an unreadable trial: {outcome.status}"
        errored = errored and outcome.status == "Error"
    promoted = f"{promotion['status']} ({promotion['reason'][:80]})"
    unfinished = killed or "no rule running"
    return audit.row(
        f"rule process killed with {unfinished} unfinished -> Error; report: {decision['message'][:90]}",
        errored and reported and rules_done,
        f"{len(held)} rule output upload(s) held at the kill; statuses {statuses}; {raised}; promotion {promoted}",
    )


def _failed_job(env: FaultEnv, fault: str, code_key: str, archive: bytes, params: dict[str, Any]) -> tuple[dict, Audit]:
    names = env.names(fault)
    shared = env.shared()
    bucket = shared["names"].bucket
    env.s3.put_object(Bucket=bucket, Key=code_key, Body=archive)
    name = job_name(names.run_id)
    audit = Audit(env, fault)
    try:
        with env.connection():
            train_operator({"s3_uri": f"s3://{bucket}/{code_key}"}, shared["dataset"]).execute(
                context(names.run_id, params)
            )
        described = settled(env.sm, name, 180)
        audit.jobs(name)
    finally:
        stop_quietly(env.sm, name)
    audit.job_state(described)
    return described, audit


@scenario("sourcedir.tar.gz with path traversal")
def sourcedir_traversal(env: FaultEnv) -> Row:
    fault = "sourcedir.tar.gz with path traversal"
    marker = f"escaped-{uuid.uuid4().hex[:8]}.py"
    archive = tar_archive(
        {f"../../{marker}": b"print('outside')", "/tmp/" + marker: b"x", "train.py": SLEEPER.encode()}
    )
    described, audit = _failed_job(
        env, fault, f"{ROOT_PREFIX}code/traversal-{marker}.tar.gz", archive, env.train_params(rules_mode="managed")
    )
    escaped = [str(p) for p in [*Path(env.stack.state_dir).rglob(marker), Path("/tmp") / marker] if p.exists()]
    if escaped:
        audit.problems.append(f"files written outside the code directory: {escaped}")
    reason = described.get("FailureReason", "")
    return audit.row(
        f"job {described['TrainingJobStatus']}: {reason[:150]}",
        described["TrainingJobStatus"] == "Failed" and "refused to extract" in reason and not escaped,
    )


@scenario("sourcedir.tar.gz with links")
def sourcedir_links(env: FaultEnv) -> Row:
    fault = "sourcedir.tar.gz with links"
    archive = tar_archive(
        {"train.py": SLEEPER.encode()}, symlinks={"passwd": "/etc/passwd"}, hardlinks={"shadow": "/etc/shadow"}
    )
    tag = uuid.uuid4().hex[:8]
    described, audit = _failed_job(env, fault, f"{ROOT_PREFIX}code/links-{tag}.tar.gz", archive, env.train_params())
    code = env.job_dir(described["TrainingJobName"]) / "code"
    linked = [str(p) for p in code.rglob("*") if p.is_symlink() or (p.is_file() and p.stat().st_nlink > 1)]
    if linked:
        audit.problems.append(f"links extracted: {linked}")
    reason = described.get("FailureReason", "")
    return audit.row(
        f"job {described['TrainingJobStatus']}: {reason[:150]}",
        described["TrainingJobStatus"] == "Failed" and "refused to extract" in reason and not linked,
    )


class _Payload:
    """Pickles as a call to os.system: what a malicious checkpoint carries."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (self.command,))


@scenario("checkpoint that is not weights-only", slow=True)
def malicious_checkpoint(env: FaultEnv) -> Row:
    """A `pretrained` channel whose checkpoint pickles code: torch.load(weights_only=True) must refuse it."""
    import torch

    fault = "checkpoint that is not weights-only"
    shared = env.shared()
    bucket = shared["names"].bucket
    marker = env.work / f"pwned-{uuid.uuid4().hex[:8]}"
    buffer = io.BytesIO()
    torch.save({"_conv_stem.weight": _Payload(f"touch {marker}")}, buffer)
    key = f"{ROOT_PREFIX}pretrained/{marker.name}/efficientnet_lite0.pth"
    env.s3.put_object(Bucket=bucket, Key=key, Body=buffer.getvalue())
    params = env.train_params(model="efficientnet_lite0", pretrained_s3_uri=f"s3://{bucket}/{key.rsplit('/', 1)[0]}/")
    names = env.names(fault)
    name = job_name(names.run_id)
    audit = Audit(env, fault)
    try:
        with env.connection():
            train_operator(shared["code"], shared["dataset"]).execute(context(names.run_id, params))
        described = settled(env.sm, name, 180)
        audit.jobs(name)
    finally:
        stop_quietly(env.sm, name)
    audit.job_state(described)
    if marker.exists():
        audit.problems.append(f"the checkpoint's code ran ({marker} exists)")
    reason = described.get("FailureReason", "")
    refused = "weights_only" in reason.lower().replace(" ", "_") or "Unpickl" in reason
    return audit.row(
        f"job {described['TrainingJobStatus']}: {reason[:160]}",
        described["TrainingJobStatus"] == "Failed" and refused and not marker.exists(),
    )


# --- the run as a whole: cleared and re-run, promotion interrupted --------------------------------------------


@scenario("run cleared and re-run")
def run_cleared(env: FaultEnv) -> Row:
    """Every task of one DAG run, then all of them again with the same run id (a cleared run): no second job,
    no copy twice, the same dataset version, the code uploaded once."""
    from inventory_pipeline.airflow import tasks as dag_tasks

    fault = "run cleared and re-run"
    names = env.names(fault)
    env.seed_source(names.source)
    env.s3.create_bucket(Bucket=names.bucket)
    params = {
        **env.data_params(names),
        **{k: v for k, v in env.train_params().items() if k not in ("bucket", "source_bucket")},
    }
    name = job_name(names.run_id)
    passes = []
    audit = Audit(env, fault)
    try:
        for _ in range(2):
            with env.connection():
                selection = dag_tasks.select_source(params)
                copied = dag_tasks.copy_images(params, selection)
                dataset = dag_tasks.split_dataset(params, copied)
                code = dag_tasks.package_code(params)
                trained = train_operator(code, dataset).execute(context(names.run_id, params))
            passes.append(
                {
                    "copied": copied["copied"],
                    "split_copied": dataset["copied"],
                    "version": dataset["version"],
                    "uploaded": code["uploaded"],
                    "job": trained["Training"]["TrainingJobArn"],
                }
            )
        audit.jobs(name)
    finally:
        stop_quietly(env.sm, name)
    audit.dataset(names.bucket, set(env.labels()))
    first, again = passes
    handled = (
        again["copied"] == 0
        and again["split_copied"] == 0
        and again["version"] == first["version"]
        and not again["uploaded"]
        and again["job"] == first["job"]
    )
    return audit.row(
        "re-run reused everything: 0 copies, same dataset version, code not re-uploaded, same job",
        handled,
        f"first {first}; re-run {again}",
    )


GATE_WRITES = ("decision", "tracking", "registry", "alias", "champion_copy", "applied")


class Died(Exception):
    """The worker running the gate died here."""


def _better_job(env: FaultEnv, names: Names, job: str, accuracy: float, champion_accuracy: float) -> dict[str, Any]:
    artifact = f"{ROOT_PREFIX}training-jobs/{job}/output/model.tar.gz"
    env.s3.put_object(Bucket=names.bucket, Key=artifact, Body=tar_archive({"model.pth": f"{job} weights".encode()}))
    metrics = accuracy_metrics(accuracy, champion_accuracy)
    report = {"decision": {"failed": False, "message": "no blocking rule fired"}, "rules": []}
    return {"report": report, "metrics": metrics, "model_uri": f"s3://{names.bucket}/{artifact}"}


def _gate_crash(env: FaultEnv, step: str, retried: bool) -> Row:
    """A better job (0.8 vs the champion's 0.5 on the same images) whose gate dies right after the `step`
    write. Retried: the retry must complete the same decision. Never retried: the next run (a worse model)
    must leave the registry and its deployable copy consistent, and the champion correct."""
    fault = f"gate died after the {step} write" + (", then retried" if retried else ", never retried")
    names = env.names(fault)
    env.s3.create_bucket(Bucket=names.bucket)
    before = seed_champion(env, names.bucket, accuracy=0.5)
    sent: list[dict[str, Any]] = []

    def die(reached: str) -> None:
        if reached == step:
            raise Died(f"worker died after the {step} write")

    job = "fault-better-job"
    run = _better_job(env, names, job, 0.8, 0.5)
    died, _ = expect_error(
        lambda: run_gate_for(env, names.bucket, job, names.run_id, **run, checkpoint=die, notify=collect(sent)), Died
    )
    audit = Audit(env, fault)
    if retried:
        decision = run_gate_for(env, names.bucket, job, names.run_id, **run, notify=collect(sent))
        expected = decision["status"] == "promoted" and registry_for(env, names.bucket).champion().tags["job"] == job
    else:
        # the next job scores whichever model the registry names champion now (0.8 once the alias moved)
        moved = registry_for(env, names.bucket).champion().tags.get("job") == job
        nxt = _better_job(env, names, "fault-next-job", 0.4, 0.8 if moved else 0.5)
        decision = run_gate_for(
            env, names.bucket, "fault-next-job", f"{names.run_id}-next", **nxt, notify=collect(sent)
        )
        expected = decision["status"] == "not_better"
    audit.champion(names.bucket, before)
    registry = registry_for(env, names.bucket)
    jobs = [v.tags.get("job") for v in registry.versions()]
    audit.duplicated += len(jobs) - len(set(jobs))
    announced = [r["job"] for r in sent]
    if len(announced) != len(set(announced)):
        audit.problems.append(f"a decision was announced twice: {announced}")
    return audit.row(
        f"{decision['status']}: {decision['reason'][:100]}",
        died and expected,
        f"registry versions {jobs}, champion v{registry.champion().version}; announced {announced}",
    )


def _register_gate_crashes() -> None:
    for step in GATE_WRITES:
        for retried in (True, False):
            name = f"gate died after the {step} write" + (", then retried" if retried else ", never retried")
            scenario(name)(lambda env, step=step, retried=retried: _gate_crash(env, step, retried))


_register_gate_crashes()


# The day-2 operations scenarios (issue 25) live in their own module; importing it registers them here.
import fault_scenarios_operations  # noqa: E402, F401
