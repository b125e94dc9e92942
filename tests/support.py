"""Helpers the test modules and the fault scenarios share (tests/ is on sys.path: pytest puts the root conftest's
folder there; benchmarks/faults.py adds it)."""

from __future__ import annotations

import io
import socket
import subprocess
import tarfile
import time
from collections.abc import Callable, Sequence
from typing import Any


def tar_archive(
    files: dict[str, bytes | str],
    symlinks: dict[str, str] | None = None,
    hardlinks: dict[str, str] | None = None,
) -> bytes:
    """A gzipped tar in memory, as a sourcedir.tar.gz or model.tar.gz; links let tests build hostile archives."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            payload = data.encode() if isinstance(data, str) else data
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        for kind, links in ((tarfile.SYMTYPE, symlinks or {}), (tarfile.LNKTYPE, hardlinks or {})):
            for name, target in links.items():
                info = tarfile.TarInfo(name)
                info.type, info.linkname = kind, target
                tar.addfile(info)
    return buffer.getvalue()


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.2, what: str = "") -> Any:
    """The predicate's first truthy value; TimeoutError naming `what` when none came in `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what or 'condition'} not reached within {timeout:.0f} s")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_hosts(cmd: Sequence[str], env_for_host: Callable[[str], dict[str, str]], hosts: Sequence[str]) -> list:
    """One process per host of a multi-host job, output merged into stdout as SageMaker's log stream has it."""
    return [
        subprocess.Popen(list(cmd), env=env_for_host(host), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for host in hosts
    ]


def scored_metrics(
    truths: Sequence[int], right: Sequence[bool], wrong_answer: Callable[[int], int] | None = None, **extra: Any
) -> dict[str, Any]:
    """A job's metrics.json for answers on images `img-0..` with these true counts, right where `right` says
    (a wrong answer is `wrong_answer(truth)`, by default one count off), as train.py records them."""
    miss = wrong_answer or (lambda truth: truth + 1 if truth < 5 else 4)
    answers = [[f"img-{i}", t, t if ok else miss(t)] for i, (t, ok) in enumerate(zip(truths, right, strict=True))]
    correct = sum(right)
    train = {str(c): 10 for c in range(1, 6)}
    train["3"] = 12  # the train split's most common count: the trivial answer is 3
    return {
        "accuracy": correct / len(truths),
        "rmse": sum((t - p) ** 2 for _, t, p in answers) ** 0.5 / len(truths) ** 0.5,
        "test_images": len(truths),
        "test_images_digest": "d",
        "answers": answers,
        "class_counts": {"train": train},
        **extra,
    }


def balanced_truths(per_class: int) -> list[int]:
    """True counts 1..5, `per_class` of each, interleaved."""
    return [c for _ in range(per_class) for c in range(1, 6)]


def accuracy_metrics(
    accuracy: float, champion_accuracy: float | None = None, images: int = 100, **extra: Any
) -> dict[str, Any]:
    """metrics.json of a job right on the first round(accuracy * images) of `images` balanced test images, with
    the champion it scored right on its first round(champion_accuracy * images) (the same images, as a job
    scores both): a 0.8 vs 0.6 on 100 images is 20 images only the candidate got right, none only the champion."""
    truths = balanced_truths(images // 5)
    metrics = scored_metrics(truths, [i < round(accuracy * images) for i in range(images)], **extra)
    if champion_accuracy is not None:
        champion = scored_metrics(truths, [i < round(champion_accuracy * images) for i in range(images)])
        metrics["champion"] = {
            **{k: champion[k] for k in ("accuracy", "rmse", "test_images", "answers")},
            "images_digest": "d",
        }
    return metrics


def collect(sent: list[dict[str, Any]]) -> Callable[[str, dict[str, Any]], None]:
    """A gate notifier that keeps each announced decision record (the outbox's send(message_id, record))."""
    return lambda message_id, record: sent.append(record)


# A run every task of which succeeded up to the report, whose rules blocked nothing: what the gate's tests decide on.
DONE = dict.fromkeys(
    [
        "select_source",
        "copy_images",
        "split_dataset",
        "package_code",
        "check_lineage",
        "train",
        "wait_for_training",
        "wait_for_rules",
        "parse_rule_reports",
    ],
    "success",
)
PASSED = {"decision": {"failed": False, "message": "no blocking rule fired"}, "rules": []}
