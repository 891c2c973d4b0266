"""Images per second of the Clothing1M training input pipeline (JPEG decode with PIL, Resize 256,
RandomCrop with padding, flip, ToTensor, Normalize, batches of 32) for several DataLoader worker
counts, on generated JPEGs of Clothing1M's typical size. No model runs: this is the ceiling the input
pipeline puts on training speed.

    python benchmarks/bench_clothing_input.py --n 2000 --workers 0 1 2

The last line is one JSON object. Figures go to benchmarks/RESULTS.md.
"""
import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from memomentum.stream import JpegFolder, transforms_for  # noqa: E402
from memomentum.data import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402


def make_jpegs(folder: str, n: int, width: int, height: int) -> np.ndarray:
    from PIL import Image

    rng = np.random.default_rng(0)
    # smooth random images compress like photographs, not like noise
    base = rng.integers(0, 256, (n, height // 16, width // 16, 3), dtype=np.uint8)
    keys = []
    for i in range(n):
        key = f"images/{i % 10}/{i}.jpg"
        os.makedirs(os.path.join(folder, os.path.dirname(key)), exist_ok=True)
        Image.fromarray(base[i]).resize((width, height), Image.BILINEAR).save(os.path.join(folder, key), quality=90)
        keys.append(key)
    return np.array(keys, dtype=bytes)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=2000, help="images per measurement")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--size", type=int, default=256, help="image_size")
    p.add_argument("--source", default="400x533", help="generated JPEG size WxH (Clothing1M photos are ~this)")
    args = p.parse_args(argv)
    width, height = (int(v) for v in args.source.split("x"))
    points = []
    with tempfile.TemporaryDirectory() as folder:
        keys = make_jpegs(folder, args.n, width, height)
        dataset = JpegFolder(folder, keys, np.zeros(len(keys), dtype=np.int64),
                             transforms_for(args.size, True, IMAGENET_MEAN, IMAGENET_STD))
        for workers in args.workers:
            loader = torch.utils.data.DataLoader(dataset, batch_size=32, shuffle=True, num_workers=workers)
            start = time.perf_counter()
            seen = sum(len(y) for _, y, _ in loader)
            seconds = time.perf_counter() - start
            points.append({"workers": workers, "images": seen, "seconds": round(seconds, 2),
                           "images_per_s": round(seen / seconds, 1)})
            print(json.dumps(points[-1]), file=sys.stderr, flush=True)
    print(json.dumps({"image_size": args.size, "source_jpeg": args.source, "cpu_cores": os.cpu_count(),
                      "torch": torch.__version__, "points": points}))


if __name__ == "__main__":
    main()
