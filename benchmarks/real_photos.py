"""How well does training count real bin photos it has never seen, at the class mix real bins have? Nested
cross-validation on the 100 ABID photos, scored at the study's mix.

The 100 photos are balanced (20 per count); real bins are not (the study's file list: 11.8 / 22.0 / 25.5 / 22.7 /
18.0 % of counts 1..5). Every figure is re-weighted to a target mix (default: the study's file_list.json): each
outer-test photo weighs target share / sample share of its count (importance weighting), so accuracy at the mix is
sum_k target_k * recall_k and the squared error likewise. The trivial answers are scored the same way: always the
target's commonest count (accuracy) and always the middle count, 3 (RMSE).

Outer loop: 5 stratified folds. Each holds out 4 photos per count as the test channel and lays the other 80 out
as train (13 per count) and valid (3 per count) channels. Every recipe choice is made inside the fold, from its
train channel only, at the target mix:
- the recipe: head (linear_head's classifier, or ordinal_head's count regression), view, image size and
  test-time augmentation among CANDIDATES, by the lowest importance-weighted ranked probability score (a proper
  score for ordered outcomes: mass on 4 for a 5 costs less than mass on 1) of the held-out predictions of the
  head's own cross-validation on the train channel. Features are extracted once per photo per view/size (and per
  mirror image) by the code train.py runs (linear_head.extract on CountingImageFolder with train.py's evaluation
  transform);
- the head's L2 strength, by train.py itself (the same cross-validation, at the same mix, inside the job);
- the prior: none to choose. The job corrects its answers to the mix it will meet (`--population-counts`, the
  target's counts, as the pipeline passes the source's), which is what is scored.
Then `training_code/train.py` runs as a subprocess under the SM_* contract (the code path a job runs) with the
chosen recipe and the offline ImageNet checkpoint (`make pretrained`) as its `pretrained` channel, and scores the
outer test channel. Reported: at the target mix, accuracy and RMSE with 95% intervals (a stratified bootstrap of
the outer-test answers: the test photos' sampling, not the recipe choice's) beside the trivial answers; the same
for each head with only the view chosen inside the folds (in-process, the same functions); train.py's default
recipe (one more run per fold where the fold chose another); the accuracy over the photos as sampled (balanced),
with a Wilson interval; whether train.py's predictions equal the in-process ones; and the recipe the same
selection picks on all 100 photos. The photos are referenced from ../shared, never copied into the project.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from script_mode import metrics, run_train, script_env

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "data" / "abid-sample"
STUDY_FILE_LIST = ROOT.parent / "shared" / "data" / "file_list.json"
sys.path.insert(0, str(ROOT / "training_code"))

import linear_head  # noqa: E402
import ordinal_head  # noqa: E402
from class_prior import Prior, importance_weights  # noqa: E402
from data import CountingImageFolder, eval_decode_side, eval_transform  # noqa: E402
from model import build_model, find_checkpoint  # noqa: E402
from scoring import ranked_probability_score  # noqa: E402
from train import _loader, parse_config  # noqa: E402

MODEL = "efficientnet_lite0"
HEADS = ("linear", "ordinal")
# (view, image size, TTA, head): the whole bin at three resolutions, and the study's centre crop; each with and
# without averaging over the mirror image; each with the classifier and with the ordinal head.
CANDIDATES = [
    (view, size, tta, head)
    for view, size in (("full", 224), ("full", 320), ("full", 416), ("crop", 224))
    for tta in ("none", "hflip")
    for head in HEADS
]
PER_COUNT = {"test": 4, "valid": 3}  # per outer fold; train gets the rest (13)
BOOTSTRAP = 10_000
MIDDLE = 2  # class index of count 3, the middle count


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


def recipe_args(recipe: tuple[str, int, str, str]) -> list[str]:
    view, size, tta, head = recipe
    return ["--view", view, "--image-size", str(size), "--tta", tta, "--head", head]


def name(recipe: tuple) -> str:
    return "/".join(map(str, recipe))


def target_mix(file_list: Path) -> np.ndarray:
    """Counts of 1..5 in a file_list.json ({"1": [paths], ...})."""
    document = json.loads(file_list.read_text())
    return np.array([len(document[str(c)]) for c in range(1, 6)], dtype=float)


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

    def features(self, recipe: tuple) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
        view, size, tta = recipe[:3]
        x, y, names = self.get(view, size, False)
        if tta == "hflip":  # FlipAveraged's mean of the outputs = the mean of the features for a linear head
            x = (x + self.get(view, size, True)[0]) / 2
        return x, y, {name: i for i, name in enumerate(names)}


def rows_of(split: dict[int, list[Path]], index: dict[str, int]) -> np.ndarray:
    return np.array([index[p.name] for photos in split.values() for p in photos])


def head_module(head: str):
    return ordinal_head if head == "ordinal" else linear_head


def held_out_rps(bank: FeatureBank, recipe: tuple, rows: np.ndarray, target: np.ndarray, seed: int) -> float:
    """The candidate's importance-weighted ranked probability score over its head's own CV on `rows` (the
    held-out predictions at the penalty that CV chose, as train.py chooses it)."""
    x, y, _ = bank.features(recipe)
    module = head_module(recipe[3])
    selection = module.select_penalty(x[rows], y[rows], seed=seed, target=target)
    return ranked_probability_score(selection.held_out, y[rows], importance_weights(y[rows], target))


def select_recipe(scores: dict[tuple, float], heads: tuple[str, ...] = HEADS) -> tuple:
    """The candidate (of these heads) with the lowest score; ties to the earlier candidate."""
    pool = [r for r in CANDIDATES if r[3] in heads]
    return min(pool, key=lambda r: (scores[r], CANDIDATES.index(r)))


def predictions(
    bank: FeatureBank, recipe: tuple, train: np.ndarray, test: np.ndarray, prior: Prior, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(true, predicted) class indices on `test`, fitted on `train` as train.py fits (same functions)."""
    x, y, _ = bank.features(recipe)
    fit, _, _ = head_module(recipe[3]).fit_head(x[train], y[train], prior, seed)
    return y[test], fit.logits(x[test]).argmax(1)


def run_job(
    channels: dict[str, Path], pretrained: Path, work: Path, recipe: tuple | None, seed: int, population: str
) -> dict:
    env = script_env({**channels, "pretrained": pretrained}, work)
    argv = [
        "--model",
        MODEL,
        "--batch-size",
        "16",
        "--seed",
        str(seed),
        "--population-counts",
        population,
        *(recipe_args(recipe) if recipe else []),
    ]
    proc = run_train(argv, env)
    if proc.returncode != 0:
        raise RuntimeError(f"train.py failed: {proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return metrics(work)


def confusion_of(truth: np.ndarray, guess: np.ndarray) -> np.ndarray:
    confusion = np.zeros((5, 5), int)
    np.add.at(confusion, (truth, guess), 1)
    return confusion


def at_mix(confusion: np.ndarray, mix: np.ndarray) -> tuple[float, float]:
    """(accuracy, RMSE) of these answers re-weighted to `mix`: each count's photos weigh mix_k / their share."""
    per_count = confusion / confusion.sum(1, keepdims=True)
    squared = (np.arange(5)[:, None] - np.arange(5)[None, :]) ** 2
    return float(mix @ np.diag(per_count)), float(math.sqrt(mix @ (per_count * squared).sum(1)))


def bootstrap_at_mix(confusion: np.ndarray, mix: np.ndarray, seed: int) -> dict[str, list[float]]:
    """95% percentile intervals of at_mix over a stratified bootstrap: each count's test photos resampled with
    replacement, as many as there were (the design's balance kept)."""
    rng = np.random.default_rng(seed)
    draws = np.zeros((BOOTSTRAP, 5, 5))
    for truth, row in enumerate(confusion):
        draws[:, truth, :] = rng.multinomial(row.sum(), row / row.sum(), size=BOOTSTRAP)
    per_count = draws / draws.sum(2, keepdims=True)
    squared = (np.arange(5)[:, None] - np.arange(5)[None, :]) ** 2
    accuracy = np.einsum("k,bkk->b", mix, per_count)
    rmse = np.sqrt(np.einsum("k,bkj,kj->b", mix, per_count, squared))
    return {
        name: [round(float(v), 3) for v in np.percentile(values, [2.5, 97.5])]
        for name, values in (("accuracy", accuracy), ("rmse", rmse))
    }


def trivial_at_mix(confusion: np.ndarray, mix: np.ndarray) -> dict:
    """The trivial answers on the same test photos, re-weighted the same way."""
    truths = confusion.sum(1)
    majority = int(np.argmax(mix))
    always = {answer: np.outer(truths, np.eye(5, dtype=int)[answer]) for answer in (majority, MIDDLE)}
    return {
        "majority_answer": majority + 1,
        "majority_accuracy": round(at_mix(always[majority], mix)[0], 4),
        "majority_rmse": round(at_mix(always[majority], mix)[1], 4),
        "middle_rmse": round(at_mix(always[MIDDLE], mix)[1], 4),
    }


def summary(confusion: np.ndarray, mix: np.ndarray, seed: int) -> dict:
    """Figures at the target mix (with bootstrap intervals) and as sampled (Wilson interval)."""
    correct, total = int(np.trace(confusion)), int(confusion.sum())
    accuracy, rmse = at_mix(confusion, mix)
    interval = bootstrap_at_mix(confusion, mix, seed)
    sampled_rmse = at_mix(confusion, confusion.sum(1) / total)[1]
    return {
        "accuracy": round(accuracy, 3),
        "accuracy_ci95": interval["accuracy"],
        "rmse": round(rmse, 3),
        "rmse_ci95": interval["rmse"],
        "as_sampled": {
            "accuracy": round(correct / total, 3),
            "ci95": wilson(correct, total),
            "correct": correct,
            "evaluated": total,
            "rmse": round(sampled_rmse, 3),
        },
        "confusion_matrix": confusion.tolist(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42, help="train.py's --seed (its CV folds); also used here")
    parser.add_argument("--pretrained", type=Path, default=ROOT / "build" / "pretrained")
    parser.add_argument("--cache", type=Path, default=None, help="keep extracted features here between runs")
    parser.add_argument(
        "--target-mix",
        type=Path,
        default=STUDY_FILE_LIST,
        help="a file_list.json whose class counts are the mix to score at",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.folds != 5:  # 4 test + 3 valid per count per fold leave 13 to train only with 20 photos and 5 folds
        parser.error("--folds must be 5 (the layout is 4 test / 3 valid / 13 train photos per count)")
    checkpoint = find_checkpoint(args.pretrained, MODEL)
    if checkpoint is None:
        parser.error(f"no checkpoint in {args.pretrained}: run `make pretrained` first")
    torch.set_num_threads(2)
    started = time.perf_counter()
    counts = target_mix(args.target_mix)
    mix, population = counts / counts.sum(), ",".join(str(int(c)) for c in counts)
    prior = Prior(mix, "population")  # what train.py resolves from --population-counts
    by_count = photos_by_count(SAMPLE)
    default = parse_config(["--model", MODEL], env={}).spec
    default_recipe = (default.view, default.input_size, default.tta, default.head)
    confusion = {key: np.zeros((5, 5), int) for key in ("nested", "default", *HEADS)}
    rows, agree, chosen = [], True, {head: [] for head in HEADS}
    with tempfile.TemporaryDirectory() as tmp:
        bank = FeatureBank(by_count, checkpoint, Path(tmp) / "bank", args.cache)
        index = bank.features(CANDIDATES[0])[2]
        for fold in range(args.folds):
            splits = fold_split(by_count, fold, args.folds)
            train, test = rows_of(splits["train"], index), rows_of(splits["test"], index)
            scores = {r: held_out_rps(bank, r, train, mix, args.seed) for r in CANDIDATES}
            recipe = select_recipe(scores)
            channels = link_channels(splits, Path(tmp) / f"fold-{fold}" / "data")
            row = {"fold": fold, "selected": name(recipe), "cv_rps": {name(r): round(v, 4) for r, v in scores.items()}}
            for key, wanted in (("nested", recipe), ("default", default_recipe)):
                if key == "default" and wanted == recipe:
                    job = row["nested"]
                else:
                    # the default recipe runs as train.py's defaults: no recipe arguments
                    job = run_job(
                        channels,
                        args.pretrained,
                        Path(tmp) / f"fold-{fold}" / key,
                        wanted if key == "nested" else None,
                        args.seed,
                        population,
                    )
                confusion[key] += np.array(job["confusion_matrix"])
                row[key] = job
            mine = confusion_of(*predictions(bank, recipe, train, test, prior, args.seed))
            agree &= mine.tolist() == row["nested"]["confusion_matrix"]
            for head in HEADS:  # each head alone, its view chosen inside the fold by the same score
                own = select_recipe(scores, (head,))
                chosen[head].append(name(own))
                confusion[head] += confusion_of(*predictions(bank, own, train, test, prior, args.seed))
            for key in ("nested", "default"):
                row[key] = {
                    "test_accuracy": round(row[key]["accuracy"], 3),
                    "head": row[key]["head_fit"]["head"],
                    "penalty": row[key]["head_fit"]["penalty"],
                    "class_prior": row[key]["class_prior"]["source"],
                }
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
        everything = np.arange(len(index))
        on_all = select_recipe({r: held_out_rps(bank, r, everything, mix, args.seed) for r in CANDIDATES})
    nested = summary(confusion["nested"], mix, args.seed)
    trivial = trivial_at_mix(confusion["nested"], mix)
    result = {
        "model": MODEL,
        "photos": sum(len(p) for p in by_count.values()),
        "folds": args.folds,
        "layout_per_count": {"train": 13, **PER_COUNT},
        "candidates": [name(r) for r in CANDIDATES],
        "target_mix": {
            "mix": [round(float(m), 4) for m in mix],
            "from": str(args.target_mix.name),
            "counts": [int(c) for c in counts],
            "accuracy": nested["accuracy"],
            "accuracy_ci95": nested["accuracy_ci95"],
            "rmse": nested["rmse"],
            "rmse_ci95": nested["rmse_ci95"],
            **trivial,
            "ci_method": f"stratified bootstrap of the outer-test answers ({BOOTSTRAP} draws, "
            "percentile); covers the test photos' sampling, not the recipe choice",
            "selection": "importance-weighted ranked probability score of each head's own CV on the "
            "fold's train channel",
        },
        "nested_cv": nested,
        "recipe_votes": dict(Counter(row["selected"] for row in rows)),
        "selected_on_all_photos": name(on_all),
        "heads": {head: {**summary(confusion[head], mix, args.seed), "selected": chosen[head]} for head in HEADS},
        "default_recipe": {"recipe": name(default_recipe), **summary(confusion["default"], mix, args.seed)},
        "train_py_matches_in_process": agree,
        "wall_s": round(time.perf_counter() - started, 1),
        "rows": rows,
    }
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
