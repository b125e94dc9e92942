"""Synthetic ABID-like bin photos: JPEGs in which the number of drawn items (1-5) is the label.

Used by the demo and by tests that need volume. Each image is a bin interior (textured background, the
elastic straps ABID bins have across their front) with `label` items drawn as coloured boxes, bottles and
pouches. Items of one product share shape and colour, like a bin holding 3 of one ASIN. Items may touch and
overlap a little and straps cross over them, so a tiny model is not trivially perfect; they never hide each
other completely, so the count stays learnable.

Deterministic: image `i` depends only on (seed, i), so any slice can be regenerated on its own.
"""

from __future__ import annotations

import io
import math
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

# The original study's class sizes (shared/data/file_list.json): the default class balance.
STUDY_CLASS_COUNTS: dict[int, int] = {1: 1228, 2: 2299, 3: 2666, 4: 2373, 5: 1875}
CLASSES = (1, 2, 3, 4, 5)

_SHAPES = ("box", "bottle", "pouch", "disc")
_WORDS = ("Deluxe", "Organic", "Wireless", "Classic", "Kids", "Travel", "Premium", "Mini", "Eco", "Pro")
_NOUNS = ("Wallet", "Capsules", "Blu-ray", "Game", "Charger", "Notebook", "Mug", "Socks", "Lamp", "Brush")


@dataclass(frozen=True)
class SyntheticImage:
    image_id: str
    label: int
    jpeg: bytes
    metadata: dict[str, Any]
    width: int
    height: int


def image_id_for(index: int) -> str:
    """ABID ids are zero-padded to 5 digits (6 above 99999)."""
    return f"{index:05d}"


def class_plan(total: int, balance: Mapping[int, float] | None = None, seed: int = 0) -> list[int]:
    """Labels for `total` images in the given class proportions (default: the study's), shuffled by seed."""
    if total < 0:
        raise ValueError("total must be >= 0")
    weights = {int(k): float(v) for k, v in (balance or STUDY_CLASS_COUNTS).items()}
    if set(weights) - set(CLASSES) or any(v < 0 for v in weights.values()) or sum(weights.values()) <= 0:
        raise ValueError(f"balance must map classes 1-5 to non-negative weights, got {dict(weights)}")
    norm = sum(weights.values())
    exact = {k: total * weights.get(k, 0.0) / norm for k in CLASSES}
    counts = {k: int(math.floor(v)) for k, v in exact.items()}
    # Largest remainders get the leftover images so the counts add up to `total` exactly.
    leftover = total - sum(counts.values())
    for k in sorted(CLASSES, key=lambda c: exact[c] - counts[c], reverse=True)[:leftover]:
        counts[k] += 1
    labels = [k for k in CLASSES for _ in range(counts[k])]
    random.Random(f"plan:{seed}").shuffle(labels)
    return labels


def generate(
    total: int, seed: int = 0, balance: Mapping[int, float] | None = None, start_index: int = 1
) -> Iterator[SyntheticImage]:
    """Yield `total` images with ids start_index, start_index+1, ..."""
    for offset, label in enumerate(class_plan(total, balance, seed)):
        index = start_index + offset
        yield render(image_id_for(index), label, seed=seed)


def render_all(total: int, seed: int = 0, start_index: int = 1) -> list[SyntheticImage]:
    """`generate`'s photos as a list: what a worker process renders and hands back."""
    return list(generate(total, seed=seed, start_index=start_index))


def render(image_id: str, label: int, seed: int = 0) -> SyntheticImage:
    """One bin photo with `label` items, and its ABID-format metadata."""
    from PIL import Image, ImageDraw, ImageFilter

    if label not in CLASSES:
        raise ValueError(f"label must be 1-5, got {label}")
    rng = random.Random(f"img:{seed}:{image_id}")
    width, height = rng.randint(300, 520), rng.randint(240, 420)
    base = tuple(rng.randint(90, 170) for _ in range(3))
    image = Image.new("RGB", (width, height), base)
    draw = ImageDraw.Draw(image)
    _draw_bin_background(draw, rng, width, height, base)

    products = _products(rng, label)
    boxes = _place(rng, len([1 for p in products for _ in range(p["quantity"])]), width, height)
    slot = 0
    for product in products:
        for _ in range(product["quantity"]):
            _draw_item(draw, rng, boxes[slot], product)
            slot += 1
    _draw_straps(draw, rng, width, height)
    # Camera softness up to a Gaussian's sigma 0.8, as a box of the same variance (radius 1.2 sigma): one pass
    # instead of three, 1.5 ms a photo instead of 3.7 ms (most of the demo's seeding CPU).
    image = image.filter(ImageFilter.BoxBlur(radius=1.2 * rng.uniform(0.0, 0.8)))

    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=rng.randint(70, 92))
    metadata = {
        "BIN_FCSKU_DATA": {p["asin"]: p["record"] for p in products},
        "EXPECTED_QUANTITY": label,
    }
    return SyntheticImage(image_id, label, buffer.getvalue(), metadata, width, height)


def file_list(images: list[SyntheticImage] | list[tuple[str, int]]) -> dict[str, list[str]]:
    """The public bucket's `file_list.json` shape: {"1": ["metadata/<id>.json", ...], ...}."""
    out: dict[str, list[str]] = {str(k): [] for k in CLASSES}
    for item in images:
        image_id, label = (item.image_id, item.label) if isinstance(item, SyntheticImage) else item
        out[str(label)].append(f"metadata/{image_id}.json")
    return out


def _draw_bin_background(draw, rng: random.Random, width: int, height: int, base) -> None:
    # Cardboard-ish texture: faint random streaks, plus the darker bin walls at the edges.
    for _ in range(rng.randint(20, 40)):
        shade = tuple(max(0, min(255, c + rng.randint(-25, 25))) for c in base)
        x = rng.randint(0, width)
        draw.line([(x, 0), (x + rng.randint(-40, 40), height)], fill=shade, width=rng.randint(1, 4))
    wall = tuple(max(0, c - 50) for c in base)
    edge = rng.randint(6, 20)
    draw.rectangle([0, 0, width, edge], fill=wall)
    draw.rectangle([0, height - edge, width, height], fill=wall)


def _draw_straps(draw, rng: random.Random, width: int, height: int) -> None:
    # ABID bins have elastic bands across the front; they cross items and must not be counted.
    for _ in range(rng.randint(1, 3)):
        y = rng.randint(int(height * 0.15), int(height * 0.85))
        colour = (rng.randint(180, 240),) * 3
        draw.line([(0, y), (width, y + rng.randint(-30, 30))], fill=colour, width=rng.randint(2, 5))


def _products(rng: random.Random, label: int) -> list[dict[str, Any]]:
    """Split `label` items into 1..label products (ASINs), like real bins holding several of one item."""
    n_products = rng.randint(1, label)
    quantities = [1] * n_products
    for _ in range(label - n_products):
        quantities[rng.randrange(n_products)] += 1
    products = []
    for quantity in quantities:
        asin = "B0" + "".join(rng.choice("0123456789ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(8))
        name = f"{rng.choice(_WORDS)} {rng.choice(_NOUNS)}"
        dims = {k: _measure(rng, "IN", 0.5, 12.0) for k in ("height", "length", "width")}
        record = {
            "asin": asin,
            **dims,
            "name": name,
            "normalizedName": name,
            "quantity": quantity,
            "weight": _measure(rng, "pounds", 0.02, 5.0),
        }
        if rng.random() < 0.1:  # the real metadata has null dimensions now and then
            record[rng.choice(["height", "length", "width", "weight"])] = None
        products.append(
            {
                "asin": asin,
                "quantity": quantity,
                "record": record,
                "shape": rng.choice(_SHAPES),
                "colour": tuple(rng.randint(0, 255) for _ in range(3)),
                "scale": rng.uniform(0.16, 0.26),
                "aspect": rng.uniform(0.5, 1.6),
            }
        )
    return products


def _measure(rng: random.Random, unit: str, low: float, high: float) -> dict[str, Any]:
    return {"unit": unit, "value": round(rng.uniform(low, high), 6)}


def _place(rng: random.Random, n: int, width: int, height: int) -> list[tuple[float, float]]:
    """Item centres, spread out so that no item hides another (mild overlap is allowed)."""
    min_gap = min(width, height) * 0.22
    centres: list[tuple[float, float]] = []
    for _ in range(n):
        best, best_gap = (width / 2, height / 2), -1.0
        for _ in range(60):
            cand = (rng.uniform(0.14, 0.86) * width, rng.uniform(0.18, 0.82) * height)
            gap = min((math.dist(cand, c) for c in centres), default=float("inf"))
            if gap >= min_gap:
                best = cand
                break
            if gap > best_gap:
                best, best_gap = cand, gap
        centres.append(best)
    return centres


def _draw_item(draw, rng: random.Random, centre: tuple[float, float], product: dict[str, Any]) -> None:
    cx, cy = centre
    size = product["scale"] * 400 * rng.uniform(0.85, 1.15)
    w, h = size * math.sqrt(product["aspect"]) / 2, size / math.sqrt(product["aspect"]) / 2
    colour = tuple(max(0, min(255, c + rng.randint(-20, 20))) for c in product["colour"])
    outline = tuple(max(0, c - 70) for c in colour)
    shape = product["shape"]
    if shape == "box":
        draw.rectangle([cx - w, cy - h, cx + w, cy + h], fill=colour, outline=outline, width=3)
        draw.line([(cx - w, cy - h * 0.3), (cx + w, cy - h * 0.3)], fill=outline, width=2)
    elif shape == "bottle":
        draw.rounded_rectangle(
            [cx - w * 0.6, cy - h, cx + w * 0.6, cy + h], radius=w * 0.4, fill=colour, outline=outline, width=3
        )
        draw.rectangle([cx - w * 0.25, cy - h * 1.25, cx + w * 0.25, cy - h], fill=outline)
    elif shape == "pouch":
        corners = [(cx - w, cy - h * 0.8), (cx + w, cy - h), (cx + w * 0.9, cy + h), (cx - w * 0.9, cy + h)]
        draw.polygon(corners, fill=colour, outline=outline, width=3)
    else:
        draw.ellipse([cx - w, cy - w, cx + w, cy + w], fill=colour, outline=outline, width=3)
    # A label patch: real products carry printed labels that add texture.
    lw = w * 0.4
    draw.rectangle([cx - lw, cy - lw * 0.4, cx + lw, cy + lw * 0.4], fill=(240, 240, 235))
