"""Score the current champion on this job's test channel, so the promotion gate compares the candidate and the
champion on the same images.

The champion arrives as its `model.tar.gz` in the optional `champion` channel and is scored through the serving
handlers (`inference.py`: model_fn, input_fn, predict_fn), the code path an endpoint would run. A champion that
cannot be loaded or scored is reported as an error in metrics.json, never as a score, and never fails the job.
"""

from __future__ import annotations

import hashlib
import logging
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


def score_champion(channel_dir: Path, test_root: Path, work_dir: Path, summarise) -> dict[str, Any]:
    """The champion's accuracy, RMSE and per-class accuracy on `test_root`, or {"error": why}.

    `summarise(pairs)` turns (true index, predicted index) pairs into the metrics train.py reports for the
    candidate, so both numbers are computed the same way."""
    import inference

    try:
        model = inference.model_fn(str(_extract_model(Path(channel_dir), Path(work_dir))))
        counts = {int(c): int(i) for i, c in model.inventory_info["class_to_count"].items()}
        images = test_images(Path(test_root))
        pairs, skipped = [], 0
        for _, count, read in images:
            try:
                data = inference.input_fn(read(), "image/jpeg")
            except (ValueError, OSError):
                skipped += 1  # undecodable: the candidate's evaluation skips it too
                continue
            predicted = inference.predict_fn(data, model)["count"]
            pairs.append((counts[count], counts[predicted]))
        if not pairs:
            raise RuntimeError("no decodable test image")
        result = summarise(pairs)
        result.update(images_digest=images_digest(images), skipped=skipped,
                      architecture=model.inventory_info.get("architecture"))  # fmt: skip
        log.info("champion on this run's %d test images: accuracy %.4f, rmse %.4f", result["test_images"],
                 result["accuracy"], result["rmse"])  # fmt: skip
        return result
    except Exception as exc:  # a champion we cannot score must not fail the candidate's job
        log.warning("could not score the champion: %s: %s", type(exc).__name__, exc)
        return {"error": f"{type(exc).__name__}: {exc}"}
