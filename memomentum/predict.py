"""The model a trial exported (trials/<key>/model.pt, memomentum/exports.py), loaded and used on new images:

    from memomentum.predict import load_model, predict
    model, meta = load_model("runs/own-data/trials/<key>/model.pt")     # an eval-mode torch module and its facts
    predict("runs/own-data/trials/<key>/model.pt", ["cat.jpg", "dog.png"])
    # -> [{"image": "cat.jpg", "class": "cat", "probability": 0.93}, ...]

    python -m memomentum.predict runs/own-data/trials/<key>/model.pt cat.jpg dog.png    # one JSON line per image

The file loads with `torch.load(path, weights_only=True)` (no pickled code can run): the network's name and state,
its classes, and the input it expects (channels, image size, normalisation). Images go through the same steps as
the training images did (memomentum/own_images.py: first frame, mode conversion, resize, 0..255 -> normalised).
"""
import json
import sys
from typing import List, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from memomentum.errors import DataError
from memomentum.exports import MODEL_FORMAT


def load_model(path: str, device: str = "cpu") -> Tuple[torch.nn.Module, dict]:
    """(the network in eval mode on `device`, the file's facts: class_names, image_size, in_channels, mean, std, ...)."""
    from memomentum.models import create_model

    try:
        meta = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(f"{path} is not a model file this project wrote ({type(exc).__name__}: {str(exc)[:100]})") from None
    if not isinstance(meta, dict) or meta.get("format") != MODEL_FORMAT:
        raise DataError(f"{path} is not a model file this project wrote (format {MODEL_FORMAT})")
    model = create_model(meta["network"], meta["num_classes"], meta["in_channels"])
    model.load_state_dict(meta["state_dict"])
    return model.to(device).eval(), {k: v for k, v in meta.items() if k != "state_dict"}


def preprocess(images: Sequence, meta: dict) -> torch.Tensor:
    """Paths or Pillow images -> the normalised float batch (N, C, S, S) the network expects."""
    from PIL import Image

    from memomentum.own_images import to_array

    batch = []
    for item in images:
        if isinstance(item, str):
            with Image.open(item) as image:
                batch.append(to_array(image, meta["image_size"], meta["in_channels"]))
        else:
            batch.append(to_array(item, meta["image_size"], meta["in_channels"]))
    x = torch.from_numpy(np.stack(batch)).float() / 255.0
    mean = torch.tensor(meta["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(meta["std"]).view(1, -1, 1, 1)
    return (x - mean) / std


@torch.inference_mode()
def predict(model: Union[str, torch.nn.Module], images: Sequence, meta: dict = None) -> List[dict]:
    """The predicted class and its probability of each image (a path or a Pillow image)."""
    if isinstance(model, str):
        model, meta = load_model(model)
    probs = F.softmax(model(preprocess(images, meta)).float(), 1)
    top, cls = probs.max(1)
    return [{"image": item if isinstance(item, str) else f"#{i}", "class": meta["class_names"][int(c)],
             "probability": round(float(p), 6)} for i, (item, c, p) in enumerate(zip(images, cls, top))]


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2 or argv[0] in ("-h", "--help"):
        print("usage: python -m memomentum.predict MODEL.pt IMAGE [IMAGE ...]  (one JSON line per image)",
              file=sys.stderr)
        return 2
    try:
        for row in predict(argv[0], argv[1:]):
            print(json.dumps(row))
    except (DataError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
