"""Is training fed fast enough? The full loop vs the compute alone, side by side on the same data.

(a) the training loop train.py runs: JPEG decode + augmentation in DataLoader workers + forward/backward;
(b) forward/backward alone on tensors decoded and augmented beforehand.
For a model whose head is fitted on frozen features (`--head ordinal|linear`, efficientnet_lite0's default)
train.py's training work is one feature pass over the train channel instead: (a) is that pass (decode + resize where
train.py does them: in the main process on the CPU, see train.loader_workers; a fresh dataset each time so
nothing comes from the decode cache, as in the job's single pass) and (b) the backbone's forward alone on the
same inputs prepared beforehand. --workers N measures another choice.
Prints one JSON object: full_loop_img_s, compute_only_img_s, input_efficiency (= a/b), cpu_busy (mean
CPU busy fraction during (a)). Targets: input_efficiency >= 0.90, cpu_busy >= 0.80 (the study's instances
sat at <= 20% CPU).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "training_code"))
sys.path.insert(0, str(ROOT / "plugins"))

import linear_head  # noqa: E402
from allocator import keep_freed_memory  # noqa: E402
from data import CountingImageFolder, eval_decode_side, eval_transform  # noqa: E402
from model import FEATURE_HEADS, HEADS, build_model, hold_frozen_norms  # noqa: E402
from train import _loader, loader_workers, parse_config, run_epoch, training_set  # noqa: E402

from inventory_pipeline.dataset.synthetic import generate  # noqa: E402


def write_images(root: Path, count: int) -> None:
    for item in generate(count, seed=9):
        folder = root / str(item.label)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{item.image_id}.jpg").write_bytes(item.jpeg)


class CpuMonitor:
    def __init__(self):
        self.samples: list[float] = []
        self._stop = threading.Event()
        psutil.cpu_percent()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            self.samples.append(psutil.cpu_percent() / 100)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="small_cnn")
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=5, help="measured epochs of each, interleaved")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None, help="loader workers; default: what train.py uses")
    parser.add_argument("--head", choices=HEADS, default=None, help="default: the model's")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    keep_freed_memory()  # as train.py does
    config = parse_config(["--model", args.model, *(["--head", args.head] if args.head else [])], env={})
    spec = config.spec
    if args.workers is None:  # train.py's choice on this machine's CPU (SM_NUM_CPUS = its cores)
        args.workers = loader_workers(config, torch.device("cpu"))
    if spec.head in FEATURE_HEADS:
        result = feature_pass(args, spec)
        print(json.dumps(result) if args.json else json.dumps(result, indent=2))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        write_images(Path(tmp), args.images)
        dataset = training_set(spec, tmp)  # exactly what train.py trains on
        criterion = torch.nn.CrossEntropyLoss()

        def fresh():
            model = build_model(args.model, None, False, True)
            return model, torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)

        model, optimizer = fresh()
        loader = _loader(dataset, args.batch_size, args.workers, True)
        run_epoch(model, loader, criterion, torch.device("cpu"), optimizer)  # warm-up: workers, allocator
        batches = [batch for batch in _loader(dataset, args.batch_size, 0, True)]  # decoded + augmented once
        compute_model, compute_optimizer = fresh()
        compute_model.train()
        hold_frozen_norms(compute_model)  # as run_epoch does

        def compute_epoch() -> tuple[int, float]:
            started, count = time.perf_counter(), 0
            for images, labels, _ in batches:
                compute_optimizer.zero_grad(set_to_none=True)
                criterion(compute_model(images), labels).backward()
                compute_optimizer.step()
                count += len(labels)
            return count, time.perf_counter() - started

        compute_epoch()  # warm-up
        # Epochs of (a) and (b) alternate and their medians are compared: this machine's speed drifts.
        full_rates, compute_rates, busy = [], [], []
        for _ in range(args.epochs):
            with CpuMonitor() as cpu:
                started = time.perf_counter()
                seen = run_epoch(model, loader, criterion, torch.device("cpu"), optimizer).images
                full_rates.append(seen / (time.perf_counter() - started))
            busy += cpu.samples
            count, seconds = compute_epoch()
            compute_rates.append(count / seconds)
    full, compute = statistics.median(full_rates), statistics.median(compute_rates)
    result = {
        "model": args.model,
        "images": args.images,
        "epochs": args.epochs,
        "workers": args.workers,
        "torch_threads": torch.get_num_threads(),
        "full_loop_img_s": round(full, 1),
        "compute_only_img_s": round(compute, 1),
        "input_efficiency": round(full / compute, 3),
        "cpu_busy": round(sum(busy) / max(1, len(busy)), 3),
        "head": spec.head,
        "image_size": spec.input_size,
    }
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


def feature_pass(args: argparse.Namespace, spec) -> dict:
    """(a) train.py's feature pass, a fresh dataset and loader each time (a job decodes every photo once) vs
    (b) the frozen backbone's forward alone on batches prepared beforehand; alternated, medians compared."""
    device = torch.device("cpu")
    model = build_model(args.model, None, False, True, spec.head, spec.tta)
    transform = eval_transform(spec.input_size, spec.resize, spec.normalization, spec.view)
    side = eval_decode_side(spec.input_size, spec.resize, spec.view)
    with tempfile.TemporaryDirectory() as tmp:
        write_images(Path(tmp), args.images)

        def loader():
            return _loader(
                CountingImageFolder("train", tmp, transform, decode_side=side), args.batch_size, args.workers, False
            )

        batches = list(
            _loader(
                CountingImageFolder("train", tmp, transform, decode_side=side, cache_mb=0), args.batch_size, 0, False
            )
        )
        linear_head.extract(model, loader(), device)  # warm-up: allocator, kernels
        full_rates, compute_rates, busy = [], [], []
        for _ in range(args.epochs):
            with CpuMonitor() as cpu:
                started = time.perf_counter()
                seen = len(linear_head.extract(model, loader(), device)[1])
                full_rates.append(seen / (time.perf_counter() - started))
            busy += cpu.samples
            started = time.perf_counter()
            seen = len(linear_head.extract(model, batches, device)[1])
            compute_rates.append(seen / (time.perf_counter() - started))
    full, compute = statistics.median(full_rates), statistics.median(compute_rates)
    return {
        "model": args.model,
        "head": spec.head,
        "image_size": spec.input_size,
        "view": spec.view,
        "tta": spec.tta,
        "images": args.images,
        "epochs": args.epochs,
        "workers": args.workers,
        "torch_threads": torch.get_num_threads(),
        "full_loop_img_s": round(full, 1),
        "compute_only_img_s": round(compute, 1),
        "input_efficiency": round(full / compute, 3),
        "cpu_busy": round(sum(busy) / max(1, len(busy)), 3),
    }


if __name__ == "__main__":
    sys.exit(main())
