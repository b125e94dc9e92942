"""A person's path through the Airflow UI: log in, open the DAG, trigger it from the form with quick-run
values, see the promotion wait in "Required actions" (this deployment has every promotion approved), let the
request time out, wait for success, open the report link. Debian's chromium driven by Playwright's Python API (no
browser download); screenshots land in build/e2e/.

Airflow runs as `airflow standalone` (api-server, scheduler, dag-processor, triggerer) on localhost against
the local AWS stack.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import wait_until

from inventory_pipeline.airflow.runner import PROJECT_ROOT, airflow_bin, airflow_env
from inventory_pipeline.local_aws.stack import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOTS = PROJECT_ROOT / "build" / "e2e"
SOURCE_BUCKET = "e2e-source"
PROJECT_BUCKET = "e2e-project"
USER, PASSWORD = "admin", "e2e-password"
# A second user with no role: Airflow's simple auth manager gives it no access to any DAG.
OUTSIDER, OUTSIDER_PASSWORD = "outsider", "outsider-password"
HOMES: dict[str, Path] = {}
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed (make install installs it when root)", allow_module_level=True)


@pytest.fixture(scope="module")
def airflow_ui(local_stack, tmp_path_factory) -> Iterator[str]:
    """`airflow standalone` with this project's DAG, pointed at the local stack; yields the UI's base URL."""
    from inventory_pipeline.aws.clients import make_client
    from inventory_pipeline.dataset.seed import seed_synthetic

    s3 = make_client(
        "s3",
        endpoint_url=local_stack.endpoints["s3"],
        region_name=local_stack.region,
        aws_access_key_id="local-access-key",
        aws_secret_access_key="local-secret-key",
    )
    s3.create_bucket(Bucket=PROJECT_BUCKET)
    # enough photos for small_cnn to beat the trivial answer in 8 epochs (measured: 0.55 vs 0.20 on 49 test photos)
    seed_synthetic(s3, SOURCE_BUCKET, prefix="", images=500, seed=5)

    home = tmp_path_factory.mktemp("airflow-ui")
    HOMES["airflow"] = home
    passwords = {USER: PASSWORD, OUTSIDER: OUTSIDER_PASSWORD}
    (home / "simple_auth_manager_passwords.json.generated").write_text(json.dumps(passwords))
    port = free_port()
    env = airflow_env(
        home,
        {
            **local_stack.env(),
            "PATH": f"{Path(airflow_bin()).parent}:{os.environ['PATH']}",  # standalone starts `airflow ...`
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "INVENTORY_SCHEDULE": "none",  # only the run the test triggers
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin,{OUTSIDER}:",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "INVENTORY_BUCKET": PROJECT_BUCKET,
            "INVENTORY_POKE_INTERVAL_S": "5",
            "INVENTORY_PRINT_LOG": "true",
            # standalone runs a triggerer: the job and rule waits defer to it.
            "INVENTORY_DEFERRABLE": "true",
            "INVENTORY_REPORT_DIR": str(home / "reports"),
            # every promotion waits for a person; nobody answers here, so the scheduler applies the default
            # answer ("Do not promote") after 20 s
            "INVENTORY_APPROVAL_WHEN": "always",
            "INVENTORY_APPROVAL_TIMEOUT_S": "20",
        },
    )
    log_path = SCREENSHOTS / "airflow-standalone.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(
            [airflow_bin(), "standalone"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for(f"{base}/api/v2/version", timeout_s=240, proc=proc, log_path=log_path)
        yield base
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)


def _wait_for(url: str, timeout_s: float, proc: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"airflow standalone exited ({proc.returncode}); see {log_path}")
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(2)
    pytest.fail(f"{url} did not answer within {timeout_s}s; see {log_path}")


def test_trigger_from_the_form_and_open_the_report(airflow_ui):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect, sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)

        page.goto(airflow_ui + "/")
        page.get_by_label("Username").fill(USER)
        page.get_by_label("Password").fill(PASSWORD)
        page.screenshot(path=str(SCREENSHOTS / "01-login.png"))
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(lambda url: "/auth/login" not in url)

        # The DAG appears once the dag-processor has parsed it. The page renders after it has loaded: wait for
        # the button there (counting at once found none until a load happened to be quick: 25-30 s of reloads).
        deadline = time.monotonic() + 180
        trigger = page.get_by_role("button", name="Trigger").first
        while True:
            page.goto(airflow_ui + "/dags/inventory_retraining")
            try:
                trigger.wait_for(state="visible", timeout=10_000)
                if page.get_by_text("inventory_retraining").count():
                    break
            except PlaywrightTimeout:
                pass  # not parsed yet: load the page again
            if time.monotonic() > deadline:
                pytest.fail("the DAG never appeared in the UI")
        page.screenshot(path=str(SCREENSHOTS / "02-dag.png"))

        page.get_by_role("button", name="Trigger").first.click()
        dialog = page.get_by_role("dialog")
        expect(dialog).to_contain_text("Trigger Dag")
        page.wait_for_timeout(1000)
        # The Params form: fill the quick-run values a person would type.
        _fill(dialog, "source_bucket", SOURCE_BUCKET)
        _fill(dialog, "file_list", f"s3://{SOURCE_BUCKET}/file_list.json")
        _fill(dialog, "epochs", "8")
        _fill(dialog, "lr", "0.004")
        _fill(dialog, "instance_count", "1")
        _select(dialog, "model", "small_cnn")
        page.screenshot(path=str(SCREENSHOTS / "03-trigger-form.png"))
        dialog.get_by_role("button", name="Trigger").click()

        # The promotion waits for a person: the task parks in awaiting_input, shown under "Required actions".
        run_id = wait_until(lambda: _latest_run_id(page, airflow_ui), 60, 1, "the triggered run")
        waiting = _wait_for_review(page, airflow_ui, run_id, timeout_s=600)
        if waiting:
            page.goto(f"{airflow_ui}/dags/inventory_retraining/runs/{run_id}/tasks/review_promotion/required_actions")
            page.wait_for_timeout(2000)
            page.screenshot(path=str(SCREENSHOTS / "04a-required-action.png"), full_page=True)
        state = _wait_for_run_state(page, airflow_ui, timeout_s=300)
        page.goto(airflow_ui + "/dags/inventory_retraining")
        page.wait_for_timeout(2000)
        page.screenshot(path=str(SCREENSHOTS / "04-run-finished.png"), full_page=True)
        assert state == "success", f"the run ended {state}; see {SCREENSHOTS}"

        # Nobody answered: the default answer applied at the timeout, and the gate recorded exactly that.
        decision = _api(
            page,
            airflow_ui,
            f"/api/v2/dags/inventory_retraining/dagRuns/{run_id}/taskInstances/"
            "evaluate_and_promote/xcomEntries/return_value",
        )["value"]
        decision = decision if isinstance(decision, dict) else json.loads(decision)
        (SCREENSHOTS / "decision.json").write_text(json.dumps(decision, indent=1))
        assert waiting, f"the promotion never waited for a person: {decision['status']} ({decision['reason']})"
        assert decision["status"] == "not_better" and "nobody answered the approval request" in decision["reason"]
        assert decision["approval"]["timed_out"] is True and decision["approval"]["answer"] == "Do not promote"
        assert decision["baseline"]["passed"]  # it was good enough to ask about

        # The report link of parse_rule_reports opens the HTML report through the project's plugin.
        links = _api(
            page,
            airflow_ui,
            f"/api/v2/dags/inventory_retraining/dagRuns/{run_id}/taskInstances/parse_rule_reports/links",
        )
        (SCREENSHOTS / "links.json").write_text(json.dumps(links))
        links = links["extra_links"]
        xcom = _api(
            page,
            airflow_ui,
            f"/api/v2/dags/inventory_retraining/dagRuns/{run_id}/taskInstances/train/xcomEntries/return_value",
        )
        value = xcom["value"] if isinstance(xcom["value"], dict) else json.loads(xcom["value"])
        route = f"/inventory/reports/{value['Training']['TrainingJobName']}/report.html"
        assert links["Rule report"] == route  # the plugin's link, pointing at the plugin's report route
        # The API server serves the report from S3: the copy the worker wrote to its own disk is not needed.
        shutil.rmtree(HOMES["airflow"] / "reports")
        served = page.goto(airflow_ui + links["Rule report"])
        expect(page.locator("body")).to_contain_text("ProfilerReport")
        # sandboxed: no script of the report runs with Airflow's origin, and the type is never sniffed
        assert served.headers["content-security-policy"] == "sandbox"
        assert served.headers["x-content-type-options"] == "nosniff"
        page.screenshot(path=str(SCREENSHOTS / "05-report.png"), full_page=True)

        # The job waits were deferred to the triggerer, and the job's own log still reached the task log.
        tries = _api(
            page,
            airflow_ui,
            f"/api/v2/dags/inventory_retraining/dagRuns/{run_id}/taskInstances/wait_for_training/tries",
        )
        (SCREENSHOTS / "wait-tries.json").write_text(json.dumps(tries))
        log = _api(
            page,
            airflow_ui,
            f"/api/v2/dags/inventory_retraining/dagRuns/{run_id}/taskInstances/"
            "wait_for_training/logs/1?full_content=true",
        )
        text = json.dumps(log)
        (SCREENSHOTS / "wait-for-training-log.json").write_text(text)
        assert "TaskDeferred" in text or "deferr" in text.lower(), "wait_for_training did not defer"
        assert "train_loss=" in text, "the job's log lines (train.py's metric lines) are not in the task log"

        # Logged out: refused. A user without read access to the DAG: refused.
        outsider = browser.new_context()
        assert outsider.request.get(airflow_ui + route).status == 401
        token = outsider.request.post(
            airflow_ui + "/auth/token", data={"username": OUTSIDER, "password": OUTSIDER_PASSWORD}
        ).json()
        refused = outsider.request.get(airflow_ui + route, headers={"Authorization": f"Bearer {token['access_token']}"})
        assert refused.status == 403
        browser.close()


def _fill(dialog, param: str, value: str) -> None:
    """Text and number fields of the Params form are named `element_<param>`."""
    field = dialog.locator(f"input[name=element_{param}]")
    field.fill(value)
    field.press("Tab")


def _select(dialog, param: str, value: str) -> None:
    """Enum Params render as a searchable select: type the value, then pick the option."""
    box = dialog.locator(f"#element_{param} input[role=combobox]")
    box.click()
    box.fill(value)
    box.press("Enter")


def _api(page, base: str, path: str) -> dict:
    response = page.request.get(base + path)
    assert response.ok, f"{path}: HTTP {response.status}"
    return response.json()


def _latest_run_id(page, base: str) -> str | None:
    runs = _api(page, base, "/api/v2/dags/inventory_retraining/dagRuns?order_by=-start_date&limit=1")
    return runs["dag_runs"][0]["dag_run_id"] if runs["dag_runs"] else None


def _wait_for_review(page, base: str, run_id: str, timeout_s: float) -> bool:
    """True once review_promotion waits for a person (awaiting_input); False if the run ended without that."""
    deadline = time.monotonic() + timeout_s
    path = f"/api/v2/dags/inventory_retraining/dagRuns/{run_id}"
    while time.monotonic() < deadline:
        ti = page.request.get(base + f"{path}/taskInstances/review_promotion")
        if ti.ok and ti.json().get("state") == "awaiting_input":
            return True
        if _api(page, base, path)["state"] in ("success", "failed"):
            return False
        time.sleep(3)
    pytest.fail(f"the run did not reach its review within {timeout_s}s")


def _wait_for_run_state(page, base: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = _api(page, base, "/api/v2/dags/inventory_retraining/dagRuns?order_by=-start_date&limit=1")
        if runs["dag_runs"] and runs["dag_runs"][0]["state"] in ("success", "failed"):
            return runs["dag_runs"][0]["state"]
        time.sleep(5)
    pytest.fail(f"the run did not finish within {timeout_s}s")
