"""SageMaker PyTorch serving handlers: a bin photo in, `{"count": 1..5, "probabilities": [...]}` out."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

sys.path.insert(0, str(Path(__file__).resolve().parent))

from data import eval_decode_side, eval_transform  # noqa: E402
from model import build_model  # noqa: E402

IMAGE_TYPES = ("image/jpeg", "image/png", "application/x-image")
JSON_TYPE = "application/json"


class UnsupportedContentType(ValueError):
    pass


def model_fn(model_dir: str):
    """Rebuild the network from model_info.json and load its weights (tensors only)."""
    model_dir = Path(model_dir)
    info = json.loads((model_dir / "model_info.json").read_text())
    # models saved before heads/TTA were choices carry the study's MLP head and no TTA
    net = build_model(
        info["architecture"],
        checkpoint=None,
        download_weights=False,
        freeze_backbone=False,
        head=info.get("head", "mlp"),
        tta=info.get("tta", "none"),
    )
    state = torch.load(model_dir / "model.pth", map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    net.eval()
    net.inventory_info = info  # what input_fn/output_fn need travels with the model
    return net


def input_fn(request_body: bytes, content_type: str = "image/jpeg"):
    base_type = (content_type or "").split(";")[0].strip().lower()
    if base_type not in IMAGE_TYPES:
        raise UnsupportedContentType(f"unsupported content type {content_type!r}; send one of {', '.join(IMAGE_TYPES)}")
    try:
        with Image.open(io.BytesIO(request_body)) as image:
            image.load()
            rgb = image.convert("RGB")
        rgb.info["encoded"] = request_body  # predict_fn decodes it again as the training evaluation did
        return rgb
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"the request body is not a decodable image ({type(exc).__name__}: {exc})") from exc


def predict_fn(data: Image.Image, model) -> dict:
    info = model.inventory_info
    # models saved before views existed were trained on the study's centre crop
    transform = eval_transform(info["input_size"], info["resize"], info["normalization"], info.get("view", "crop"))
    encoded = data.info.get("encoded")
    if encoded is not None:  # evaluation decodes JPEGs no larger than needed (data.py's draft mode): so do we
        with Image.open(io.BytesIO(encoded)) as image:
            view = info.get("view", "crop")
            side = eval_decode_side(info["input_size"], info["resize"], view)
            image.draft("RGB", (side, side))
            image.load()
            data = image.convert("RGB")
    tensor = transform(data).unsqueeze(0)
    with torch.no_grad():
        probabilities = torch.softmax(model(tensor), dim=1)[0].tolist()
    best = max(range(len(probabilities)), key=probabilities.__getitem__)
    return {
        "count": int(info["class_to_count"][str(best)]),
        "probabilities": [float(p) for p in probabilities],
    }


def output_fn(prediction: dict, accept: str = JSON_TYPE) -> str:
    base_type = (accept or JSON_TYPE).split(";")[0].strip().lower()
    if base_type not in (JSON_TYPE, "*/*"):
        raise UnsupportedContentType(f"unsupported accept type {accept!r}; use {JSON_TYPE}")
    return json.dumps({"count": prediction["count"], "probabilities": prediction["probabilities"]})
