"""The promotion gate against the local stack: decisions recorded once in S3, applied to a real MLflow server,
announced; a crash after any write and a retry end in the same single decision (issue 13, point 5)."""

import io
import json
import tarfile
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from support import accuracy_metrics, collect, free_port, tar_archive

from inventory_pipeline.decision.decide import GateInputs, GatePolicy, RunFacts
from inventory_pipeline.decision.facts import registry_state
from inventory_pipeline.decision.gate import run_gate
from inventory_pipeline.decision.registry import Registry

pytestmark = pytest.mark.integration
STEPS = ("decision", "tracking", "registry", "alias", "champion_copy", "applied")
DONE = dict.fromkeys(["train", "wait_for_training", "wait_for_rules", "parse_rule_reports"], "success")
PASSED = {
    "decision": {"failed": False, "message": "no blocking rule fired"},
    "rules": [{"name": "Overfit", "kind": "debugger", "status": "NoIssuesFound"}],
}


class Crash(Exception):
    pass


@pytest.fixture()
def env(s3, bucket_name, local_stack):
    s3.create_bucket(Bucket=bucket_name)
    registry = Registry(local_stack.endpoints["mlflow"], f"counting-{uuid.uuid4().hex[:8]}")
    return {"s3": s3, "bucket": bucket_name, "registry": registry}


def gate(env, job, accuracy, champion_accuracy=None, report=PASSED, notify=None, checkpoint=None, states=None):
    s3, bucket, registry = env["s3"], env["bucket"], env["registry"]
    key = f"jobs/{job}/output/model.tar.gz"
    s3.put_object(Bucket=bucket, Key=key, Body=tar_archive({"model.pth": job}))
    champion = registry.champion()
    metrics = accuracy_metrics(
        accuracy, champion_accuracy, history=[{"epoch": 1, "train_loss": 1.0, "valid_loss": 1.1}]
    )
    facts = RunFacts(
        job=job,
        task_states=states or dict(DONE),
        report=report,
        metrics=metrics,
        lineage={
            "lineage": {"dataset_version": "ds-1", "code_sha256": "c", "params_sha256": "p"},
            "champion": champion.to_dict() if champion else None,
        },
    )
    inputs = GateInputs(
        dag_id="inventory_retraining",
        run_id=f"run-{job}",
        model_uri=f"s3://{bucket}/{key}",
        params={"model": "small_cnn"},
        report_html=b"<html>report</html>",
    )
    facts.champion_now, facts.hold = registry_state(registry, s3, bucket, "p/")  # as the gate's gather reads them
    kwargs = {"checkpoint": checkpoint} if checkpoint else {}
    return run_gate(s3, bucket, "p/", registry, facts, inputs, GatePolicy(), notify=notify, **kwargs)


def deployable(env):
    s3, bucket = env["s3"], env["bucket"]
    body = s3.get_object(Bucket=bucket, Key="p/models/champion/model.tar.gz")["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        weights = tar.extractfile("model.pth").read().decode()
    return weights, json.loads(s3.get_object(Bucket=bucket, Key="p/models/champion/metrics.json")["Body"].read())


def test_first_model_is_registered_promoted_and_copied(env):
    record = gate(env, "j1", 0.6)
    assert record["status"] == "promoted" and record["registry"]["version"] == "1"
    champion = env["registry"].champion()
    assert champion.version == "1" and champion.tags["dataset_version"] == "ds-1" and champion.tags["job"] == "j1"
    weights, metrics = deployable(env)
    assert weights == "j1" and metrics["version"] == "1"


def test_not_better_is_registered_but_the_alias_and_the_copy_stay(env):
    gate(env, "j1", 0.6)
    record = gate(env, "j2", 0.55, champion_accuracy=0.6)
    assert record["status"] == "not_better" and record["registry"]["version"] == "2"
    assert env["registry"].champion().version == "1" and deployable(env)[0] == "j1"


def test_a_blocked_run_is_recorded_and_never_promoted(env):
    blocked = {"decision": {"failed": True, "message": "blocked: Overfit"}, "rules": []}
    record = gate(env, "j1", 0.9, report=blocked, states={**DONE, "parse_rule_reports": "failed"})
    assert record["status"] == "blocked" and env["registry"].champion() is None
    assert env["registry"].version_for_job("j1").tags["decision"] == "blocked"


@pytest.mark.parametrize("step", STEPS)
def test_a_crash_after_any_write_then_a_retry_ends_in_one_consistent_decision(env, step):
    gate(env, "j1", 0.6)
    sent = []

    def crash_at(reached: str) -> None:
        if reached == step:
            raise Crash(step)

    with pytest.raises(Crash):
        gate(env, "j2", 0.8, champion_accuracy=0.6, notify=collect(sent), checkpoint=crash_at)
    retried = gate(env, "j2", 0.8, champion_accuracy=0.6, notify=collect(sent))
    again = gate(env, "j2", 0.1, champion_accuracy=0.6, notify=collect(sent))  # a late retry with other numbers
    assert retried["status"] == again["status"] == "promoted" and again["candidate"]["accuracy"] == 0.8
    registry = env["registry"]
    assert [v.tags["job"] for v in registry.versions()] == ["j1", "j2"]  # one version per job
    assert registry.champion().tags["job"] == "j2"
    weights, metrics = deployable(env)
    assert weights == "j2" and metrics["version"] == registry.champion().version
    runs = registry.client.search_runs([registry._experiment_id()], filter_string="tags.job = 'j2'")
    assert len(runs) == 1
    assert [r["status"] for r in sent] == ["promoted"]  # announced once


def test_a_failed_notification_never_loses_the_decision(env):
    def broken(message_id, record):
        raise ConnectionError("SNS is down")

    record = gate(env, "j1", 0.6, notify=broken)
    assert record["status"] == "promoted" and env["registry"].champion().version == "1"
    sent = []
    gate(env, "j1", 0.6, notify=collect(sent))  # a retry announces what was not announced
    assert [r["status"] for r in sent] == ["promoted"]


def test_rollback_moves_the_alias_and_the_copy_and_is_recorded(env):
    from inventory_pipeline.cli.model import rollback

    gate(env, "j1", 0.6)
    gate(env, "j2", 0.8, champion_accuracy=0.6)
    record = rollback(env["s3"], env["bucket"], "p/", env["registry"], "1", who="test")
    assert record["status"] == "rolled_back" and env["registry"].champion().version == "1"
    assert deployable(env)[0] == "j1"
    with pytest.raises(ValueError, match="no version 9"):
        rollback(env["s3"], env["bucket"], "p/", env["registry"], "9", who="test")


def test_the_listing_shows_each_versions_aliases_as_the_registry_has_them(env):
    """Issue 25 (4): after two promotions v2 is the champion, and `model list` must say so (search results carry
    no aliases; the listing read them from there and showed none)."""
    from inventory_pipeline.cli.model import list_versions

    gate(env, "j1", 0.6)
    gate(env, "j2", 0.8, champion_accuracy=0.6)
    listed = {v["version"]: v["aliases"] for v in list_versions(env["registry"])}
    assert listed == {"1": [], "2": ["champion"]}


class _Refusing(BaseHTTPRequestHandler):
    """An MLflow tracking server that answers every request with one error (403, 503, ...)."""

    status, code = 403, "PERMISSION_DENIED"

    def _answer(self) -> None:
        body = json.dumps({"error_code": self.code, "message": f"refused ({self.status})"}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def refusing_registry(monkeypatch):
    """Registries on servers that refuse (403), fail (503) or are down (connection refused), no client retries."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    servers = []

    def make(kind: str) -> Registry:
        if kind == "down":
            return Registry(f"http://127.0.0.1:{free_port()}", "counting-down")
        status, code = (403, "PERMISSION_DENIED") if kind == "403" else (503, "TEMPORARILY_UNAVAILABLE")
        handler = type("Handler", (_Refusing,), {"status": status, "code": code})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return Registry(f"http://127.0.0.1:{server.server_address[1]}", "counting-refused")

    yield make
    for server in servers:
        server.shutdown()


@pytest.mark.parametrize("kind", ["403", "503", "down"])
def test_a_registry_that_cannot_be_asked_is_not_an_empty_one_and_no_decision_is_written(env, refusing_registry, kind):
    """Issue 25 (2): an MLflow error read as "no champion" made the gate record `promoted: first model` over a real
    champion. Now the read raises, the gate writes no decision, and Airflow retries the task."""
    from inventory_pipeline.decision.registry import RegistryUnavailable
    from inventory_pipeline.decision.store import DecisionStore

    registry = refusing_registry(kind)
    with pytest.raises(RegistryUnavailable, match="could not read the champion"):
        registry.champion()
    with pytest.raises(RegistryUnavailable):
        registry.versions()
    with pytest.raises(RegistryUnavailable):
        gate({**env, "registry": registry}, "j-unasked", 0.8)
    assert DecisionStore(env["s3"], env["bucket"], "p/").read("j-unasked") is None


# --- day-2 operations (issue 25) ---------------------------------------------------------------------------


def test_a_rollback_holds_until_released(env):
    """Issue 25 (5): after a rollback, a better run is recorded `held` (registered, never promoted), and the
    listing says which version is held by whom; `model release` lets the next run promote."""
    from inventory_pipeline.cli.model import list_versions, release, rollback
    from inventory_pipeline.decision.lease import read_hold

    s3, bucket, registry = env["s3"], env["bucket"], env["registry"]
    gate(env, "j1", 0.6)
    gate(env, "j2", 0.8, champion_accuracy=0.6)
    rollback(s3, bucket, "p/", registry, "1", who="oncall")
    held = gate(env, "j3", 0.9, champion_accuracy=0.6)
    assert held["status"] == "held" and "held as champion by oncall" in held["reason"]
    assert registry.champion().version == "1" and deployable(env)[0] == "j1"
    assert registry.version_for_job("j3").tags["decision"] == "held"
    listed = {v["version"]: v for v in list_versions(registry, read_hold(s3, bucket, "p/"))}
    assert listed["1"]["aliases"] == ["champion"] and listed["1"]["held"]["by"] == "oncall"
    assert not listed["2"]["held"]
    released = release(s3, bucket, "p/", registry, who="oncall")
    assert released["status"] == "released" and read_hold(s3, bucket, "p/") is None
    assert gate(env, "j4", 0.9, champion_accuracy=0.6)["status"] == "promoted"
    assert registry.champion().tags["job"] == "j4"


def test_a_promotion_is_not_applied_over_a_champion_that_moved_since_the_decision(env):
    """Issue 25 (3): decided `promoted` against v2, the gate dies before the alias; a rollback to v1 happens; the
    retry must not undo the rollback: the promotion is `superseded`, recorded with what the champion is now."""
    from inventory_pipeline.cli.model import release, rollback

    s3, bucket, registry = env["s3"], env["bucket"], env["registry"]
    gate(env, "j1", 0.6)
    gate(env, "j2", 0.8, champion_accuracy=0.6)

    def crash_at(reached: str) -> None:
        if reached == "registry":
            raise Crash(reached)

    with pytest.raises(Crash):
        gate(env, "j3", 0.9, champion_accuracy=0.8, checkpoint=crash_at)
    rollback(s3, bucket, "p/", registry, "1", who="oncall")
    release(s3, bucket, "p/", registry, who="oncall")  # even with the hold over, v1 is not what j3 beat
    sent = []
    retried = gate(env, "j3", 0.9, champion_accuracy=0.8, notify=collect(sent))
    assert retried["status"] == "superseded" and retried["decided_status"] == "promoted"
    assert "the champion is v1 now, not v2" in retried["reason"]
    assert registry.champion().version == "1" and deployable(env)[0] == "j1"
    assert [r["status"] for r in sent] == ["superseded"]


def test_a_failed_decision_is_superseded_when_a_cleared_run_gets_further(env):
    """Issue 25 (1): the first attempt failed upstream (copy_images), the engineer clears the run, the job trains:
    the gate decides again instead of replaying `failed`, and history keeps both."""
    from inventory_pipeline.decision.store import DecisionStore

    broken = {**DONE, "copy_images": "failed", "train": "upstream_failed"}
    first = gate(env, "j1", 0.6, report=None, states=broken)
    assert first["status"] == "failed"
    again = gate(env, "j1", 0.6, report=None, states=broken)  # a retry on the same facts: the failure stands
    assert again["status"] == "failed" and again.get("attempt") is None
    cleared = gate(env, "j1", 0.6)
    assert cleared["status"] == "promoted" and cleared["attempt"] == 2
    assert cleared["supersedes"]["status"] == "failed" and env["registry"].champion().tags["job"] == "j1"
    assert gate(env, "j1", 0.1)["status"] == "promoted"  # final now: replayed
    history = DecisionStore(env["s3"], env["bucket"], "p/").all()
    assert [r["status"] for r in history if r["job"] == "j1"] == ["failed", "promoted"]


def test_two_gate_attempts_at_once_make_one_run_and_one_version(env):
    """Issue 25 (7): a zombie try and its retry apply the same decision concurrently; the champion lease makes
    one of them write and the other find it written."""
    gate(env, "j1", 0.6)
    results, errors = [], []

    def attempt() -> None:
        try:
            results.append(gate(env, "j2", 0.8, champion_accuracy=0.6))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=attempt) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors and [r["status"] for r in results] == ["promoted", "promoted"], errors
    registry = env["registry"]
    assert [v.tags["job"] for v in registry.versions()] == ["j1", "j2"]
    runs = registry.client.search_runs([registry._experiment_id()], filter_string="tags.job = 'j2'")
    assert len(runs) == 1


def test_an_announcement_that_failed_goes_out_with_the_next_gate_under_its_own_id(env):
    """Issue 25 (7): SNS was down when j1 was decided; j2's gate sends j1's announcement too, each once, each
    with a stable message id a consumer can drop duplicates by."""

    def broken(message_id, record):
        raise ConnectionError("SNS is down")

    gate(env, "j1", 0.6, notify=broken)
    ids = []
    gate(env, "j2", 0.5, champion_accuracy=0.6, notify=lambda message_id, record: ids.append(message_id))
    gate(env, "j2", 0.5, champion_accuracy=0.6, notify=lambda message_id, record: ids.append(message_id))
    assert ids == ["j1", "j2"]
