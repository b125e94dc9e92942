"""training_code/train.py run as SageMaker runs it: a subprocess with SM_* variables and hyperparameters."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import free_port, start_hosts

from inventory_pipeline.dataset.split import assign_split
from inventory_pipeline.dataset.synthetic import generate

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TRAIN = ROOT / "training_code" / "train.py"


def make_channels(root: Path, images: list[tuple[str, int, bytes]]) -> dict[str, Path]:
    for image_id, label, data in images:
        folder = root / assign_split(image_id) / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{image_id}.jpg").write_bytes(data)
    for split in ("train", "valid", "test"):  # tiny sets may miss a class in a split: keep every folder
        for label in range(1, 6):
            (root / split / str(label)).mkdir(parents=True, exist_ok=True)
    return {split: root / split for split in ("train", "valid", "test")}


@pytest.fixture(scope="module")
def synthetic_channels(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("synthetic-channels")
    return make_channels(root, [(i.image_id, i.label, i.jpeg) for i in generate(120, seed=4)])


@pytest.fixture(scope="module")
def real_channels(tmp_path_factory, abid_sample) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("abid-channels")
    images = []
    for meta in sorted((abid_sample / "metadata").glob("*.json")):
        label = json.loads(meta.read_text())["EXPECTED_QUANTITY"]
        images.append((meta.stem, label, (abid_sample / "bin-images" / f"{meta.stem}.jpg").read_bytes()))
    return make_channels(root, images)


def sm_env(job: Path, channels: dict[str, Path], host: str = "algo-1", hosts=("algo-1",), **extra) -> dict:
    host_dir = job / host
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("SM_")},
        "SM_CHANNEL_TRAIN": str(channels["train"]),
        "SM_CHANNEL_VALID": str(channels["valid"]),
        "SM_CHANNEL_TEST": str(channels["test"]),
        "SM_MODEL_DIR": str(host_dir / "model"),
        "SM_OUTPUT_DATA_DIR": str(host_dir / "output" / "data"),
        "SM_OUTPUT_FAILURE": str(host_dir / "output" / "failure"),
        "SM_HOSTS": json.dumps(list(hosts)),
        "SM_CURRENT_HOST": host,
        "SM_NUM_CPUS": "1",
        "SM_NUM_GPUS": "0",
        "INVENTORY_OFFLINE": "1",
        "SMDEBUG_CONFIG_FILE_PATH": str(job / "no-hook-config.json"),
        "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python",
        **extra,
    }


def run_train(env: dict, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        str(TRAIN),
        "--model",
        "small_cnn",
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--num-workers",
        "0",
        *args,
    ]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def test_single_host_writes_metrics_model_and_parseable_metric_lines(synthetic_channels, tmp_path):
    proc = run_train(sm_env(tmp_path, synthetic_channels), "--sagemaker_unused", "x")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "algo-1/output/data/metrics.json").read_text())
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["rmse"] >= 0
    assert (
        len(metrics["confusion_matrix"]) == 5 and sum(map(sum, metrics["confusion_matrix"])) == metrics["test_images"]
    )
    assert metrics["epochs_run"] == 2 and [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert set(metrics["per_class_accuracy"]) == {"1", "2", "3", "4", "5"}
    assert metrics["skipped_images"]["count"] == 0 and metrics["images_per_s"] > 0
    assert metrics["precision"] == "fp32"  # --amp auto: float32 on the CPU
    info = json.loads((tmp_path / "algo-1/model/model_info.json").read_text())
    assert info["architecture"] == "small_cnn" and info["class_to_count"]["0"] == 1
    assert (info["view"], info["input_size"]) == ("full", 96)  # inference.py rebuilds the same view
    assert (tmp_path / "algo-1/model/model.pth").stat().st_size > 0
    # Every MetricDefinition of the request matches a line the script really printed (the champion's only
    # prints when there is a champion channel: see the test below).
    definitions = json.loads((ROOT / "training_code/metric_definitions.json").read_text())
    assert not re.findall(r"champion_accuracy=", proc.stdout)
    for definition in (d for d in definitions if d["Name"] != "champion:accuracy"):
        values = re.findall(definition["Regex"], proc.stdout)
        assert values, f"{definition['Name']} never printed"
        float(values[-1])
    assert "ignoring arguments" in proc.stdout


def _archive(model_dir: Path, channel: Path) -> Path:
    import tarfile

    channel.mkdir()
    with tarfile.open(channel / "model.tar.gz", "w:gz") as tar:
        for path in model_dir.iterdir():
            tar.add(path, arcname=path.name)
    return channel


def test_a_champion_is_scored_with_its_own_code_after_the_architecture_changed(synthetic_channels, tmp_path):
    """Issue 22 (3): small_cnn's architecture changes between two runs. The champion's archive carries its code/
    and is scored with it, in its own process: it answers exactly as its own job measured, and the candidate
    (the new architecture) is compared with it image by image. Before, the new model.py could not load it."""
    first = tmp_path / "first"
    proc = run_train(sm_env(first, synthetic_channels), "--epochs", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    own = json.loads((first / "algo-1/output/data/metrics.json").read_text())
    assert (first / "algo-1/model/code/inference.py").is_file() and (first / "algo-1/model/code/model.py").is_file()
    new_code = tmp_path / "new_code"
    shutil.copytree(TRAIN.parent, new_code, ignore=shutil.ignore_patterns("__pycache__"))
    model_py = new_code / "model.py"
    widened = model_py.read_text().replace("channels = [3, 24, 48, 96, 160]", "channels = [3, 16, 32, 64, 128]")
    assert widened != model_py.read_text()
    model_py.write_text(widened)
    channel = _archive(first / "algo-1/model", tmp_path / "champion")
    second = tmp_path / "second"
    env = sm_env(second, synthetic_channels, SM_CHANNEL_CHAMPION=str(channel))
    cmd = [
        sys.executable,
        str(new_code / "train.py"),
        "--model",
        "small_cnn",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--num-workers",
        "0",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((second / "algo-1/output/data/metrics.json").read_text())
    champion = metrics["champion"]
    assert "error" not in champion, champion.get("error")
    assert champion["accuracy"] == own["accuracy"] and sorted(champion["answers"]) == sorted(own["answers"])
    assert champion["scored_with"].startswith("its own code")
    # the candidate's own archive carries the new architecture's code
    assert "[3, 16, 32, 64, 128]" in (second / "algo-1/model/code/model.py").read_text()

    from inventory_pipeline.decision.comparison import read_answers
    from inventory_pipeline.decision.decide import GatePolicy, compare_with_champion

    _, reason, numbers = compare_with_champion(
        read_answers(metrics["answers"], "candidate"), read_answers(champion["answers"], "champion"), GatePolicy()
    )
    assert numbers["images"] == metrics["test_images"] and "on the same" in reason
    assert numbers["second_correct"] == round(own["accuracy"] * own["test_images"])


def test_the_champion_is_scored_on_the_same_test_images_through_the_serving_code(synthetic_channels, tmp_path):
    """A model scored as the champion (its model.tar.gz in the `champion` channel, through inference.py) gets
    exactly the accuracy its own job measured on the same test channel; a broken champion is an error in
    metrics.json, never a score, and never fails the candidate's job."""
    import tarfile

    first = tmp_path / "first"
    proc = run_train(sm_env(first, synthetic_channels))
    assert proc.returncode == 0, proc.stderr[-3000:]
    own = json.loads((first / "algo-1/output/data/metrics.json").read_text())
    champion_channel = tmp_path / "champion"
    champion_channel.mkdir()
    with tarfile.open(champion_channel / "model.tar.gz", "w:gz") as tar:
        for path in (first / "algo-1/model").iterdir():
            tar.add(path, arcname=path.name)
    second = tmp_path / "second"
    proc = run_train(sm_env(second, synthetic_channels, SM_CHANNEL_CHAMPION=str(champion_channel)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((second / "algo-1/output/data/metrics.json").read_text())
    champion = metrics["champion"]
    assert champion["accuracy"] == own["accuracy"] and champion["confusion_matrix"] == own["confusion_matrix"]
    assert champion["test_images"] == metrics["test_images"] == own["test_images"]
    assert champion["images_digest"] == metrics["test_images_digest"]
    # image by image, the champion answers as its own job did (the gate's paired test joins these by name)
    assert sorted(champion["answers"]) == sorted(own["answers"]) and len(own["answers"]) == own["test_images"]
    assert champion["scored_with"].startswith("its own code")
    assert re.findall(r"champion_accuracy=([0-9.eE+-]+);", proc.stdout)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.tar.gz").write_bytes(b"not a tar archive")
    third = tmp_path / "third"
    proc = run_train(sm_env(third, synthetic_channels, SM_CHANNEL_CHAMPION=str(broken)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((third / "algo-1/output/data/metrics.json").read_text())
    assert "accuracy" not in metrics["champion"] and "ReadError" in metrics["champion"]["error"]


def test_two_hosts_train_together_and_only_rank_0_writes(synthetic_channels, tmp_path):
    hosts = ("algo-1", "algo-2")
    extra = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    cmd = [
        sys.executable,
        str(TRAIN),
        "--model",
        "small_cnn",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--num-workers",
        "0",
    ]
    procs = start_hosts(cmd, lambda h: sm_env(tmp_path, synthetic_channels, h, hosts, **extra), hosts)
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    assert "rank 0 of 2 (gloo)" in outputs[0] and "rank 1 of 2 (gloo)" in outputs[1]
    assert (tmp_path / "algo-1/output/data/metrics.json").exists()
    assert not (tmp_path / "algo-2/output/data/metrics.json").exists()
    assert not (tmp_path / "algo-2/model/model.pth").exists()


def test_corrupt_and_truncated_images_are_skipped_and_reported(synthetic_channels, tmp_path):
    channels = {k: tmp_path / "ch" / k for k in synthetic_channels}
    for split, path in synthetic_channels.items():
        shutil.copytree(path, channels[split])
    victim = next((channels["train"] / "3").glob("*.jpg"))
    victim.write_bytes(victim.read_bytes()[:300])  # truncated
    (channels["test"] / "2" / "garbage.jpg").write_bytes(b"not an image at all")
    proc = run_train(sm_env(tmp_path, channels))
    assert proc.returncode == 0, proc.stderr[-3000:]
    skipped = json.loads((tmp_path / "algo-1/output/data/metrics.json").read_text())["skipped_images"]
    names = sorted(Path(s["skipped"]).name for s in skipped["images"])
    assert skipped["count"] == 2 and names == sorted([victim.name, "garbage.jpg"])
    assert "skipped undecodable image" in proc.stdout


def test_missing_class_folder_fails_clearly_with_a_failure_file(synthetic_channels, tmp_path):
    channels = dict(synthetic_channels)
    broken = tmp_path / "train"
    shutil.copytree(synthetic_channels["train"], broken)
    shutil.rmtree(broken / "4")
    channels["train"] = broken
    proc = run_train(sm_env(tmp_path, channels))
    assert proc.returncode == 1
    failure = (tmp_path / "algo-1/output/failure").read_text()
    assert "channel 'train'" in failure and "'4'" in failure
    assert "channel 'train'" in proc.stderr.strip().splitlines()[-1]


def test_empty_channel_fails_clearly(synthetic_channels, tmp_path):
    empty = tmp_path / "empty-test"
    for label in range(1, 6):
        (empty / str(label)).mkdir(parents=True)
    proc = run_train(sm_env(tmp_path, {**synthetic_channels, "test": empty}))
    assert proc.returncode == 1
    assert "channel 'test' holds no images" in (tmp_path / "algo-1/output/failure").read_text()


def test_debugger_hook_saves_tensors_the_rules_read(synthetic_channels, tmp_path):
    pytest.importorskip("smdebug")
    tensors = tmp_path / "tensors"
    config = {
        "LocalPath": str(tensors),
        "HookParameters": {"train.save_interval": "1", "eval.save_interval": "1"},
        "CollectionConfigurations": [
            {"CollectionName": "gradients"},
            {"CollectionName": "weights"},
            {"CollectionName": "losses"},
            {"CollectionName": "relu_input", "CollectionParameters": {"include_regex": ".*relu_input"}},
        ],
    }
    (tmp_path / "hook.json").write_text(json.dumps(config))
    proc = run_train(
        sm_env(tmp_path, synthetic_channels, SMDEBUG_CONFIG_FILE_PATH=str(tmp_path / "hook.json")), "--amp", "bf16"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the rules read true float32 tensors: mixed precision asked for under the hook is refused, and said so
    metrics = json.loads((tmp_path / "algo-1/output/data/metrics.json").read_text())
    assert metrics["precision"] == "fp32"
    assert any("--amp bf16 ignored" in w and "debugger hook" in w for w in metrics["warnings"])
    from smdebug.trials import create_trial

    trial = create_trial(str(tensors))
    names = trial.tensor_names()
    assert any(n.startswith("gradient/") for n in names)
    assert any("relu_input" in n for n in names)
    assert trial.tensor_names(collection="losses")
    assert len(trial.steps()) > 4  # every step saved (save_interval 1)


def test_bf16_autocast_trains_and_the_saved_model_is_float32(synthetic_channels, tmp_path):
    """--amp bf16 (what `auto` picks on a GPU) through the same loop on the CPU: the forward passes run in
    bfloat16, the weights, the saved model and the test evaluation stay float32."""
    proc = run_train(sm_env(tmp_path, synthetic_channels), "--amp", "bf16")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "precision bf16 autocast on cpu" in proc.stdout
    metrics = json.loads((tmp_path / "algo-1/output/data/metrics.json").read_text())
    assert metrics["precision"] == "bf16" and metrics["epochs_run"] == 2
    assert all(math.isfinite(row["train_loss"]) for row in metrics["history"])
    import torch

    state = torch.load(tmp_path / "algo-1/model/model.pth", weights_only=True)
    assert {t.dtype for t in state.values() if t.is_floating_point()} == {torch.float32}


def test_inference_handlers_on_real_photos(real_channels, abid_sample, tmp_path):
    proc = run_train(sm_env(tmp_path, real_channels), "--epochs", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    sys.path.insert(0, str(ROOT / "training_code"))
    try:
        import inference
    finally:
        sys.path.remove(str(ROOT / "training_code"))
    model = inference.model_fn(str(tmp_path / "algo-1/model"))
    for photo in sorted((abid_sample / "bin-images").glob("*.jpg"))[:5]:
        body = inference.output_fn(
            inference.predict_fn(inference.input_fn(photo.read_bytes(), "image/jpeg"), model),
            "application/json",
        )
        answer = json.loads(body)
        assert answer["count"] in (1, 2, 3, 4, 5)
        assert len(answer["probabilities"]) == 5 and abs(sum(answer["probabilities"]) - 1) < 1e-4
    with pytest.raises(inference.UnsupportedContentType):
        inference.input_fn(b"{}", "application/json")
    with pytest.raises(ValueError, match="not a decodable image"):
        inference.input_fn(b"\xff\xd8\xff garbage", "image/jpeg")
    with pytest.raises(inference.UnsupportedContentType):
        inference.output_fn({"count": 1, "probabilities": [1, 0, 0, 0, 0]}, "text/csv")


def test_sigterm_saves_the_model_and_a_restart_resumes_from_the_epoch_checkpoint(synthetic_channels, tmp_path):
    """Managed Spot as train.py sees it: SIGTERM mid-run (the model so far is saved, exit 0), then the same job
    started again with the checkpoint directory restored resumes after the last finished epoch."""
    import signal
    import time

    checkpoints = tmp_path / "checkpoints"
    env = sm_env(tmp_path, synthetic_channels, INVENTORY_CHECKPOINT_DIR=str(checkpoints))
    cmd = [
        sys.executable,
        str(TRAIN),
        "--model",
        "small_cnn",
        "--epochs",
        "4",
        "--batch-size",
        "16",
        "--num-workers",
        "0",
    ]
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    while not (checkpoints / "training-state.pt").exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    first.send_signal(signal.SIGTERM)
    out = first.communicate(timeout=60)[0]
    assert first.returncode == 0, out[-3000:]
    stopped = json.loads((tmp_path / "algo-1/output/data/metrics.json").read_text())
    assert stopped["stopped_by"] == "SIGTERM" and 1 <= stopped["epochs_run"] < 4, out[-2000:]
    assert (tmp_path / "algo-1/model/model.pth").stat().st_size > 0

    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout[-3000:]
    metrics = json.loads((tmp_path / "algo-1/output/data/metrics.json").read_text())
    assert [row["epoch"] for row in metrics["history"]] == [1, 2, 3, 4]
    assert metrics["resumed_after_epoch"] == stopped["epochs_run"]
    assert "resumed from checkpoint" in second.stdout

    # A checkpoint of another configuration is refused by name, never silently mixed in.
    other = subprocess.run(
        [*cmd[:-4], "--epochs", "9", "--num-workers", "0"], env=env, capture_output=True, text=True, timeout=300
    )
    assert other.returncode == 1 and "saved by another configuration" in other.stdout + other.stderr


def load_inference():
    sys.path.insert(0, str(ROOT / "training_code"))
    try:
        import inference
    finally:
        sys.path.remove(str(ROOT / "training_code"))
    return inference


@pytest.mark.slow
def test_efficientnet_lite0_default_recipe_is_served_exactly_as_it_was_evaluated(real_channels, tmp_path):
    """efficientnet_lite0's default recipe (the ordinal head fitted on frozen features) trained by train.py
    on the real photos: inference.py's handlers give the test channel the very predictions train.py's evaluation
    counted. With `make pretrained`'s checkpoint in build/pretrained the backbone is ImageNet's and the answers must
    vary; in a clean clone it is random (the flag allows it; its features are nearly constant, so agreement is all
    this proves there). Images smaller than the default keep the test cheap: agreement does not depend on size."""
    checkpoints = sorted((ROOT / "build" / "pretrained").glob("efficientnet-lite0*.pth"))
    extra = {"SM_CHANNEL_PRETRAINED": str(checkpoints[0].parent)} if checkpoints else {}
    weights = [] if checkpoints else ["--allow-random-backbone", "true"]
    proc = run_train(
        sm_env(tmp_path, real_channels, **extra),
        "--model",
        "efficientnet_lite0",
        "--image-size",
        "128",
        "--num-workers",
        "1",
        *weights,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "algo-1/output/data/metrics.json").read_text())
    assert metrics["inputs"]["head"] == "ordinal" and metrics["inputs"]["view"] == "full"
    assert metrics["class_prior"]["source"] == "abid"  # no population given: ABID's mix, not the balanced split's
    assert metrics["head_fit"]["folds"] >= 2 and metrics["head_fit"]["penalty"] > 0
    assert bool(metrics["warnings"]) != bool(checkpoints)  # a random backbone is reported as such
    inference = load_inference()
    model = inference.model_fn(str(tmp_path / "algo-1/model"))
    served, probabilities = [[0] * 5 for _ in range(5)], set()
    for folder in sorted(real_channels["test"].iterdir()):
        for photo in sorted(folder.glob("*.jpg")):
            answer = json.loads(
                inference.output_fn(
                    inference.predict_fn(inference.input_fn(photo.read_bytes(), "image/jpeg"), model),
                    "application/json",
                )
            )
            served[int(folder.name) - 1][answer["count"] - 1] += 1
            probabilities.add(tuple(round(p, 4) for p in answer["probabilities"]))
    assert served == metrics["confusion_matrix"]
    if checkpoints:  # the head sees varying features (a well-regularised head may still answer 3 to all of them)
        assert len(probabilities) > 1


def test_a_pretrained_model_without_weights_fails_loudly_unless_allowed(synthetic_channels, tmp_path):
    proc = run_train(sm_env(tmp_path / "refused", synthetic_channels), "--model", "resnet18", "--epochs", "1")
    assert proc.returncode == 1
    failure = (tmp_path / "refused/algo-1/output/failure").read_text()
    assert "resnet18 has no pretrained weights" in failure and "--allow-random-backbone true" in failure
    proc = run_train(
        sm_env(tmp_path / "allowed", synthetic_channels),
        "--model",
        "resnet18",
        "--epochs",
        "1",
        "--image-size",
        "64",
        "--allow-random-backbone",
        "true",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "WARNING" in proc.stdout and "backbone is random" in proc.stdout
    metrics = json.loads((tmp_path / "allowed/algo-1/output/data/metrics.json").read_text())
    assert metrics["pretrained_checkpoint"] is None and "backbone is random" in metrics["warnings"][0]


def test_a_model_with_no_real_signal_is_never_promoted_even_as_the_first_model(tmp_path):
    """Issue 22: photos whose labels were shuffled carry no signal the model could learn. Trained by train.py as
    the DAG trains it, the candidate must end below the trivial answer (or not better), never promoted."""
    import random

    from inventory_pipeline.decision.decide import RunFacts, decide

    rng = random.Random(3)
    images = [(i.image_id, rng.randint(1, 5), i.jpeg) for i in generate(200, seed=9)]
    channels = make_channels(tmp_path / "shuffled", images)
    proc = run_train(sm_env(tmp_path / "job", channels), "--epochs", "4", "--lr", "0.004")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "job/algo-1/output/data/metrics.json").read_text())
    facts = RunFacts(
        job="no-signal",
        task_states={"train": "success"},
        report={"decision": {"failed": False}},
        lineage={"lineage": {"dataset_version": "d"}, "champion": None},
        metrics=metrics,
    )
    decision = decide(facts)
    assert decision["status"] in ("below_baseline", "not_better"), decision
    assert decision["baseline"]["majority"]["correct"] >= 0 and not decision["baseline"]["passed"]
