"""How well does the small CNN count on the project's synthetic ABID-like photos, and how fast?

Generates N synthetic images (`inventory_pipeline.dataset.synthetic`), splits them 80/10/10 with the data
plane's stable hash, and trains `training_code/train.py` as a subprocess under the SM_* contract on CPU.
Prints one JSON object: test accuracy, RMSE of the count, the majority baseline, epochs run and wall seconds.
Target: test accuracy >= 0.90 within a few CPU minutes.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from script_mode import metrics, run_train, script_env

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))

from inventory_pipeline.dataset.split import assign_split  # noqa: E402
from inventory_pipeline.dataset.synthetic import generate  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--lr", type=float, default=0.004)  # small_cnn's onecycle peak rate
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        labels = Counter()
        for item in generate(args.images, seed=11):
            folder = work / "data" / assign_split(item.image_id) / str(item.label)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{item.image_id}.jpg").write_bytes(item.jpeg)
            labels[assign_split(item.image_id), item.label] += 1
        env = script_env({s: work / "data" / s for s in ("train", "valid", "test")}, work)
        argv = [
            "--model",
            "small_cnn",
            "--epochs",
            str(args.epochs),
            "--lr",
            str(args.lr),
            "--batch-size",
            str(args.batch_size),
            "--seed",
            "1",
        ]
        started = time.perf_counter()
        proc = run_train(argv, env)
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            print(proc.stdout[-3000:] + proc.stderr[-3000:], file=sys.stderr)
            return 1
        scored = metrics(work)
    test_counts = [n for (split, _), n in labels.items() if split == "test"]
    result = {
        "model": "small_cnn",
        "images": args.images,
        "epochs": args.epochs,
        "lr": args.lr,
        "test_images": scored["test_images"],
        "test_accuracy": round(scored["accuracy"], 3),
        "rmse": round(scored["rmse"], 3),
        "majority_baseline": round(max(test_counts) / sum(test_counts), 3),
        "epochs_run": scored["epochs_run"],
        "best_epoch": scored["best_epoch"],
        "wall_s": round(wall, 1),
        "train_images_per_s": scored["images_per_s"],
    }
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
