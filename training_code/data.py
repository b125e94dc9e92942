"""The channels as datasets: ImageFolder-style `<channel>/<count>/<id>.jpg`, counts 1-5 mapped explicitly, or a
dataset version's channel: packs of photos plus one `labels.json` (see labelled_samples).

A photo that cannot be decoded is skipped, counted and reported (never a crash): the loader yields None for it
and the collate function drops it and passes its path on, so the training loop can count skips even when
the decoding happens in DataLoader worker processes.

JPEGs are decoded no larger than the transforms need (`decode_side`): the decoder scales by 1/2, 1/4 or 1/8
while decoding (PIL's draft mode), keeping the shorter side at least `decode_side`. For the small CNN's 96 px
input that cuts the decode, the input pipeline's largest cost on CPU, several times; the ImageNet models'
224 px crops from ABID's ~500x300 photos keep the full resolution.

Decoded images, after the transform's leading deterministic steps (the full view's resize to the network's
input, an evaluation's resize + centre crop), are kept in memory, per process (each DataLoader worker of each
channel has its own), up to `cache_mb` (INVENTORY_DECODE_CACHE_MB, default 256; 0 turns it off): from the second
epoch on, a cached image costs its random augmentations only. The default keeps 3 channels x 4 workers under
3 GiB on the study's 8 GiB ml.c5.xlarge; what does not fit streams from disk, decoded every epoch as before.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset
from torch.utils.data.dataloader import default_collate
from torchvision import transforms as T

# Folder name -> class index. Explicit, so "10" could never sort between "1" and "2".
CLASS_FOLDERS = {"1": 0, "2": 1, "3": 2, "4": 3, "5": 4}
COUNTS = [1, 2, 3, 4, 5]  # class index -> object count
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
DEFAULT_CACHE_MB = int(os.environ.get("INVENTORY_DECODE_CACHE_MB", "256"))


class ChannelError(ValueError):
    """A channel is missing, empty or lacks a class folder; the message names the channel.

    The training channel must hold every count. Valid/test may lack one on a small dataset (the project's
    split is a stable hash, not stratified): the gap is logged and the class is evaluated as absent.
    """


VIEWS = ("crop", "full")


def _check_view(view: str) -> None:
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; choose one of {', '.join(VIEWS)}")


def train_transform(size: int, norm: dict, augmentation: str = "study", view: str = "crop") -> T.Compose:
    """The study's augmentations, or a light set for small networks trained from scratch.

    view "crop" (the study's): RandomResizedCrop keeping at least 80% of the bin; the study's default (down to
    8%) often crops counted items out of the picture, which turns the label into noise for a counting task.
    view "full": the whole photo scaled to size x size, nothing cropped, so every counted item stays in it.
    """
    _check_view(view)
    normalize = [T.ToTensor(), T.Normalize(norm["mean"], norm["std"])]
    if view == "full":
        geometry = [T.Resize((size, size)), T.RandomHorizontalFlip()]
        if augmentation == "light":  # a count does not change upside down either
            return T.Compose([*geometry, T.RandomVerticalFlip(), *normalize])
        return T.Compose([*geometry, T.ColorJitter(0.4, 0.4, 0.4, 0.1), *normalize])
    crop = T.RandomResizedCrop(size, scale=(0.8, 1.0))
    if augmentation == "light":
        return T.Compose([crop, T.RandomHorizontalFlip(), *normalize])
    return T.Compose(
        [crop, T.RandomHorizontalFlip(), T.RandomRotation(10), T.ColorJitter(0.4, 0.4, 0.4, 0.1), *normalize]
    )


def train_decode_side(size: int, view: str = "crop") -> int:
    """The shorter side a training image needs. "crop": RandomResizedCrop keeps >= 80% of the area, so a crop's
    side can be ~0.9 of the image's before it is scaled to `size`; a margin keeps the crop from being upscaled.
    "full": the whole image is scaled to `size`."""
    return size if view == "full" else int(size * 1.25 + 0.5)


def eval_transform(size: int, resize: int, norm: dict, view: str = "crop") -> T.Compose:
    """View "crop": the study's resize + centre crop (which cuts the sides of a wide bin photo); "full": the
    whole photo scaled to size x size, as in training."""
    _check_view(view)
    normalize = [T.ToTensor(), T.Normalize(norm["mean"], norm["std"])]
    if view == "full":
        return T.Compose([T.Resize((size, size)), *normalize])
    return T.Compose([T.Resize(resize), T.CenterCrop(size), *normalize])


def split_transform(transform):
    """A Compose as (leading deterministic steps, per-sample steps, normalisation).

    The dataset applies the first part once and caches its result: for the full view (and any evaluation) that
    is the resize to the network's input, so an epoch after the first costs the random augmentations of a small
    image only. A trailing ToTensor + Normalize becomes PILToTensor per sample plus a `BatchNormalize` for the
    loader: batches cross from the DataLoader workers as uint8, a quarter of the bytes, and are converted and
    normalised once per batch (on this 2-core machine the workers' per-batch cost fell by ~45%)."""
    if not isinstance(transform, T.Compose):
        return None, transform, None
    steps = list(transform.transforms)
    fixed = 0
    while fixed < len(steps) and type(steps[fixed]) in (T.Resize, T.CenterCrop):
        fixed += 1
    prepare, steps = (T.Compose(steps[:fixed]) if fixed else None), steps[fixed:]
    normalize = None
    if len(steps) >= 2 and type(steps[-2]) is T.ToTensor and type(steps[-1]) is T.Normalize:
        normalize = BatchNormalize(steps[-1].mean, steps[-1].std)
        steps = [*steps[:-2], T.PILToTensor()]
    return prepare, T.Compose(steps), normalize


class BatchNormalize:
    """uint8 images (N, C, H, W) -> floats scaled to 0..1 and normalised, as ToTensor + Normalize per image."""

    def __init__(self, mean, std):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8:
            return images
        return images.float().div_(255).sub_(self.mean).div_(self.std)


def eval_decode_side(size: int, resize: int, view: str = "crop") -> int:
    return size if view == "full" else resize


LABELS_FILE = "labels.json"


@dataclass(frozen=True)
class PackedImage:
    """A JPEG stored inside a pack (a plain tar) of the channel, at a byte offset."""

    pack: Path
    offset: int
    size: int
    image_id: str

    def open(self) -> io.BytesIO:
        with open(self.pack, "rb") as f:
            f.seek(self.offset)
            data = f.read(self.size)
        if len(data) != self.size:  # a pack cut short: the image is undecodable, skipped like any other
            raise OSError(f"{self.pack} holds {len(data)} of {self.size} bytes at offset {self.offset}")
        return io.BytesIO(data)

    def __str__(self) -> str:
        return f"{self.pack}[{self.image_id}]"


def labelled_samples(channel: str, root: Path) -> list[tuple[PackedImage, int]] | None:
    """The samples a channel's `labels.json` lists (the project's dataset versions), or None without one.

    A version's channel (a SageMaker ManifestFile) holds the split's packs and one labels.json whose samples
    are [path relative to the channel dir, byte offset, size, count, image id]; labels live apart from the
    photos, so a corrected label never re-copies one.
    """
    found = sorted(root.rglob(LABELS_FILE))
    if not found:
        return None
    if len(found) > 1:
        raise ChannelError(f"channel {channel!r} holds {len(found)} {LABELS_FILE} files; expected one: {found}")
    try:
        document = json.loads(found[0].read_text())
        samples = []
        for path, offset, size, count, image_id in document["samples"]:
            pack = (root / path).resolve()
            if root.resolve() not in pack.parents:
                raise ChannelError(f"channel {channel!r}: {path!r} is outside the channel")
            if not pack.is_file():
                raise ChannelError(f"channel {channel!r}: {path} listed in {found[0]} is missing")
            if str(count) not in CLASS_FOLDERS:
                raise ChannelError(f"channel {channel!r}: image {image_id} has count {count}, not 1-5")
            samples.append((PackedImage(pack, int(offset), int(size), str(image_id)), CLASS_FOLDERS[str(count)]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ChannelError(f"channel {channel!r}: {found[0]} is not a labels file ({exc})") from exc
    if not samples:
        raise ChannelError(f"channel {channel!r} holds no images in {found[0]}")
    return samples


class CountingImageFolder(Dataset):
    def __init__(
        self,
        channel: str,
        root: str | Path | None,
        transform=None,
        require_all_classes: bool = True,
        decode_side: int | None = None,
        cache_mb: int = DEFAULT_CACHE_MB,
    ):
        self.decode_side = decode_side
        self.cache_budget = max(0, cache_mb) << 20
        self._cache: dict[int, tuple[str, tuple[int, int], bytes]] = {}  # index -> (mode, size, pixels)
        self._cached_bytes = 0
        if root is None:
            raise ChannelError(f"channel {channel!r} was not provided (SM_CHANNEL_{channel.upper()} is unset)")
        self.channel, self.root = channel, Path(root)
        self.prepare, self.transform, self.normalize = split_transform(transform)
        if not self.root.is_dir():
            raise ChannelError(f"channel {channel!r}: {self.root} does not exist")
        self.samples: list[tuple[Path | PackedImage, int]] = []
        labelled = labelled_samples(channel, self.root)
        if labelled is not None:
            self.samples = labelled
            present = {COUNTS[index] for _, index in labelled}
            self.missing = [name for name in CLASS_FOLDERS if int(name) not in present]
            if self.missing and require_all_classes:
                raise ChannelError(f"channel {channel!r} has no image of count(s) {self.missing} in its labels")
            return
        self.missing = [name for name in CLASS_FOLDERS if not (self.root / name).is_dir()]
        if self.missing and require_all_classes:
            raise ChannelError(f"channel {channel!r} has no class folder(s) {self.missing} under {self.root}")
        for name, index in CLASS_FOLDERS.items():
            if name in self.missing:
                continue
            files = sorted(p for p in (self.root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            self.samples += [(p, index) for p in files]
        if not self.samples:
            raise ChannelError(f"channel {channel!r} holds no images under {self.root}")

    def __len__(self) -> int:
        return len(self.samples)

    def sample_names(self) -> list[tuple[str, str]]:
        """(name, what a skip reports) per sample, in order: the image id of a packed image, else its path under
        the channel (`<count>/<file>`): the names champion.test_images gives the same images."""
        return [
            (path.image_id if isinstance(path, PackedImage) else path.relative_to(self.root).as_posix(), str(path))
            for path, _ in self.samples
        ]

    def class_counts(self) -> dict[str, int]:
        counts = {str(c): 0 for c in COUNTS}
        for _, index in self.samples:
            counts[str(COUNTS[index])] += 1
        return counts

    def cache_info(self) -> dict[str, int]:
        """What this process holds (each DataLoader worker has its own cache)."""
        return {"images": len(self._cache), "megabytes": self._cached_bytes >> 20, "budget_mb": self.cache_budget >> 20}

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        cached = self._cache.get(index)
        if cached is not None:
            rgb = Image.frombytes(*cached)
            return (self.transform(rgb) if self.transform else rgb), label
        try:
            with Image.open(path.open() if isinstance(path, PackedImage) else path) as image:
                if self.decode_side:  # JPEG only: other formats ignore the draft request
                    image.draft("RGB", (self.decode_side, self.decode_side))
                image.load()  # decode now: a truncated file fails here, not later
                rgb = image.convert("RGB")
            if self.prepare is not None:
                rgb = self.prepare(rgb)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            return {"skipped": str(path), "error": f"{type(exc).__name__}: {exc}"}
        pixels = rgb.tobytes()
        if self._cached_bytes + len(pixels) <= self.cache_budget:
            self._cache[index] = (rgb.mode, rgb.size, pixels)
            self._cached_bytes += len(pixels)
        return (self.transform(rgb) if self.transform else rgb), label


def collate_skipping(batch):
    """Stack the decodable samples; report the undecodable ones as a list of {path, error}."""
    good = [item for item in batch if not isinstance(item, dict)]
    skipped = [item for item in batch if isinstance(item, dict)]
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.long), skipped
    images, labels = default_collate(good)
    return images, labels, skipped
