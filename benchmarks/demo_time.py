"""How long the weekly story takes, and how much of it is not training (issue 27).

Runs `python -m inventory_pipeline.demo` (the three weeks of `make demo`, after install) and reads what it wrote
to build/demo/summary.json: `story_s` is the story's wall time, `training_s` the training phases of its jobs as
the jobs report them (TrainingTimeInSeconds, summed over the weeks that trained), `rest_over_training` the rest of
the story (stack start, seeding, task start-up, data plane, rules, report, gate, teardown) divided by that
training time: the figure to drive down. Where the rest goes: `setup_s` (the local stack, seeding week 1's
source and Airflow's start, side by side, before week 1 starts) and `runs_rest_over_training` (the three DAG runs
alone, each read back, less the training). The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUMMARY = ROOT / "build" / "demo" / "summary.json"


def measure() -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "plugins"), "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"}
    env.pop("DEMO_ROLLBACK", None)  # the three weeks, as `make demo` tells them
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "inventory_pipeline.demo"], env=env, capture_output=True, text=True)
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"the demo failed (exit {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    summary = json.loads(SUMMARY.read_text())
    weeks = summary["weeks"]
    training = sum(float((w.get("job") or {}).get("TrainingTimeInSeconds") or 0) for w in weeks)
    story = float(summary["wall_time_s"])
    runs = sum(float(w.get("run_s") or 0) for w in weeks)
    return {
        "story_s": round(story, 1),
        "process_s": round(wall, 1),
        "training_s": round(training, 1),
        "rest_over_training": round((story - training) / training, 3) if training else None,
        "setup_s": summary.get("setup_s"),
        "runs_s": round(runs, 1),
        "runs_rest_over_training": round((runs - training) / training, 3) if training else None,
        "weeks": [
            {
                "week": w["week"],
                "decision": (w.get("decision") or {}).get("status"),
                "training_s": (w.get("job") or {}).get("TrainingTimeInSeconds"),
                "run_s": w.get("run_s"),
                "accuracy": (w.get("metrics") or {}).get("accuracy"),
            }
            for w in weeks
        ],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args()
    result = measure()
    if not args.json:
        story, training = result["story_s"], result["training_s"]
        print(f"story {story} s, training {training} s, rest/training {result['rest_over_training']}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
