"""The gate's one path (issue 27), followed at run time on the local stack: the operator hands the task's context to
`decision.gate`; only the gate and `facts` receive it; the gate then takes each step once, in order (gather,
decide, record, apply, announce), every step called by the gate itself; and no call climbs back up, neither
within `decision` nor from a lower package into a higher one."""

from __future__ import annotations

import json
import sys
import uuid
from types import SimpleNamespace
from typing import Any

from layers import DECISION_LAYERS, LAYERS

STEPS = [
    ("decision.facts", "gather"),
    ("decision.decide", "new_record"),
    ("decision.store", "record_once"),
    ("decision.apply", "apply_once"),
    ("decision.announce", "announce"),
]


class _TaskInstance:
    """What `decision.facts` reads of the task instance: the run's task states and XComs."""

    def __init__(self, states: dict[str, str], xcoms: dict[tuple[str, str], Any]):
        self.states, self.xcoms = states, xcoms

    def get_task_states(self, dag_id: str, run_ids: list[str]) -> dict[str, dict[str, str]]:
        return {run_ids[0]: dict(self.states)}

    def xcom_pull(self, task_ids: str, key: str = "return_value") -> Any:
        return self.xcoms.get((task_ids, key))


def _rank(module: str) -> tuple[int, int] | None:
    """(package layer, layer inside decision/) of one of our modules; None for anything else."""
    parts = module.split(".")
    if parts[0] != "inventory_pipeline" or len(parts) < 2 or parts[1] not in LAYERS:
        return None
    inner = next((i for i, layer in enumerate(DECISION_LAYERS) if len(parts) > 2 and parts[2] in layer), 0)
    return LAYERS.index(parts[1]), inner if parts[1] == "decision" else 0


def test_the_context_enters_the_gate_which_takes_each_step_once_in_order(monkeypatch, local_stack, s3, bucket_name):
    from inventory_pipeline.decision.gate import evaluate_and_promote
    from inventory_pipeline.local_aws.stack import airflow_connection

    monkeypatch.setenv(
        "AIRFLOW_CONN_AWS_DEFAULT", json.dumps(airflow_connection(local_stack.endpoints, local_stack.region))
    )
    s3.create_bucket(Bucket=bucket_name)
    run_id = f"manual__{uuid.uuid4().hex[:8]}"
    skipped = ("train", "wait_for_training", "wait_for_rules", "parse_rule_reports", "review_promotion")
    ti = _TaskInstance(
        {
            **dict.fromkeys(("check_run_conf", "select_source", "copy_images", "split_dataset"), "success"),
            **dict.fromkeys(("package_code", "check_lineage"), "success"),
            **dict.fromkeys(skipped, "skipped"),
        },
        {
            ("check_lineage", "return_value"): {
                "skip": True,
                "reason": "unchanged: the same dataset, code and Params as a judged model",
                "lineage": {"dataset_version": "d1", "code_sha256": "c1", "params_sha256": "p1"},
                "champion": None,
            }
        },
    )
    params = {
        "bucket": bucket_name,
        "prefix": "p",
        "tracking_uri": local_stack.endpoints["mlflow"],
        "registered_model": f"path-{uuid.uuid4().hex[:8]}",
        "sns_topic_arn": local_stack.provisioned["topic_arn"],
    }
    context = {"params": params, "ti": ti, "dag": SimpleNamespace(dag_id="inventory_retraining"), "run_id": run_id}

    calls: list[tuple[str, str, str]] = []  # (caller module, callee module, function), ours only
    holders: set[str] = set()  # our modules whose functions were handed the context or its task instance

    def trace(frame: Any, event: str, arg: Any) -> None:
        if event != "call":
            return
        module = frame.f_globals.get("__name__", "")
        if not module.startswith("inventory_pipeline."):
            return
        caller = frame.f_back.f_globals.get("__name__", "") if frame.f_back else ""
        calls.append((caller, module, frame.f_code.co_name))
        if any(value is context or value is ti for value in frame.f_locals.values()):
            holders.add(module.removeprefix("inventory_pipeline."))

    sys.setprofile(trace)
    try:
        record = evaluate_and_promote(context)
    finally:
        sys.setprofile(None)

    assert record["status"] == "skipped_unchanged" and record["tracking"]["run_id"]
    assert holders == {"decision.gate", "decision.facts"}
    steps = [
        (m.removeprefix("inventory_pipeline."), f)
        for _, m, f in calls
        if (m.removeprefix("inventory_pipeline."), f) in STEPS
    ]
    assert steps == STEPS  # each once, in this order
    callers = {c for c, m, f in calls if (m.removeprefix("inventory_pipeline."), f) in STEPS}
    assert callers == {"inventory_pipeline.decision.gate"}
    upward = sorted(
        {
            f"{caller} -> {callee}.{function}"
            for caller, callee, function in calls
            if _rank(caller) is not None and _rank(callee) is not None and _rank(callee) > _rank(caller)
        }
    )
    assert not upward, upward
