"""Write a data set of your own images from one the project has, to try the own-data path end to end:

    python -m memomentum.example_data --out examples/digits-own              # digits, 30% pair-flip labels
    python -m memomentum.example_data --source fashionmnist --data-root ../shared/data --out examples/fashion-own
    python run_sweep.py grids/own-data.yaml                                  # every method on it

It writes, from the source's official training and test sets:

    OUT/train/<class>/<n>.png   each training image in the folder of its GIVEN label: a share `--flip` of them
                                flipped by the project's own noise (`--noise` pairflip or symmetric, `--seed`)
    OUT/test/<class>/<n>.png    each test image in the folder of its true label
    OUT/manifest.csv            path, label (the given one), split, clean_label (the true one): the same images,
                                with the clean labels a user rarely has, so that the tables can say which
                                flagged labels really were wrong

PNG is lossless: the images come back exactly as the source holds them. The examples keep the source's order (n is
their position in it), and the manifest lists them in that order.
"""
import argparse
import csv
import os
import sys

import numpy as np

CLASS_NAMES = {"digits": [str(c) for c in range(10)], "mnist": [str(c) for c in range(10)],
               "fashionmnist": ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                                "ankle-boot"]}


def write(source: str, out: str, flip: float, noise_type: str, seed: int, data_root: str = "",
          limit: int = 0) -> dict:
    """Write the folder and manifest; returns counts (the realised share of flipped training labels among them)."""
    from PIL import Image

    from memomentum.data import load
    from memomentum.noise import make_noisy_labels

    arrays = load(source, data_root)
    names = CLASS_NAMES[source]
    train_x, train_y = arrays.train_images.numpy(), arrays.train_labels.numpy()
    test_x, test_y = arrays.test_images.numpy(), arrays.test_labels.numpy()
    if limit:
        train_x, train_y, test_x, test_y = train_x[:limit], train_y[:limit], test_x[:limit // 4], test_y[:limit // 4]
    given = make_noisy_labels(noise_type, flip, train_y, train_x, len(names), seed) if flip else train_y.copy()
    rows = []
    for split, images, labels, clean in (("train", train_x, given, train_y), ("test", test_x, test_y, test_y)):
        for n, (image, label, true) in enumerate(zip(images, labels, clean)):
            rel = os.path.join(split, names[label], f"{n:05d}.png")
            os.makedirs(os.path.join(out, split, names[label]), exist_ok=True)
            pixels = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
            Image.fromarray(pixels).save(os.path.join(out, rel))
            rows.append({"path": rel, "label": names[label], "split": split, "clean_label": names[true]})
    with open(os.path.join(out, "manifest.csv"), "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "label", "split", "clean_label"])
        writer.writeheader()
        writer.writerows(rows)
    return {"train": len(train_y), "test": len(test_y), "flipped": int((given != train_y).sum()),
            "flipped_share": round(float((given != train_y).mean()), 4)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m memomentum.example_data", description=__doc__.split("\n\n")[0])
    p.add_argument("--source", default="digits", choices=sorted(CLASS_NAMES), help="the data set to export")
    p.add_argument("--out", required=True, help="the folder to write (created)")
    p.add_argument("--flip", type=float, default=0.3, help="share of training labels to flip, in [0, 1) (default 0.3)")
    p.add_argument("--noise", default="pairflip", choices=("pairflip", "symmetric"), help="how to flip them")
    p.add_argument("--seed", type=int, default=1, help="the flips' seed")
    p.add_argument("--data-root", default="", help="where mnist / fashionmnist are (default $MEMOMENTUM_DATA or ./data)")
    p.add_argument("--limit", type=int, default=0, help="only the first N training images (N / 4 test); 0: all")
    args = p.parse_args(argv)
    from memomentum.errors import ConfigError, DataError

    if not 0 <= args.flip < 1:
        print("error: --flip must lie in [0, 1), e.g. 0.3", file=sys.stderr)
        return 2
    if os.path.exists(args.out) and os.listdir(args.out):
        print(f"error: {args.out} exists and is not empty; give a new folder", file=sys.stderr)
        return 2
    try:
        counts = write(args.source, args.out, args.flip, args.noise, args.seed, args.data_root, args.limit)
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {counts['train']} training images ({counts['flipped']} labels flipped, "
          f"{counts['flipped_share']:.1%}) in train/<class>/, {counts['test']} test images in test/<class>/, and "
          f"manifest.csv (path, label, split, clean_label)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
