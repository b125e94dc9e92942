"""Do the debugger rules cry wolf, and do they catch what they are named for? Healthy and faulty trainings,
judged by the rule engine with the parameters the pipeline sends and with SageMaker's defaults, side by side.

Every run is `training_code/train.py` as SageMaker's container runs it (`script_mode.py`: SM_* variables, the
channels on disk), with the debugger hook configured by the request builder (`debug_hook_config`) and the rule
parameters it would send for that run's schedule (`rule_objects(region, Schedule.for_data(...))`, i.e.
`rules/calibration.py`); the trial is then judged by the engine the local runner and `rules_mode=self_hosted`
use (`evaluate_debugger_rule`). Runs:
- healthy: the demo's recipe (small_cnn, 1500 synthetic photos, 12 one-cycle epochs) on two seeds, the recipe
  the DAG tests train (500 photos, 8 epochs), and the DAG's default schedule (3 epochs, lr 0.001, an MLP head on
  a frozen ImageNet backbone) on 80 of the shared real photos; the real-photo default (a linear head fitted in
  closed form) is run too and shown, but counted nowhere: it takes no gradient step, so the rules say they have
  nothing to watch (Error, with that reason) rather than pass or fire;
- induced, two of each: Overfit (80-120 photos, 30-40 epochs: memorised), Overtraining (300-400 photos, 50-60
  epochs: trained far past convergence), VanishingGradient (the output layer saturated, x1e-9) and
  PoorWeightInitialization (every convolution initialised 1000x too large), the last two by
  `induced_faults.py` around the same train.py.
Per rule: healthy runs (where it produced a result), false positives, induced runs of its fault, detections.
`--json` ends with one line: {"rules": {...}, "sagemaker_defaults": {...}, "runs": [...], ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from script_mode import metrics, script_env

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))
os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
os.environ.setdefault("SMDEBUG_LOG_LEVEL", "warning")  # keep stdout for the result

from inventory_pipeline.dataset.split import assign_split  # noqa: E402
from inventory_pipeline.dataset.synthetic import generate  # noqa: E402
from inventory_pipeline.rules import evaluate_debugger_rule  # noqa: E402
from inventory_pipeline.rules.calibration import Schedule  # noqa: E402
from inventory_pipeline.rules.sdk_rules import rule_objects  # noqa: E402
from inventory_pipeline.settings import DEBUGGER_RULES, Settings  # noqa: E402
from inventory_pipeline.training.request import debug_hook_config  # noqa: E402

TRAIN = ROOT / "training_code" / "train.py"
FAULTS = Path(__file__).resolve().parent / "induced_faults.py"
PRETRAINED = ROOT / "build" / "pretrained"
HEALTHY, NOT_APPLICABLE = "healthy", "not applicable"


@dataclass
class Run:
    name: str
    kind: str  # HEALTHY, NOT_APPLICABLE, or the rule whose fault is induced
    data: tuple  # ("synthetic", images, seed) or ("real", fold)
    args: list[str]
    fault: str = ""  # induced_faults.py's fault, when the network itself is spoiled
    outcomes: dict[str, dict[str, str]] = field(default_factory=dict)


SMALL_CNN = ["--model", "small_cnn", "--batch-size", "32"]
REAL_MLP = ["--model", "efficientnet_lite0", "--head", "mlp", "--epochs", "3", "--lr", "0.001"]
RUNS = [
    Run("demo recipe, seed 7", HEALTHY, ("synthetic", 1500, 7), [*SMALL_CNN, "--epochs", "12", "--lr", "0.004"]),
    Run("demo recipe, seed 2", HEALTHY, ("synthetic", 1500, 2), [*SMALL_CNN, "--epochs", "12", "--lr", "0.004"]),
    Run(
        "DAG tests' recipe (500 photos, 8 epochs)",
        HEALTHY,
        ("synthetic", 500, 5),
        [*SMALL_CNN, "--epochs", "8", "--lr", "0.004"],
    ),
    Run("real photos, DAG default schedule, MLP head", HEALTHY, ("real", 0), REAL_MLP),
    Run("real photos, linear head (closed form)", NOT_APPLICABLE, ("real", 1), ["--model", "efficientnet_lite0"]),
    Run("memorised: 80 photos, 40 epochs", "Overfit", ("synthetic", 80, 5), [*SMALL_CNN, "--epochs", "40"]),
    Run("memorised: 120 photos, 30 epochs", "Overfit", ("synthetic", 120, 8), [*SMALL_CNN, "--epochs", "30"]),
    Run(
        "past convergence: 400 photos, 60 epochs", "Overtraining", ("synthetic", 400, 3), [*SMALL_CNN, "--epochs", "60"]
    ),
    Run(
        "past convergence: 300 photos, 50 epochs", "Overtraining", ("synthetic", 300, 9), [*SMALL_CNN, "--epochs", "50"]
    ),
    Run(
        "saturated output, seed 4",
        "VanishingGradient",
        ("synthetic", 200, 4),
        [*SMALL_CNN, "--epochs", "3"],
        "vanishing_gradient",
    ),
    Run(
        "saturated output, seed 6",
        "VanishingGradient",
        ("synthetic", 200, 6),
        [*SMALL_CNN, "--epochs", "3"],
        "vanishing_gradient",
    ),
    Run(
        "convolutions x1000, seed 4",
        "PoorWeightInitialization",
        ("synthetic", 200, 4),
        [*SMALL_CNN, "--epochs", "3"],
        "poor_weight_initialization",
    ),
    Run(
        "convolutions x1000, seed 6",
        "PoorWeightInitialization",
        ("synthetic", 200, 6),
        [*SMALL_CNN, "--epochs", "3"],
        "poor_weight_initialization",
    ),
]


def lay_out(data: tuple, out: Path) -> dict[str, Path]:
    """The channels on disk (<split>/<count>/<photo>), as the job sees them."""
    if data[0] == "real":
        from real_photos import SAMPLE, fold_split, link_channels, photos_by_count

        return link_channels(fold_split(photos_by_count(SAMPLE), data[1], 5), out)
    _, images, seed = data
    for item in generate(images, seed=seed):
        folder = out / assign_split(item.image_id) / str(item.label)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{item.image_id}.jpg").write_bytes(item.jpeg)
    return {split: out / split for split in ("train", "valid", "test")}


def images_in(channel: Path) -> int:
    return sum(1 for path in channel.rglob("*") if path.is_file() or path.is_symlink())


def option(args: list[str], name: str, default: str) -> str:
    return args[args.index(name) + 1] if name in args else default


def judge(trial: Path, configurations: list[dict]) -> dict[str, dict[str, str]]:
    outcomes = {}
    for configuration in configurations:
        outcome = evaluate_debugger_rule(configuration, str(trial), job_finished=lambda: True)
        outcomes[configuration["RuleConfigurationName"]] = {"status": outcome.status, "details": outcome.details}
    return outcomes


def execute(run: Run, work: Path) -> dict:
    channels = lay_out(run.data, work / "data")
    if run.data[0] == "real":
        channels["pretrained"] = PRETRAINED
    epochs, batch = int(option(run.args, "--epochs", "3")), int(option(run.args, "--batch-size", "32"))
    settings = Settings(
        model=option(run.args, "--model", "resnet50"), epochs=epochs, batch_size=batch, instance_count=1
    )
    schedule = Schedule.for_data(epochs, batch, 1, images_in(channels["train"]), images_in(channels["valid"]))
    calibrated, _ = rule_objects(settings.region, schedule)
    defaults, _ = rule_objects(settings.region, None)
    hook = work / "debughookconfig.json"
    hook.write_text(json.dumps({**debug_hook_config(settings, calibrated), "LocalPath": str(work / "tensors")}))
    program = [str(FAULTS), "--fault", run.fault] if run.fault else [str(TRAIN)]
    started = time.perf_counter()
    # no --seed: train.py's default, as the DAG sends none (the DAG tests' run is then this benchmark's third)
    proc = subprocess.run(
        [sys.executable, *program, *run.args], env=script_env(channels, work, hook), capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{run.name}: train.py failed\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    scored = metrics(work)
    run.outcomes = {
        "calibrated": judge(work / "tensors", [r.to_debugger_rule_config_dict() for r in calibrated]),
        "sagemaker_defaults": judge(work / "tensors", [r.to_debugger_rule_config_dict() for r in defaults]),
    }
    return {
        "name": run.name,
        "kind": run.kind,
        "fault": run.fault or None,
        "seconds": round(seconds, 1),
        "schedule": schedule.encode(),
        "test_accuracy": round(scored["accuracy"], 3),
        "calibrated": {k: v["status"] for k, v in run.outcomes["calibrated"].items()},
        "sagemaker_defaults": {k: v["status"] for k, v in run.outcomes["sagemaker_defaults"].items()},
    }


def tally(runs: list[Run], which: str) -> dict[str, dict[str, int]]:
    table = {}
    for rule in DEBUGGER_RULES:
        counted = Counter()
        for run in runs:
            status = run.outcomes[which][rule]["status"]
            if run.kind == HEALTHY and status in ("IssuesFound", "NoIssuesFound"):
                counted["healthy_runs"] += 1
                counted["false_positives"] += status == "IssuesFound"
            elif run.kind == rule:
                counted["induced_runs"] += 1
                counted["detections"] += status == "IssuesFound"
        table[rule] = {k: counted[k] for k in ("healthy_runs", "false_positives", "induced_runs", "detections")}
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    parser.add_argument("--verbose", action="store_true", help="print every rule's details")
    args = parser.parse_args()
    if not any(PRETRAINED.glob("*.pth")):
        raise SystemExit(f"no ImageNet checkpoint in {PRETRAINED}: run `make pretrained` first")
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, run in enumerate(RUNS):
            work = Path(tmp) / f"run-{i}"
            work.mkdir()
            row = execute(run, work)
            rows.append(row)
            shown = " ".join(f"{rule}={status}" for rule, status in row["calibrated"].items())
            print(
                f"[{i + 1}/{len(RUNS)}] {run.name} ({run.kind}, {row['seconds']} s, test accuracy "
                f"{row['test_accuracy']}): {shown}",
                file=sys.stderr,
                flush=True,
            )
            if args.verbose:
                for rule, outcome in run.outcomes["calibrated"].items():
                    print(f"    {rule}: {outcome['details']}", file=sys.stderr)
            shutil.rmtree(work, ignore_errors=True)
    calibrated, defaults = tally(RUNS, "calibrated"), tally(RUNS, "sagemaker_defaults")
    print(
        f"{'rule':26} {'calibrated: healthy FP':>24} {'induced caught':>15} {'SageMaker defaults: FP':>24} "
        f"{'caught':>7}",
        file=sys.stderr,
    )
    for rule in DEBUGGER_RULES:
        c, d = calibrated[rule], defaults[rule]
        print(
            f"{rule:26} {c['false_positives']:>17}/{c['healthy_runs']:<6} {c['detections']:>10}/"
            f"{c['induced_runs']:<4} {d['false_positives']:>17}/{d['healthy_runs']:<6} {d['detections']:>3}/"
            f"{d['induced_runs']}",
            file=sys.stderr,
        )
    result = {
        "rules": calibrated,
        "sagemaker_defaults": defaults,
        "runs": rows,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "seconds": round(time.perf_counter() - started),
    }
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
