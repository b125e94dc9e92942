"""Score the current champion on this job's test channel, so the promotion gate compares the candidate and the
champion on the same images.

The champion arrives as its `model.tar.gz` in the optional `champion` channel and is scored through the serving
handlers of its own code (`code/inference.py`: model_fn, input_fn, predict_fn), the code path an endpoint would
run, in a process that sees none of this job's modules. A champion that cannot be loaded or scored is reported
as an error in metrics.json, never as a score, and never fails the job.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def test_images(test_root: Path) -> list[tuple[str, int, Callable[[], bytes]]]:
    """(name, true count, read the bytes) of every test image: a dataset version's packed channel (its
    labels.json), else an ImageFolder-laid channel (`<count>/<id>.jpg`). The candidate reads the same."""
    from data import COUNTS, labelled_samples

    root = Path(test_root)
    packed = labelled_samples("test", root)
    if packed is not None:
        return [(image.image_id, COUNTS[index], lambda image=image: image.open().read()) for image, index in packed]
    found = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name.isdigit()):
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                found.append((path.relative_to(root).as_posix(), int(folder.name), path.read_bytes))
    return found


def images_digest(images: list[tuple[str, int, Callable[[], bytes]]]) -> str:
    """One hash naming exactly which labelled images were scored."""
    return hashlib.sha256("\n".join(f"{name}:{count}" for name, count, _ in images).encode()).hexdigest()


def _extract_model(channel_dir: Path, work_dir: Path) -> Path:
    archives = sorted(Path(channel_dir).rglob("*.tar.gz"))
    if not archives:
        raise FileNotFoundError(f"the champion channel {channel_dir} holds no model.tar.gz")
    work_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archives[0]) as tar:
        tar.extractall(work_dir, filter="data")  # refuses links and paths outside work_dir
    return work_dir


# Runs in the champion's own process, with the champion's code/ as its working directory (sys.path[0]): only
# SageMaker's serving contract (model_fn, input_fn, predict_fn) is assumed of that code.
SCORER = """
import json, sys
import inference
model = inference.model_fn(sys.argv[1])
answers = {}
for name, path in json.load(open(sys.argv[2])):
    with open(path, "rb") as handle:
        body = handle.read()
    try:
        data = inference.input_fn(body, "image/jpeg")
    except (ValueError, OSError):
        answers[name] = None  # undecodable: the candidate's evaluation skips it too
        continue
    answers[name] = int(inference.predict_fn(data, model)["count"])
json.dump({"answers": answers, "architecture": getattr(model, "inventory_info", {}).get("architecture")},
          open(sys.argv[3], "w"))
"""


def _scorer_env(own_code: Path) -> dict[str, str]:
    """This environment without this job's code on PYTHONPATH (SageMaker puts its code directory there)."""
    env = dict(os.environ)
    kept = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and Path(p).resolve() != own_code.resolve()]
    env["PYTHONPATH"] = os.pathsep.join(kept)
    return env


def run_scorer(
    model_dir: Path, code_dir: Path, images: list[tuple[str, int, Callable[[], bytes]]], work_dir: Path, own_code: Path
) -> dict[str, Any]:
    """Every image's predicted count (None: undecodable) from the model's handlers in `code_dir`."""
    image_dir = work_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    listing = []
    for index, (name, _, read) in enumerate(images):
        path = image_dir / f"{index}.img"
        path.write_bytes(read())
        listing.append([name, str(path)])
    (work_dir / "images.json").write_text(json.dumps(listing))
    out = work_dir / "answers.json"
    proc = subprocess.run(
        [sys.executable, "-c", SCORER, str(model_dir), str(work_dir / "images.json"), str(out)],
        cwd=code_dir,
        env=_scorer_env(own_code),
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"the champion's handlers failed: {last[:500]}")
    return json.loads(out.read_text())


def score_champion(channel_dir: Path, test_root: Path, work_dir: Path, summarise, own_code: Path) -> dict[str, Any]:
    """The champion's accuracy, RMSE, per-class accuracy and per-image answers on `test_root`, or {"error": why}.

    Scored with the code in its own archive (code/), in a separate process, so a change to the model's
    architecture or transforms in this job's code neither breaks nor changes how the champion answers; an
    archive from before models carried code/ is scored with this job's code, and the result says so.
    `summarise(pairs)` turns (true index, predicted index) pairs into the metrics train.py reports for the
    candidate, so both numbers are computed the same way."""
    from data import COUNTS

    try:
        model_dir = _extract_model(Path(channel_dir), Path(work_dir) / "model")
        code_dir, scored_with = model_dir / "code", "its own code (code/ in its model.tar.gz)"
        if not (code_dir / "inference.py").is_file():
            code_dir, scored_with = own_code, "this job's code: its model.tar.gz carries no code/"
        images = test_images(Path(test_root))
        scored = run_scorer(model_dir, code_dir, images, Path(work_dir), own_code)
        index = {count: i for i, count in enumerate(COUNTS)}
        answers = [[name, count, scored["answers"].get(name)] for name, count, _ in images]
        skipped = sum(1 for row in answers if row[2] is None)
        answers = [row for row in answers if row[2] is not None]
        if not answers:
            raise RuntimeError("no decodable test image")
        result = summarise([(index[truth], index[guess]) for _, truth, guess in answers])
        result.update(
            images_digest=images_digest(images),
            skipped=skipped,
            architecture=scored.get("architecture"),
            scored_with=scored_with,
            answers=answers,
        )
        log.info(
            "champion on this run's %d test images, scored with %s: accuracy %.4f, rmse %.4f",
            result["test_images"],
            scored_with,
            result["accuracy"],
            result["rmse"],
        )
        return result
    except Exception as exc:  # a champion we cannot score must not fail the candidate's job
        log.warning("could not score the champion: %s: %s", type(exc).__name__, exc)
        return {"error": f"{type(exc).__name__}: {exc}"}
