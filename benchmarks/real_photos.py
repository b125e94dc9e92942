"""How well does training count real bin photos it has never seen? Nested cross-validation on the 100 ABID photos.

Outer loop: 5 stratified folds. Each holds out 4 photos per count as the test channel and lays the other 80 out
as train (13 per count) and valid (3 per count) channels. Every recipe choice is made inside the fold, from its
train channel only:
- the recipe (view, image size, test-time augmentation) among CANDIDATES, by the held-out log loss of
  `linear_head.select_penalty`'s cross-validation on the train channel's features. Features are extracted once
  per photo per view/size (and per mirror image) by the code train.py runs (linear_head.extract on
  CountingImageFolder with train.py's evaluation transform);
- the head's L2 strength, by train.py itself (the same cross-validation, inside the job).
Then `training_code/train.py` runs as a subprocess under the SM_* contract (the code path a job runs) with the
chosen recipe and the offline ImageNet checkpoint (`make pretrained`) as its `pretrained` channel, and scores the
outer test channel. Reported: accuracy over the 100 outer-test predictions with a 95% Wilson interval beside the
majority class of those photos; the same for train.py's default recipe (one more run per fold where the fold
chose another); whether train.py's predictions equal the in-process ones; and the accuracy expected on photos in
the study's class mix (per-count recall weighted by 1228/2299/2666/2373/1875), without and with logit
adjustment (`--class-prior study`). The photos are referenced from ../shared, never copied into the project.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from script_mode import metrics, run_train, script_env

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "data" / "abid-sample"
sys.path.insert(0, str(ROOT / "training_code"))

import linear_head  # noqa: E402
from data import CountingImageFolder, eval_decode_side, eval_transform  # noqa: E402
from model import build_model, find_checkpoint  # noqa: E402
from train import _loader, parse_config  # noqa: E402

MODEL = "efficientnet_lite0"
# (view, image size, TTA): the whole bin at three resolutions, and the study's centre crop; each with and
# without averaging over the mirror image.
CANDIDATES = [(view, size, tta) for view, size in (("full", 224), ("full", 320), ("full", 416), ("crop", 224))
              for tta in ("none", "hflip")]  # fmt: skip
PER_COUNT = {"test": 4, "valid": 3}  # per outer fold; train gets the rest (13)


def photos_by_count(sample: Path) -> dict[int, list[Path]]:
    by_count: dict[int, list[Path]] = {}
    for metadata in sorted((sample / "metadata").glob("*.json")):
        count = int(json.loads(metadata.read_text())["EXPECTED_QUANTITY"])
        by_count.setdefault(count, []).append(sample / "bin-images" / f"{metadata.stem}.jpg")
    return by_count


def fold_split(by_count: dict[int, list[Path]], fold: int, folds: int) -> dict[str, dict[int, list[Path]]]:
    """{split: {count: photos}}: the fold's share of each count is its test; the next photos are valid."""
    splits: dict[str, dict[int, list[Path]]] = {"train": {}, "valid": {}, "test": {}}
    for count, photos in by_count.items():
        per_fold = len(photos) // folds
        test = photos[fold * per_fold : (fold + 1) * per_fold]
        rest = [p for p in photos if p not in test]
        splits["test"][count] = test
        splits["valid"][count] = rest[: PER_COUNT["valid"]]
        splits["train"][count] = rest[PER_COUNT["valid"] :]
    return splits


def link_channels(splits: dict[str, dict[int, list[Path]]], out: Path) -> dict[str, Path]:
    for split, by_count in splits.items():
        for count, photos in by_count.items():
            folder = out / split / str(count)
            folder.mkdir(parents=True, exist_ok=True)
            for photo in photos:
                (folder / photo.name).symlink_to(photo)
    return {split: out / split for split in splits}


def recipe_args(recipe: tuple[str, int, str]) -> list[str]:
    view, size, tta = recipe
    return ["--view", view, "--image-size", str(size), "--tta", tta]


def wilson(correct: int, total: int, z: float = 1.96) -> list[float]:
    """95% Wilson score interval of a proportion."""
    p = correct / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return [round(centre - half, 3), round(centre + half, 3)]


class FeatureBank:
    """Backbone features of every photo, once per (view, size, mirrored), by train.py's own transforms and
    linear_head.extract; cached on disk when `cache` is given (keyed by checkpoint, recipe and photo names)."""

    def __init__(self, photos: dict[int, list[Path]], checkpoint: Path, work: Path, cache: Path | None):
        self.all = link_channels({"all": photos}, work)["all"]
        self.checkpoint, self.cache, self.memo = checkpoint, cache, {}
        self.model = build_model(MODEL, checkpoint, False, True, "linear")
        names = [p.name for ps in photos.values() for p in ps]
        self.key = hashlib.sha256(f"{checkpoint.stat().st_size}{sorted(names)}".encode()).hexdigest()[:12]

    def _extract(self, view: str, size: int, mirrored: bool) -> tuple[np.ndarray, np.ndarray, list[str]]:
        spec = parse_config(["--model", MODEL, "--view", view, "--image-size", str(size)], env={}).spec
        transform = eval_transform(spec.input_size, spec.resize, spec.normalization, spec.view)
        side = eval_decode_side(spec.input_size, spec.resize, spec.view)
        dataset = CountingImageFolder("all", self.all, transform, decode_side=side)
        loader = _loader(dataset, 16, 2, False)
        flipped = ((images.flip(-1), labels, bad) for images, labels, bad in loader) if mirrored else loader
        x, y, _ = linear_head.extract(self.model, flipped, torch.device("cpu"))
        return x, y, [path.name for path, _ in dataset.samples]

    def get(self, view: str, size: int, mirrored: bool) -> tuple[np.ndarray, np.ndarray, list[str]]:
        key = (view, size, mirrored)
        if key in self.memo:
            return self.memo[key]
        path = self.cache / f"{self.key}-{view}-{size}-{int(mirrored)}.npz" if self.cache else None
        if path and path.exists():
            saved = np.load(path)
            found = (saved["x"], saved["y"], saved["names"].tolist())
        else:
            found = self._extract(view, size, mirrored)
            if path:
                path.parent.mkdir(parents=True, exist_ok=True)
                np.savez(path, x=found[0], y=found[1], names=np.array(found[2]))
        self.memo[key] = found
        return found

    def features(self, recipe: tuple[str, int, str]) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
        view, size, tta = recipe
        x, y, names = self.get(view, size, False)
        if tta == "hflip":  # FlipAveraged's mean of the outputs = the mean of the features for a linear head
            x = (x + self.get(view, size, True)[0]) / 2
        return x, y, {name: i for i, name in enumerate(names)}


def rows_of(split: dict[int, list[Path]], index: dict[str, int]) -> np.ndarray:
    return np.array([index[p.name] for photos in split.values() for p in photos])


def select_recipe(bank: FeatureBank, train_split: dict[int, list[Path]], seed: int) -> tuple[tuple, dict]:
    """The candidate whose train-channel CV log loss (at its best L2 strength) is lowest: train photos only."""
    scores = {}
    for recipe in CANDIDATES:
        x, y, index = bank.features(recipe)
        rows = rows_of(train_split, index)
        scores[recipe] = linear_head.select_penalty(x[rows], y[rows], seed).best_log_loss
    best = min(CANDIDATES, key=lambda r: (scores[r], CANDIDATES.index(r)))
    return best, {"/".join(map(str, r)): round(s, 4) for r, s in scores.items()}


def in_process_predictions(bank: FeatureBank, recipe, splits, seed: int, prior: str) -> tuple[np.ndarray, np.ndarray]:
    """(true, predicted) class indices on the fold's test photos, fitted as train.py fits (same functions)."""
    x, y, index = bank.features(recipe)
    train, test = rows_of(splits["train"], index), rows_of(splits["test"], index)
    fit, _, _ = linear_head.fit_head(x[train], y[train], prior, seed)
    return y[test], fit.logits(x[test]).argmax(1)


def run_job(channels: dict[str, Path], pretrained: Path, work: Path, recipe, seed: int) -> dict:
    env = script_env({**channels, "pretrained": pretrained}, work)
    argv = ["--model", MODEL, "--batch-size", "16", "--seed", str(seed), *recipe_args(recipe)]
    proc = run_train(argv, env)
    if proc.returncode != 0:
        raise RuntimeError(f"train.py failed: {proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return metrics(work)


def summary(confusion: np.ndarray) -> dict:
    correct, total = int(np.trace(confusion)), int(confusion.sum())
    recall = np.diag(confusion) / confusion.sum(1)
    study = np.array(linear_head.STUDY_CLASS_COUNTS) / sum(linear_head.STUDY_CLASS_COUNTS)
    return {"accuracy": round(correct / total, 3), "ci95": wilson(correct, total), "correct": correct,
            "evaluated": total, "study_mix_accuracy": round(float(recall @ study), 3),
            "confusion_matrix": confusion.tolist()}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42, help="train.py's --seed (its CV folds); also used here")
    parser.add_argument("--pretrained", type=Path, default=ROOT / "build" / "pretrained")
    parser.add_argument("--cache", type=Path, default=None, help="keep extracted features here between runs")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.folds != 5:  # 4 test + 3 valid per count per fold leave 13 to train only with 20 photos and 5 folds
        parser.error("--folds must be 5 (the layout is 4 test / 3 valid / 13 train photos per count)")
    checkpoint = find_checkpoint(args.pretrained, MODEL)
    if checkpoint is None:
        parser.error(f"no checkpoint in {args.pretrained}: run `make pretrained` first")
    torch.set_num_threads(2)
    started = time.perf_counter()
    by_count = photos_by_count(SAMPLE)
    default = parse_config(["--model", MODEL], env={}).spec
    default_recipe = (default.view, default.input_size, default.tta)
    confusion = {"nested": np.zeros((5, 5), int), "default": np.zeros((5, 5), int)}
    in_process = {"train": np.zeros((5, 5), int), "study": np.zeros((5, 5), int)}
    rows, agree = [], True
    with tempfile.TemporaryDirectory() as tmp:
        bank = FeatureBank(by_count, checkpoint, Path(tmp) / "bank", args.cache)
        for fold in range(args.folds):
            splits = fold_split(by_count, fold, args.folds)
            recipe, scores = select_recipe(bank, splits["train"], args.seed)
            channels = link_channels(splits, Path(tmp) / f"fold-{fold}" / "data")
            row = {"fold": fold, "selected": "/".join(map(str, recipe)), "cv_log_loss": scores}
            for name, chosen in (("nested", recipe), ("default", default_recipe)):
                if name == "default" and chosen == recipe:
                    job = row["nested"]
                else:
                    job = run_job(channels, args.pretrained, Path(tmp) / f"fold-{fold}" / name, chosen, args.seed)
                confusion[name] += np.array(job["confusion_matrix"])
                row[name] = job
            truth, guess = in_process_predictions(bank, recipe, splits, args.seed, "train")
            mine = np.zeros((5, 5), int)
            np.add.at(mine, (truth, guess), 1)
            agree &= mine.tolist() == row["nested"]["confusion_matrix"]
            in_process["train"] += mine
            truth, guess = in_process_predictions(bank, recipe, splits, args.seed, "study")
            np.add.at(in_process["study"], (truth, guess), 1)
            for name in ("nested", "default"):
                row[name] = {"test_accuracy": round(row[name]["accuracy"], 3),
                             "penalty": row[name]["head_fit"]["penalty"]}  # fmt: skip
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
    nested, default_summary = summary(confusion["nested"]), summary(confusion["default"])
    result = {
        "model": MODEL, "photos": sum(len(p) for p in by_count.values()), "folds": args.folds,
        "layout_per_count": {"train": 13, **PER_COUNT},
        "candidates": ["/".join(map(str, r)) for r in CANDIDATES],
        "nested_cv": nested,
        "default_recipe": {"recipe": "/".join(map(str, default_recipe)), **default_summary},
        "majority_baseline": round(int(confusion["nested"].sum(1).max()) / int(confusion["nested"].sum()), 3),
        "train_py_matches_in_process": agree,
        "study_mix_accuracy_with_logit_adjustment": summary(in_process["study"])["study_mix_accuracy"],
        "wall_s": round(time.perf_counter() - started, 1),
        "rows": rows,
    }  # fmt: skip
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
