"""SageMaker script-mode entry point: train the bin-object counter, evaluate it, save it.

Runs unchanged in SageMaker's PyTorch container and under the project's local runner. It knows only its
arguments (the hyperparameters) and its environment (SM_*), gathered once into `JobConfig`; everything below
takes explicit arguments. Metric lines follow metric_definitions.json (the request's MetricDefinitions).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import math
import os
import random
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

sys.path.insert(0, str(Path(__file__).resolve().parent))

import debugger  # noqa: E402
from allocator import keep_freed_memory  # noqa: E402
from champion import images_digest, score_champion, test_images  # noqa: E402
from class_prior import Prior, parse_counts, resolve_prior  # noqa: E402
from data import (  # noqa: E402
    COUNTS,
    VIEWS,
    CountingImageFolder,
    collate_skipping,
    eval_decode_side,
    eval_transform,
    train_decode_side,
    train_transform,
)
from model import (  # noqa: E402
    DOWNLOADABLE,
    FEATURE_HEADS,
    HEADS,
    LR_SCHEDULES,
    TTAS,
    ModelSpec,
    build_model,
    find_checkpoint,
    hold_frozen_norms,
    output_layer,
    spec_for,
)
from precision import AMP_CHOICES, FP32, Precision, choose_precision  # noqa: E402
from self_hosted import SelfHostedProfiler  # noqa: E402
from stop_signal import StopSignal  # noqa: E402

log = logging.getLogger("train")
CODE_DIR = Path(__file__).resolve().parent
# What a model archive carries as code/ (as SageMaker's PyTorch model archives do): the serving handlers and
# everything they import, so the model is served, and scored as a champion, with the code it was trained with.
CODE_SUFFIXES = (".py", ".json", ".txt")


def _bool(text: str) -> bool:
    if str(text).lower() in ("true", "1", "yes"):
        return True
    if str(text).lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


@dataclass
class JobConfig:
    epochs: int
    batch_size: int
    lr: float
    model: str
    seed: int
    num_workers: int  # --num-workers, or SM_NUM_CPUS when not given (see loader_workers)
    freeze_backbone: bool
    early_stopping_patience: int
    spec: ModelSpec
    channels: dict[str, str | None]
    model_dir: Path
    output_data_dir: Path
    hosts: list[str]
    current_host: str
    num_gpus: int
    master_addr: str
    master_port: int
    offline: bool
    checkpoint_dir: Path | None = None  # CheckpointConfig.LocalPath (Managed Spot): per-epoch state, resumed
    class_prior: str = "auto"
    population_counts: str | None = None  # the source's class counts before per_class_limit (the pipeline's)
    head_penalty: float | None = None
    allow_random_backbone: bool = False
    amp: str = "auto"
    workers_given: bool = False  # --num-workers was passed
    ignored_args: list[str] = field(default_factory=list)

    @property
    def world_size(self) -> int:
        return len(self.hosts)

    @property
    def rank(self) -> int:
        return self.hosts.index(self.current_host)


def parse_config(argv: list[str] | None = None, env: dict[str, str] | None = None) -> JobConfig:
    env = dict(os.environ if env is None else env)
    parser = argparse.ArgumentParser(description="Train the bin-object counter (SageMaker script mode)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.001)
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--num-workers", "--num_workers", dest="num_workers", type=int, default=None)
    parser.add_argument("--freeze-backbone", "--freeze_backbone", dest="freeze_backbone", type=_bool, default=True)
    parser.add_argument("--early-stopping-patience", "--early_stopping_patience", dest="patience", type=int, default=0)
    # Defaults come from the model (model.SPECS); these override them.
    parser.add_argument("--view", choices=VIEWS, default=None)
    parser.add_argument("--image-size", "--image_size", dest="image_size", type=int, default=None)
    parser.add_argument("--lr-schedule", "--lr_schedule", dest="lr_schedule", choices=LR_SCHEDULES, default=None)
    parser.add_argument("--head", choices=HEADS, default=None)
    parser.add_argument("--tta", choices=TTAS, default=None)
    # The class mix the answers are corrected to (class_prior.py): auto (the population's: --population-counts,
    # else ABID's), train (no correction), study, uniform or 5 weights.
    parser.add_argument("--class-prior", "--class_prior", dest="class_prior", default="auto")
    # The source's counts of 1..5 before per_class_limit subsampled them, as the pipeline passes them.
    parser.add_argument("--population-counts", "--population_counts", dest="population_counts", default=None)
    # A fixed L2 strength for a feature head instead of the one cross-validation chooses.
    parser.add_argument("--head-penalty", "--head_penalty", dest="head_penalty", type=float, default=None)
    # A pretrained model with no weights to load fails unless this is true (then it trains on a random backbone).
    parser.add_argument(
        "--allow-random-backbone", "--allow_random_backbone", dest="allow_random_backbone", type=_bool, default=False
    )
    # Mixed precision (precision.py): auto = bf16 autocast for a training loop on a GPU; float32 on the CPU, under
    # the debugger hook and for a linear head's single feature pass.
    parser.add_argument("--amp", choices=AMP_CHOICES, default="auto")
    args, unknown = parser.parse_known_args(argv)
    spec = spec_for(args.model)  # a clear error for an unknown model, before any work
    if args.image_size is not None and not 32 <= args.image_size <= 1024:
        parser.error(f"--image-size must be 32..1024, got {args.image_size}")
    view, size = args.view or spec.view, args.image_size or spec.input_size
    if view == "full":
        resize = size
    elif (view, size) == (spec.view, spec.input_size):
        resize = spec.resize
    else:  # another crop: the study's 256:224 resize ratio
        resize = round(size * 256 / 224)
    spec = dataclasses.replace(
        spec,
        view=view,
        input_size=size,
        resize=resize,
        lr_schedule=args.lr_schedule or spec.lr_schedule,
        head=args.head or spec.head,
        tta=args.tta or spec.tta,
    )
    if spec.head in FEATURE_HEADS and (not spec.pretrained_by_default or not args.freeze_backbone):
        parser.error(
            f"--head {spec.head} is fitted on a frozen pretrained backbone ({args.model}, "
            f"freeze-backbone {args.freeze_backbone}): use --head mlp"
        )
    try:  # a bad prior fails here, before any work
        resolve_prior(args.class_prior, np.ones(5), parse_counts(args.population_counts))
    except ValueError as exc:
        parser.error(str(exc))
    hosts = json.loads(env.get("SM_HOSTS", '["algo-1"]'))
    num_cpus = int(env.get("SM_NUM_CPUS", os.cpu_count() or 1))
    return JobConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        model=args.model,
        seed=args.seed,
        num_workers=num_cpus if args.num_workers is None else args.num_workers,
        freeze_backbone=args.freeze_backbone,
        early_stopping_patience=args.patience,
        spec=spec,
        channels={
            name: env.get(f"SM_CHANNEL_{name.upper()}") for name in ("train", "valid", "test", "pretrained", "champion")
        },
        model_dir=Path(env.get("SM_MODEL_DIR", "/opt/ml/model")),
        output_data_dir=Path(env.get("SM_OUTPUT_DATA_DIR", "/opt/ml/output/data")),
        hosts=hosts,
        current_host=env.get("SM_CURRENT_HOST", hosts[0]),
        num_gpus=int(env.get("SM_NUM_GPUS", torch.cuda.device_count())),
        master_addr=env.get("MASTER_ADDR", hosts[0]),
        master_port=int(env.get("MASTER_PORT", "7777")),
        offline=env.get("INVENTORY_OFFLINE", "") == "1",
        checkpoint_dir=Path(env["INVENTORY_CHECKPOINT_DIR"]) if env.get("INVENTORY_CHECKPOINT_DIR") else None,
        class_prior=args.class_prior,
        population_counts=args.population_counts,
        head_penalty=args.head_penalty,
        allow_random_backbone=args.allow_random_backbone,
        amp=args.amp,
        workers_given=args.num_workers is not None,
        ignored_args=unknown,
    )


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def metric_line(**values: float) -> str:
    """`name=value;` pairs, the shape metric_definitions.json's regexes parse."""
    return " ".join(f"{k}={v:.6g};" if isinstance(v, float) else f"{k}={v};" for k, v in values.items())


@dataclass
class EpochResult:
    loss: float
    accuracy: float
    images: int
    skipped: list[dict]
    seconds: float
    stopped: bool = False  # SIGTERM: the epoch ended early


def run_epoch(
    model, loader, criterion, device, optimizer=None, hook=None, scheduler=None, stop=None, precision: Precision = FP32
) -> EpochResult:
    training = optimizer is not None
    model.train(training)
    if training:
        hold_frozen_norms(model)
    debugger.set_mode(hook, train=training)
    total_loss, correct, seen, skipped = 0.0, 0, 0, []
    started = time.perf_counter()
    stopped = False
    with torch.set_grad_enabled(training):
        for images, labels, bad in loader:
            if stop is not None and stop.requested(device):
                stopped = True
                break
            skipped += bad
            if len(labels) == 0:
                continue
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            with precision.autocast():
                outputs = model(precision.inputs(images))
                loss = criterion(outputs, labels)
            if training:
                optimizer.zero_grad(set_to_none=True)
                precision.backward_step(loss, optimizer)
                if scheduler is not None:
                    scheduler.step()
            total_loss += loss.item() * len(labels)
            correct += (outputs.argmax(1) == labels).sum().item()
            seen += len(labels)
    seconds = time.perf_counter() - started
    if seen == 0:
        return EpochResult(float("nan"), 0.0, 0, skipped, seconds, stopped)
    return EpochResult(total_loss / seen, correct / seen, seen, skipped, seconds, stopped)


def summarise(pairs: list[tuple[int, int]]) -> dict:
    """Accuracy, per-class accuracy, RMSE of the predicted count and the confusion matrix of (true, predicted)
    class indices; the candidate and the champion are both reported through this."""
    confusion = np.zeros((len(COUNTS), len(COUNTS)), dtype=int)
    for truth, guess in pairs:
        confusion[truth, guess] += 1
    total = int(confusion.sum())
    if total == 0:
        raise RuntimeError("the test channel has no decodable image: cannot evaluate the model")
    counts = np.array(COUNTS)
    squared = sum(confusion[t, g] * (counts[t] - counts[g]) ** 2 for t in range(5) for g in range(5))
    per_class = {
        str(COUNTS[i]): (float(confusion[i, i] / confusion[i].sum()) if confusion[i].sum() else None) for i in range(5)
    }
    return {
        "accuracy": float(np.trace(confusion) / total),
        "per_class_accuracy": per_class,
        "rmse": float(math.sqrt(squared / total)),
        "confusion_matrix": confusion.tolist(),
        "test_images": total,
    }


def evaluate(model, loader, device, names: list[tuple[str, str]] | None = None) -> dict:
    """summarise() of the model's predictions on the loader, plus the images it had to skip and, given the
    dataset's sample_names() (the loader in dataset order), every image's answer: [name, true, predicted count],
    what the gate's paired test compares with the champion's answers on the same images."""
    model.eval()
    pairs, skipped, answers, position = [], [], [], 0
    with torch.no_grad():
        for images, labels, bad in loader:
            batch = names[position : position + len(labels) + len(bad)] if names is not None else None
            position += len(labels) + len(bad)
            skipped += bad
            if len(labels) == 0:
                continue
            predictions = model(images.to(device)).argmax(1).cpu()
            found = list(zip(labels.tolist(), predictions.tolist(), strict=True))
            pairs += found
            if batch is not None:
                dropped = {b["skipped"] for b in bad}
                kept = [name for name, raw in batch if raw not in dropped]
                answers += [[name, COUNTS[t], COUNTS[p]] for name, (t, p) in zip(kept, found, strict=True)]
    result = {**summarise(pairs), "skipped": skipped}
    if names is not None:
        result["answers"] = answers
    return result


def score_champion_on_test(config: JobConfig) -> dict:
    """The champion (the `champion` channel's model) on this job's test images, through the serving handlers
    of the code it was trained with (its archive's code/), in a process of its own."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="champion-") as work:
        return score_champion(
            Path(config.channels["champion"]), Path(config.channels["test"]), Path(work), summarise, own_code=CODE_DIR
        )


def training_set(spec, root) -> CountingImageFolder:
    """The train channel with the model's augmentations, decoded at the resolution they need."""
    transform = train_transform(spec.input_size, spec.normalization, spec.augmentation, spec.view)
    return CountingImageFolder("train", root, transform, decode_side=train_decode_side(spec.input_size, spec.view))


class NormalizingLoader:
    """A DataLoader whose uint8 batches (see data.split_transform) are normalised as they arrive."""

    def __init__(self, loader: DataLoader, normalize):
        self.loader, self.normalize = loader, normalize

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for images, labels, skipped in self.loader:
            yield (self.normalize(images) if self.normalize and len(labels) else images), labels, skipped


def _loader(dataset, batch_size, workers, shuffle, sampler=None, seed=0, pin_memory=False) -> NormalizingLoader:
    generator = torch.Generator()
    generator.manual_seed(seed)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_skipping,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        generator=generator,
        worker_init_fn=_lower_priority,
        pin_memory=pin_memory,
    )
    return NormalizingLoader(loader, getattr(dataset, "normalize", None))


def _lower_priority(_worker_id: int) -> None:
    """Loader workers yield the CPU to the training threads: on a machine whose cores all compute, a worker that
    preempts one of them stalls every thread of the operator at its next barrier. The prefetched batches (4 per
    worker) carry the workers through, so they decode in the gaps instead."""
    try:
        os.nice(10)
    except OSError:  # not permitted here: run at the normal priority
        pass


def loader_workers(config: JobConfig, device: torch.device) -> int:
    """DataLoader workers per loader. A linear head's passes (features, evaluation) on the CPU decode in the main
    process unless --num-workers says otherwise: there each photo costs ~2 ms to decode and resize against ~100 ms
    of CPU for the frozen forward at 416 px, and workers lost more than that to shipping their batches and taking
    cores from the compute threads (benchmarks/train_throughput.py, EfficientNet-Lite0 on 2 cores: input
    efficiency 0.947 without, 0.51 with 2 workers, which also fork from a heap grown to the step's peak). A training
    loop's augmentations, and any GPU, keep them."""
    if config.workers_given or device.type == "cuda" or config.spec.head not in FEATURE_HEADS:
        return config.num_workers
    return 0


def train(config: JobConfig) -> dict:
    stop = StopSignal().install()  # for the whole run: a SIGTERM during the test evaluation must not kill it
    try:
        return _train(config, stop)
    finally:
        stop.restore()


def _train(config: JobConfig, stop: StopSignal) -> dict:
    started = time.perf_counter()
    seed_everything(config.seed)
    distributed = config.world_size > 1
    device = torch.device("cuda" if torch.cuda.is_available() and config.num_gpus > 0 else "cpu")
    if distributed:
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(
            backend,
            init_method=f"tcp://{config.master_addr}:{config.master_port}",
            rank=config.rank,
            world_size=config.world_size,
        )
        log.info("distributed: rank %d of %d (%s)", config.rank, config.world_size, backend)
    if device.type == "cuda":
        torch.cuda.set_device(0)
    is_main = config.rank == 0

    spec = config.spec
    train_set = training_set(spec, config.channels["train"])
    eval_tf = eval_transform(spec.input_size, spec.resize, spec.normalization, spec.view)
    side = eval_decode_side(spec.input_size, spec.resize, spec.view)
    valid_set = CountingImageFolder(
        "valid", config.channels["valid"], eval_tf, require_all_classes=False, decode_side=side
    )
    test_set = CountingImageFolder(
        "test", config.channels["test"], eval_tf, require_all_classes=False, decode_side=side
    )
    for dataset in (valid_set, test_set):
        if dataset.missing:
            log.warning("channel %r has no image of count(s) %s", dataset.channel, dataset.missing)
    sizes = (len(train_set), train_set.class_counts(), len(valid_set), len(test_set))
    log.info("images: train %d %s, valid %d, test %d", *sizes)
    prior = job_prior(config, train_set.class_counts())
    log.info("inputs: %s view at %d px, lr schedule %s", spec.view, spec.input_size, spec.lr_schedule)

    pretrained_dir = Path(config.channels["pretrained"]) if config.channels["pretrained"] else None
    checkpoint = find_checkpoint(pretrained_dir, config.model)
    download = spec.pretrained_by_default and checkpoint is None and not config.offline
    warnings = random_backbone_warnings(config, checkpoint)
    model = build_model(config.model, checkpoint, download, config.freeze_backbone, spec.head, spec.tta).to(device)
    log.info(
        "model %s (checkpoint %s, trainable parameters %d)",
        config.model,
        checkpoint,
        sum(p.numel() for p in model.parameters() if p.requires_grad),
    )

    hook = debugger.create_hook()
    one_pass = spec.head in FEATURE_HEADS
    precision = choose_precision(config.amp, device, debugger_hook=hook is not None, one_pass=one_pass)
    if precision.warning:
        warnings.append(precision.warning)
    model = precision.prepare(model)
    criterion = nn.CrossEntropyLoss()
    if hook is not None:
        hook.register_module(model)
        hook.register_loss(criterion)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=config.lr)
    wrapped = nn.parallel.DistributedDataParallel(model) if distributed else model

    sampler = DistributedSampler(train_set, seed=config.seed) if distributed else None
    pin = device.type == "cuda"  # page-locked batches: the copy to the GPU overlaps the next step
    workers = loader_workers(config, device)
    train_loader = _loader(train_set, config.batch_size, workers, True, sampler, config.seed, pin)
    scheduler = None
    if spec.lr_schedule == "onecycle":  # planned over every epoch asked for; early stopping ends it sooner
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=config.lr, epochs=config.epochs, steps_per_epoch=len(train_loader)
        )
    valid_loader = _loader(valid_set, config.batch_size, workers, False, pin_memory=pin)

    history, skipped, best = [], [], {"loss": float("inf"), "state": None, "epoch": 0}
    train_images, train_seconds, stale, stopped = 0, 0.0, 0, False
    head_fit = None
    if spec.head in FEATURE_HEADS:  # fitted in closed form on frozen features: one pass, no epochs
        head_fit, row, fitted = fit_feature_head(model, train_set, valid_set, config, prior, device, precision)
        skipped += fitted.skipped
        train_images, train_seconds = fitted.images, fitted.seconds
        history.append(row)
        best["epoch"] = 1
        print(metric_line(**row), flush=True)
    resumed = load_training_state(config, model, optimizer, scheduler, train_loader)
    if resumed:
        history, best, stale = resumed["history"], resumed["best"], resumed["stale"]
        train_images, train_seconds = resumed["train_images"], resumed["train_seconds"]
    start_epoch = len(history) + 1
    try:
        for epoch in range(start_epoch, (0 if head_fit else config.epochs) + 1):
            if resumed and resumed.get("stopped_early"):
                break
            if sampler is not None:
                sampler.set_epoch(epoch)
            trained = run_epoch(wrapped, train_loader, criterion, device, optimizer, hook, scheduler, stop, precision)
            if trained.stopped:  # SIGTERM on any host: every rank leaves at this same step
                stopped = True
                break
            validated = run_epoch(model, valid_loader, criterion, device, None, hook, precision=precision)
            skipped += trained.skipped + validated.skipped
            train_images += trained.images
            train_seconds += trained.seconds
            row = {
                "epoch": epoch,
                "train_loss": trained.loss,
                "train_accuracy": trained.accuracy,
                "valid_loss": validated.loss,
                "valid_accuracy": validated.accuracy,
            }
            history.append(row)
            print(metric_line(**row), flush=True)
            if validated.loss < best["loss"]:
                best = {"loss": validated.loss, "state": copy.deepcopy(model.state_dict()), "epoch": epoch}
                stale = 0
            else:
                stale += 1
            stop_early = bool(config.early_stopping_patience and stale >= config.early_stopping_patience)
            if is_main:
                save_training_state(
                    config,
                    model,
                    optimizer,
                    scheduler,
                    train_loader,
                    {
                        "history": history,
                        "best": best,
                        "stale": stale,
                        "train_images": train_images,
                        "train_seconds": train_seconds,
                        "stopped_early": stop_early,
                    },
                )
            if stop_early:
                log.info("early stopping: valid loss has not improved for %d epochs", stale)
                break
    except Exception:
        if not stop.received:  # a DataLoader worker killed by the same SIGTERM raises its own error
            raise
        stopped = True
    if stopped:
        return save_on_stop(model, config, spec, best, history, is_main, (prior, train_set.class_counts()))

    if best["state"] is not None:
        model.load_state_dict(best["state"])
    if head_fit is None:  # an epoch-trained head learned the training mix: correct it (a feature head already is)
        adjust_to_prior(model, prior, train_set.class_counts())
    result = {}
    if is_main:
        # float32, as inference.py serves it (precision.py): the champion is scored the same way
        test = evaluate(
            model, _loader(test_set, config.batch_size, workers, False, pin_memory=pin), device, test_set.sample_names()
        )
        skipped += test.pop("skipped")
        unique_skips = sorted({s["skipped"]: s for s in skipped}.values(), key=lambda s: s["skipped"])
        for skip in unique_skips:
            log.warning("skipped undecodable image %s (%s)", skip["skipped"], skip["error"])
        print(metric_line(test_accuracy=test["accuracy"], test_rmse=test["rmse"]), flush=True)
        result = {
            **test,
            "model": config.model,
            "inputs": {
                "view": spec.view,
                "image_size": spec.input_size,
                "lr_schedule": spec.lr_schedule,
                "head": spec.head,
                "tta": spec.tta,
            },
            "head_fit": head_fit,
            "class_prior": {**prior.as_dict(), "argument": config.class_prior},
            "pretrained_checkpoint": checkpoint.name if checkpoint else None,
            "warnings": warnings,
            "class_counts": {
                "train": train_set.class_counts(),
                "valid": valid_set.class_counts(),
                "test": test_set.class_counts(),
            },
            "skipped_images": {"count": len(unique_skips), "images": unique_skips},
            "epochs_run": len(history),
            "resumed_after_epoch": start_epoch - 1,
            "best_epoch": best["epoch"],
            "history": history,
            "wall_time_s": round(time.perf_counter() - started, 2),
            "images_per_s": round(train_images / train_seconds, 2) if train_seconds else None,
            "hosts": config.world_size,
            "device": device.type,
            "precision": precision.name,
            "gpu_peak_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20) if device.type == "cuda" else None,
        }
        test_root = Path(config.channels["test"])
        result["test_images_digest"] = images_digest(test_images(test_root))
        if config.channels.get("champion"):
            result["champion"] = score_champion_on_test(config)
            if "accuracy" in result["champion"]:
                print(metric_line(champion_accuracy=result["champion"]["accuracy"]), flush=True)
        save(model, config, spec, result)
    if hook is not None:
        hook.close()
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    return result


CHECKPOINT_FILE = "training-state.pt"


def save_on_stop(
    model, config: JobConfig, spec, best: dict, history: list, is_main: bool, prior: tuple[Prior, dict[str, int]]
) -> dict:
    """The best model of the finished epochs (or the current weights before the first one), corrected to the
    prior (`prior`: it and the training counts), into the model dir. Only an epoch-trained head stops here."""
    log.warning(
        "SIGTERM: stopping after %d finished epoch(s); saving the model of epoch %d, skipping the test",
        len(history),
        best["epoch"],
    )
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    adjust_to_prior(model, *prior)
    result = {
        "stopped": True,
        "stopped_by": "SIGTERM",
        "model": config.model,
        "epochs_run": len(history),
        "best_epoch": best["epoch"],
        "history": history,
        "class_prior": prior[0].as_dict(),
    }
    if is_main:
        save(model, config, spec, result)
    return result


def save_training_state(config: JobConfig, model, optimizer, scheduler, loader, progress: dict) -> None:
    """Everything a restarted job needs to go on after the last finished epoch, written atomically (a `.tmp`
    file renamed: SageMaker may sync the directory to S3 at any moment, and a Spot restart restores it)."""
    if config.checkpoint_dir is None:
        return
    config.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    state = {
        "model_name": config.model,
        "epochs": config.epochs,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "sampler_generator": loader.loader.generator.get_state() if loader.loader.generator is not None else None,
        **progress,
    }
    target = config.checkpoint_dir / CHECKPOINT_FILE
    partial = target.with_name(target.name + ".tmp")
    torch.save(state, partial)
    os.replace(partial, target)
    log.info("checkpoint: epoch %d saved to %s", len(progress["history"]), target)


def load_training_state(config: JobConfig, model, optimizer, scheduler, loader) -> dict | None:
    """The state a previous run of this job saved (a Spot restart restores it), applied; None to start fresh."""
    if config.checkpoint_dir is None or not (config.checkpoint_dir / CHECKPOINT_FILE).is_file():
        return None
    path = config.checkpoint_dir / CHECKPOINT_FILE
    # Our own file, but it came back from S3: load tensors and plain data only, never pickled code.
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("model_name") != config.model or state.get("epochs") != config.epochs:
        raise RuntimeError(
            f"{path} was saved by another configuration (model {state.get('model_name')}, epochs "
            f"{state.get('epochs')}); this job trains {config.model} for {config.epochs} epochs"
        )
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    if state.get("sampler_generator") is not None and loader.loader.generator is not None:
        loader.loader.generator.set_state(state["sampler_generator"])  # the next epoch's order, as if never stopped
    log.info("resumed from checkpoint %s: %d of %d epochs already done", path, len(state["history"]), config.epochs)
    return state


def random_backbone_warnings(config: JobConfig, checkpoint: Path | None) -> list[str]:
    """A pretrained model that would start from random weights (offline, no checkpoint in the pretrained
    channel) is an error: its frozen backbone would compute noise and the head would learn nothing real. With
    --allow-random-backbone true it trains, and the warning goes to the log and to metrics.json."""
    if not config.spec.pretrained_by_default or checkpoint is not None:
        return []
    if not config.offline and config.model in DOWNLOADABLE:
        return []  # torchvision downloads them (SageMaker)
    why = "offline (INVENTORY_OFFLINE=1)" if config.model in DOWNLOADABLE else "no download source for it"
    message = (
        f"{config.model} has no pretrained weights: {why} and no checkpoint in the pretrained channel "
        f"({config.channels['pretrained'] or 'not given'}), so its backbone is random"
    )
    if not config.allow_random_backbone:
        raise RuntimeError(
            f"{message}. Give the pretrained channel a checkpoint (`make pretrained` for "
            "efficientnet_lite0), or pass --allow-random-backbone true to train on it anyway"
        )
    log.warning("%s: training anyway (--allow-random-backbone true); the model will not generalise", message)
    return [f"{message} (--allow-random-backbone true)"]


@dataclass
class FeaturePass:
    images: int
    seconds: float
    skipped: list[dict]


def fit_feature_head(
    model, train_set, valid_set, config: JobConfig, prior: Prior, device, precision: Precision = FP32
) -> tuple[dict, dict, FeaturePass]:
    """A feature head's recipe (linear_head.py's classifier or ordinal_head.py's regression): features of the
    train channel (no augmentation: the photos as evaluation sees them), L2 strength by CV on those at the
    prior's mix, output corrected to the prior, weights installed into the model.
    Returns (what was chosen, the epoch-like metric row, the feature pass's cost)."""
    import linear_head
    import ordinal_head
    from scoring import log_loss

    spec = config.spec
    plain = eval_transform(spec.input_size, spec.resize, spec.normalization, spec.view)
    side = eval_decode_side(spec.input_size, spec.resize, spec.view)
    train_plain = CountingImageFolder("train", train_set.root, plain, decode_side=side)
    started = time.perf_counter()
    pin, workers = device.type == "cuda", loader_workers(config, device)
    x, y, skipped = linear_head.extract(
        model, _loader(train_plain, config.batch_size, workers, False, pin_memory=pin), device, precision
    )
    seconds = time.perf_counter() - started
    if spec.head == "ordinal":  # a fixed strength still needs CV for the count's spread around the score
        fixed = (
            ordinal_head.select_penalty(x, y, prior.weights, config.seed, (config.head_penalty,))
            if config.head_penalty
            else None
        )
        fit, selection, _ = ordinal_head.fit_head(x, y, prior, config.seed, fixed)
        cv = f"held-out squared error {selection.cv_mse.get(f'{selection.penalty:g}', math.nan):.4f}"
    else:
        fixed = linear_head.HeadSelection(config.head_penalty, 0) if config.head_penalty else None
        fit, selection, _ = linear_head.fit_head(x, y, prior, config.seed, fixed)
        cv = f"held-out log loss {selection.best_log_loss:.4f}"
    linear_head.install(model, fit)
    vx, vy, valid_skipped = linear_head.extract(
        model, _loader(valid_set, config.batch_size, workers, False, pin_memory=pin), device, precision
    )
    train_logits, valid_logits = fit.logits(x), fit.logits(vx)
    row = {
        "epoch": 1,
        "train_loss": log_loss(train_logits, y),
        "train_accuracy": float((train_logits.argmax(1) == y).mean()),
        "valid_loss": log_loss(valid_logits, vy),
        "valid_accuracy": float((valid_logits.argmax(1) == vy).mean()),
    }
    log.info(
        "%s head: L2 penalty %g by %d-fold CV on %d train photos at the %s prior (%s)",
        spec.head,
        selection.penalty,
        selection.folds,
        len(y),
        prior.source,
        cv,
    )
    chosen = {
        "head": spec.head,
        **selection.as_dict(),
        "class_prior": prior.source,
        "target_prior": prior.as_dict()["weights"],
        "feature_dim": int(x.shape[1]),
    }
    return chosen, row, FeaturePass(len(y), seconds, skipped + valid_skipped)


def job_prior(config: JobConfig, train_counts: dict[str, int]) -> Prior:
    """The class mix this job's answers are corrected to (class_prior.py), logged with where it came from."""
    counts = np.array([train_counts[str(c)] for c in COUNTS], dtype=float)
    prior = resolve_prior(config.class_prior, counts, parse_counts(config.population_counts))
    log.info(
        "class prior %s (--class-prior %s): answers corrected from the training mix %s",
        prior.as_dict(),
        config.class_prior,
        np.round(counts / counts.sum(), 4).tolist(),
    )
    return prior


def adjust_to_prior(model: nn.Module, prior: Prior, train_counts: dict[str, int]) -> None:
    """Logit adjustment of an epoch-trained head, which learned its training photos' mix: add log target -
    log training mix to the output layer's bias (the saved model answers for the target mix)."""
    counts = np.array([train_counts[str(c)] for c in COUNTS], dtype=float)
    shift = np.log(prior.weights) - np.log(counts / counts.sum())
    bias = output_layer(model).bias
    with torch.no_grad():
        bias += torch.as_tensor(shift, dtype=bias.dtype, device=bias.device)


def save(model: nn.Module, config: JobConfig, spec, metrics: dict) -> None:
    config.model_dir.mkdir(parents=True, exist_ok=True)
    config.output_data_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), config.model_dir / "model.pth")
    info = {
        "architecture": config.model,
        "class_to_count": {str(i): c for i, c in enumerate(COUNTS)},
        "input_size": spec.input_size,
        "resize": spec.resize,
        "view": spec.view,
        "normalization": spec.normalization,
        "freeze_backbone": config.freeze_backbone,
        "head": spec.head,
        "tta": spec.tta,
    }
    (config.model_dir / "model_info.json").write_text(json.dumps(info, indent=2))
    copy_code(config.model_dir / "code")
    (config.output_data_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    log.info("saved model to %s and metrics to %s", config.model_dir, config.output_data_dir / "metrics.json")


def copy_code(target: Path) -> None:
    """This job's code into the model archive's code/ (inference.py and the modules it imports)."""
    import shutil

    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(CODE_DIR.iterdir()):
        if path.is_file() and path.suffix in CODE_SUFFIXES:
            shutil.copyfile(path, target / path.name)


def write_failure(message: str) -> None:
    """SageMaker reports the `failure` file's content as the job's FailureReason."""
    path = Path(os.environ.get("SM_OUTPUT_FAILURE", "/opt/ml/output/failure"))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(message[:1000])
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stdout)
    try:
        config = parse_config(argv)
        keep_freed_memory()
        if config.ignored_args:
            log.info("ignoring arguments this script does not use: %s", config.ignored_args)
        log.info("config: %s", {k: v for k, v in asdict(config).items() if k != "ignored_args"})
        with SelfHostedProfiler(config.current_host):
            metrics = train(config)
        if metrics.get("accuracy") is not None:
            log.info("test accuracy %.4f, rmse %.4f", metrics["accuracy"], metrics["rmse"])
        return 0
    except Exception as exc:
        traceback.print_exc()
        message = f"{type(exc).__name__}: {exc}"
        write_failure(message)
        print(message, file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
