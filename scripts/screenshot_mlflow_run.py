"""docs/images/mlflow-run.png: an MLflow run exactly as the gate logs it, for the README.

Run by hand (`.venv/bin/python scripts/screenshot_mlflow_run.py` from the project root, Debian's chromium
installed): starts a local stack, runs the real gate twice (a first model, then a better one against it) on
staged job results (the tests' `accuracy_metrics`, not a training job) and the demo's latest report, and
screenshots the second run's page in MLflow's UI. The page shows what the gate records; its numbers are staged.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RULES = ("VanishingGradient", "Overfit", "Overtraining", "PoorWeightInitialization")


def main() -> int:
    sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "plugins")]
    from playwright.sync_api import sync_playwright
    from support import accuracy_metrics, tar_archive

    from inventory_pipeline.aws.clients import make_client
    from inventory_pipeline.decision.decide import GateInputs, GatePolicy, RunFacts
    from inventory_pipeline.decision.facts import registry_state
    from inventory_pipeline.decision.gate import run_gate
    from inventory_pipeline.decision.registry import Registry
    from inventory_pipeline.local_aws.stack import LOCAL_ACCESS_KEY, LOCAL_SECRET_KEY, LocalStack

    reports = sorted((ROOT / "build" / "demo" / "reports").glob("*/report.html"))
    html = reports[-1].read_bytes() if reports else b"<html>report</html>"
    done = dict.fromkeys(["train", "wait_for_training", "wait_for_rules", "parse_rule_reports"], "success")
    rules = [{"name": name, "kind": "debugger", "status": "NoIssuesFound"} for name in RULES]
    lineage = {"dataset_version": "a2b66b0281535ec6", "code_sha256": "3ec0067e46b2", "params_sha256": "08e7b7cbd82c"}
    with LocalStack(Path(tempfile.mkdtemp()) / "stack") as stack:
        s3 = make_client(
            "s3",
            stack.endpoints["s3"],
            stack.region,
            aws_access_key_id=LOCAL_ACCESS_KEY,
            aws_secret_access_key=LOCAL_SECRET_KEY,
        )
        s3.create_bucket(Bucket="shot")
        registry = Registry(stack.endpoints["mlflow"], "inventory-counting")
        for job, accuracy, champion_accuracy in (("inventory-week-1", 0.913, None), ("inventory-week-3", 0.960, 0.909)):
            key = f"jobs/{job}/model.tar.gz"
            s3.put_object(Bucket="shot", Key=key, Body=tar_archive({"model.pth": job}))
            champion = registry.champion()
            history = [{"epoch": e, "train_loss": 1.6 / e, "valid_loss": 1.5 / e} for e in range(1, 13)]
            facts = RunFacts(
                job=job,
                task_states=dict(done),
                report={"decision": {"failed": False, "message": "no blocking rule fired"}, "rules": rules},
                metrics=accuracy_metrics(accuracy, champion_accuracy, history=history),
                lineage={"lineage": lineage, "champion": champion.to_dict() if champion else None},
            )
            facts.champion_now, facts.hold = registry_state(registry, s3, "shot", "abid/")  # as gather reads them
            inputs = GateInputs(
                dag_id="inventory_retraining",
                run_id=f"scheduled__{job}",
                model_uri=f"s3://shot/{key}",
                params={"model": "small_cnn", "epochs": 12, "lr": 0.004},
                report_html=html,
            )
            record = run_gate(s3, "shot", "abid/", registry, facts, inputs, GatePolicy())
            print(record["status"], record["tracking"]["run_url"])
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(record["tracking"]["run_url"])
            time.sleep(6)  # MLflow's UI renders the run's page after loading its scripts
            page.screenshot(path=str(ROOT / "docs" / "images" / "mlflow-run.png"))
            browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
