"""Does training beat the majority class on real bin photos? Stratified k-fold on the 100 ABID sample photos.

Each fold: per count, 4 photos test, 4 valid, 12 train (60 / 20 / 20), laid out as SageMaker channels and trained
by `training_code/train.py` as a subprocess under the SM_* contract (the code path a job runs), with the
offline ImageNet checkpoint from `make pretrained` as the `pretrained` channel. The majority baseline is 20%
(the sample holds 20 photos of each count). Prints one JSON object: mean/std test accuracy and RMSE of the
count, the baseline, and each fold's figures. The photos are referenced from ../shared, never copied into the
project (links in a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from script_mode import metrics, run_train, script_env

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "data" / "abid-sample"


def photos_by_count(sample: Path) -> dict[int, list[Path]]:
    by_count: dict[int, list[Path]] = {}
    for metadata in sorted((sample / "metadata").glob("*.json")):
        count = int(json.loads(metadata.read_text())["EXPECTED_QUANTITY"])
        by_count.setdefault(count, []).append(sample / "bin-images" / f"{metadata.stem}.jpg")
    return by_count


def fold_channels(by_count: dict[int, list[Path]], fold: int, folds: int, out: Path) -> dict[str, Path]:
    for count, photos in by_count.items():
        per_fold = len(photos) // folds
        test = photos[fold * per_fold : (fold + 1) * per_fold]
        rest = [p for p in photos if p not in test]
        splits = {"test": test, "valid": rest[:per_fold], "train": rest[per_fold:]}
        for split, chosen in splits.items():
            folder = out / split / str(count)
            folder.mkdir(parents=True, exist_ok=True)
            for photo in chosen:
                (folder / photo.name).symlink_to(photo)
    return {split: out / split for split in ("train", "valid", "test")}


def run_fold(channels: dict[str, Path], pretrained: Path, work: Path, args: argparse.Namespace) -> dict:
    env = script_env({**channels, "pretrained": pretrained}, work)
    argv = ["--model", args.model, "--epochs", str(args.epochs), "--lr", str(args.lr), "--batch-size", "16",
            "--seed", "1", *args.train_args.split()]  # fmt: skip
    proc = run_train(argv, env)
    if proc.returncode != 0:
        raise RuntimeError(f"train.py failed: {proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return metrics(work)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--lr", type=float, default=0.001)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--pretrained", type=Path, default=ROOT / "build" / "pretrained")
    parser.add_argument("--train-args", default="", help='more train.py arguments, e.g. "--view crop --image-size 224"')
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.folds < 3:  # each fold takes one share for test and one for valid; training needs what is left
        parser.error("--folds must be at least 3")
    if not any(args.pretrained.glob("*.pth")):
        parser.error(f"no checkpoint in {args.pretrained}: run `make pretrained` first")
    by_count = photos_by_count(SAMPLE)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for fold in range(args.folds):
            work = Path(tmp) / f"fold-{fold}"
            metrics = run_fold(fold_channels(by_count, fold, args.folds, work / "data"), args.pretrained, work, args)
            rows.append({"fold": fold, "test_accuracy": round(metrics["accuracy"], 3),
                         "rmse": round(metrics["rmse"], 3), "epochs_run": metrics.get("epochs_run")})  # fmt: skip
            print(json.dumps(rows[-1]), file=sys.stderr)
    accuracies = [r["test_accuracy"] for r in rows]
    total = sum(len(p) for p in by_count.values())
    result = {
        "model": args.model, "epochs": args.epochs, "lr": args.lr, "train_args": args.train_args,
        "folds": args.folds, "photos": total,
        "mean_test_accuracy": round(statistics.mean(accuracies), 3),
        "std_test_accuracy": round(statistics.stdev(accuracies), 3) if len(accuracies) > 1 else 0.0,
        "mean_rmse": round(statistics.mean(r["rmse"] for r in rows), 3),
        "majority_baseline": round(max(len(p) for p in by_count.values()) / total, 3),
        "rows": rows,
    }  # fmt: skip
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
