"""The promotion gate against the local stack: decisions recorded once in S3, applied to a real MLflow server,
announced; a crash after any write and a retry end in the same single decision (issue 13, point 5)."""

import io
import json
import tarfile
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from support import accuracy_metrics, free_port, tar_archive

from inventory_pipeline.decisions import GatePolicy, RunFacts
from inventory_pipeline.promotion import GateInputs, run_gate
from inventory_pipeline.tracking import Registry

pytestmark = pytest.mark.integration
STEPS = ("decision", "tracking", "registry", "alias", "champion_copy", "applied")
DONE = dict.fromkeys(["train", "wait_for_training", "wait_for_rules", "parse_rule_reports"], "success")
PASSED = {"decision": {"failed": False, "message": "no blocking rule fired"}, "rules": [
    {"name": "Overfit", "kind": "debugger", "status": "NoIssuesFound"}]}  # fmt: skip


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
    metrics = accuracy_metrics(accuracy, champion_accuracy, history=[{"epoch": 1, "train_loss": 1.0,
                                                                       "valid_loss": 1.1}])  # fmt: skip
    facts = RunFacts(job=job, task_states=states or dict(DONE), report=report, metrics=metrics,
                     lineage={"lineage": {"dataset_version": "ds-1", "code_sha256": "c", "params_sha256": "p"},
                              "champion": champion.to_dict() if champion else None})  # fmt: skip
    inputs = GateInputs(dag_id="inventory_retraining", run_id=f"run-{job}", model_uri=f"s3://{bucket}/{key}",
                        params={"model": "small_cnn"}, report_html=b"<html>report</html>")  # fmt: skip
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
        gate(env, "j2", 0.8, champion_accuracy=0.6, notify=sent.append, checkpoint=crash_at)
    retried = gate(env, "j2", 0.8, champion_accuracy=0.6, notify=sent.append)
    again = gate(env, "j2", 0.1, champion_accuracy=0.6, notify=sent.append)  # a late retry with other numbers
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
    def broken(record):
        raise ConnectionError("SNS is down")

    record = gate(env, "j1", 0.6, notify=broken)
    assert record["status"] == "promoted" and env["registry"].champion().version == "1"
    sent = []
    gate(env, "j1", 0.6, notify=sent.append)  # a retry announces what was not announced
    assert [r["status"] for r in sent] == ["promoted"]


def test_rollback_moves_the_alias_and_the_copy_and_is_recorded(env):
    from inventory_pipeline.model_cli import rollback

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
    from inventory_pipeline.model_cli import list_versions

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
    from inventory_pipeline.decisions import DecisionStore
    from inventory_pipeline.tracking import RegistryUnavailable

    registry = refusing_registry(kind)
    with pytest.raises(RegistryUnavailable, match="could not read the champion"):
        registry.champion()
    with pytest.raises(RegistryUnavailable):
        registry.versions()
    with pytest.raises(RegistryUnavailable):
        gate({**env, "registry": registry}, "j-unasked", 0.8)
    assert DecisionStore(env["s3"], env["bucket"], "p/").read("j-unasked") is None
