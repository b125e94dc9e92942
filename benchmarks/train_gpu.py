"""train.py on a GPU: each recipe in float32 and in bfloat16 mixed precision, side by side in one run.

For every case, two measurements, each `--amp off` (float32) vs `--amp bf16` (autocast + channels-last on a GPU;
what `--amp auto` picks for a training loop there, see training_code/precision.py):
- job: `training_code/train.py` as SageMaker runs it (a subprocess under the SM_* contract, every CPU a loader
  worker) on synthetic bin photos; its own metrics.json gives images_per_s (the training loop, or the feature pass
  for a linear head, loader included), the wall time and the test accuracy;
- compute: train.py's own loop (run_epoch: forward + backward + Adam; or linear_head.extract for a frozen feature
  pass) over random tensors of its input size already on the device: what the GPU does when fed.
Prints one JSON object: per case the figures and the ratios bf16/fp32. Runs on the CPU too (bfloat16 autocast
there, for a quick check): the point is the GPU. No checkpoint is loaded (random backbones: speed does not
depend on the weights), so accuracies only show that mixed precision learns what float32 learns (small_cnn).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from script_mode import metrics, run_train, script_env

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "training_code"))
sys.path.insert(0, str(ROOT / "plugins"))

import linear_head  # noqa: E402
from model import FEATURE_HEADS, build_model, spec_for  # noqa: E402
from precision import choose_precision  # noqa: E402
from train import run_epoch  # noqa: E402

from inventory_pipeline.dataset.synthetic import generate  # noqa: E402

# name -> train.py's arguments; every case trains on the same photos
CASES = {
    "small_cnn": ["--model", "small_cnn", "--epochs", "12", "--batch-size", "64"],
    "efficientnet_lite0": ["--model", "efficientnet_lite0", "--batch-size", "64"],  # the default: feature pass
    "efficientnet_lite0_finetune": [
        "--model",
        "efficientnet_lite0",
        "--head",
        "mlp",
        "--freeze-backbone",
        "false",
        "--epochs",
        "3",
        "--batch-size",
        "64",
    ],
    "resnet50": ["--model", "resnet50", "--epochs", "3", "--batch-size", "64"],  # the study's frozen backbone
}


def write_channels(root: Path, count: int) -> dict[str, Path]:
    """80/10/10 by image index (the project's hash split needs the pipeline's S3 code; any stable split will do)."""
    channels = {name: root / name for name in ("train", "valid", "test")}
    for index, item in enumerate(generate(count, seed=11)):
        split = "test" if index % 10 == 0 else "valid" if index % 10 == 1 else "train"
        folder = channels[split] / str(item.label)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{item.image_id}.jpg").write_bytes(item.jpeg)
    return channels


def job(argv: list[str], channels: dict[str, Path], amp: str, work: Path) -> dict:
    env = script_env(channels, work)
    env.update(SM_NUM_CPUS=str(os.cpu_count() or 1), SM_NUM_GPUS=str(torch.cuda.device_count()))
    proc = run_train([*argv, "--amp", amp, "--allow-random-backbone", "true"], env)
    if proc.returncode != 0:
        raise RuntimeError(
            f"train.py {' '.join(argv)} --amp {amp} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        )
    found = metrics(work)
    return {
        key: found.get(key)
        for key in (
            "precision",
            "device",
            "images_per_s",
            "wall_time_s",
            "accuracy",
            "gpu_peak_memory_mb",
            "epochs_run",
        )
    }


def compute_rate(argv: list[str], amp: str, device: torch.device, steps: int = 20) -> float:
    """Images per second of train.py's training loop (or feature pass) on random inputs already on the device."""
    args = dict(zip(argv[::2], argv[1::2], strict=False))  # the last --batch-size wins, as in argparse
    spec = spec_for(args["--model"])
    head = args.get("--head", spec.head)
    frozen = args.get("--freeze-backbone", "true") == "true"
    batch = int(args["--batch-size"])
    model = build_model(args["--model"], None, False, frozen, head, spec.tta).to(device)
    precision = choose_precision(amp, device, debugger_hook=False)
    model = precision.prepare(model)
    images = torch.randn(batch, 3, spec.input_size, spec.input_size, device=device)
    batch_of = (images, torch.randint(0, 5, (batch,), device=device), [])
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    criterion = torch.nn.CrossEntropyLoss()

    def seconds(count: int) -> float:  # each batch ends in a host read (.item(), .cpu()), as in the job
        started = time.perf_counter()
        if head in FEATURE_HEADS:
            linear_head.extract(model, [batch_of] * count, device, precision)
        else:
            run_epoch(model, [batch_of] * count, criterion, device, optimizer, precision=precision)
        return time.perf_counter() - started

    seconds(3)  # warm-up: kernel selection, allocator
    return steps * batch / seconds(steps)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    parser.add_argument("--steps", type=int, default=20, help="timed steps of the compute-only measurement")
    parser.add_argument("--batch-size", type=int, default=None, help="instead of each case's (a quick CPU check)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    result: dict = {
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "images": args.images,
        "cases": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        channels = write_channels(Path(tmp) / "channels", args.images)
        result["data_s"] = round(time.perf_counter() - started, 1)
        for name in args.cases.split(","):
            argv = CASES[name] + (["--batch-size", str(args.batch_size)] if args.batch_size else [])
            result["cases"][name] = case = {}
            try:
                for amp in ("off", "bf16"):
                    case[f"job_{amp}"] = job(argv, channels, amp, Path(tmp) / f"{name}-{amp}")
                    case[f"compute_{amp}_img_s"] = round(compute_rate(argv, amp, device, args.steps), 1)
                    print(
                        f"{name} --amp {amp}: {json.dumps(case[f'job_{amp}'])}, compute "
                        f"{case[f'compute_{amp}_img_s']} img/s",
                        file=sys.stderr,
                        flush=True,
                    )
            except Exception as exc:  # one case's failure is reported; the others still run
                case["error"] = f"{type(exc).__name__}: {exc}"[-3000:]
                print(f"{name}: {case['error']}", file=sys.stderr, flush=True)
                continue
            off, bf16 = case["job_off"], case["job_bf16"]
            if off["images_per_s"] and bf16["images_per_s"]:
                case["job_speedup"] = round(bf16["images_per_s"] / off["images_per_s"], 2)
            case["compute_speedup"] = round(case["compute_bf16_img_s"] / case["compute_off_img_s"], 2)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 1 if any("error" in case for case in result["cases"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
