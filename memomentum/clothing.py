"""Clothing1M: the official release layout, streamed JPEG loading, and the class-wise variant of
Me-Momentum (SPEC §4, the official Clothing.py).

Data: under a root, `annotations/` holds the five official files and the keys in them are image paths
relative to the root (e.g. images/0/00/x.jpg). The index (train keys with noisy labels, clean labels
where known, clean validation and test sets) is built once and cached under $MEMOMENTUM_CACHE, which
replaces the official separate `.npy` preparation step. Images do not fit in memory: they are decoded
with PIL in DataLoader worker processes and transformed as the official code does:
    train: Resize((s, s)), RandomCrop(s, padding=s/8), RandomHorizontalFlip, ToTensor, Normalize
    eval:  Resize((s, s)), ToTensor, Normalize                         (s = image_size, 256)

The procedure, per outer loop (fresh ImageNet ResNet-50, SGD, one MultiStepLR over all its epochs):
    for each inner loop: train `epochs_per_stage` epochs with class-weighted cross-entropy; after every
        epoch score the model per class on the clean validation set, score_c = beta * recall_c +
        (1 - beta) * precision_c, and remember the best-scoring epoch for each class; take the test
        accuracy whenever the clean validation accuracy reaches a new best;
        then the next training set is, for each class c, the examples with noisy label c that the
        best model for class c predicts as c (on the whole noisy training set, no augmentation), and
        the class weights are recomputed: mean(train_counts) / train_counts * val_counts / mean(val_counts).
    The training set carries into the next outer loop. Reported: test accuracy at the best validation accuracy.
Method `ce`: one outer loop of the same schedule and class-weighted loss on all noisy labels, no selection.
"""
import hashlib
import os
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch

from memomentum import data as data_mod
from memomentum.config import ConfigError, TrialConfig
from memomentum.data import CLOTHING_ANNOTATIONS, DataError
from memomentum.engine import Engine, lr_at, sgd
from memomentum.models import create_model
from memomentum.atomic import atomic_savez, load_npz
from memomentum.noise import default_cache_dir
from memomentum.procedure import TrialBase, derive_seed

NUM_CLASSES = 14
STAGE = "C"  # round records of the class-wise variant


# --- the index ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClothingIndex:
    root: str
    train_keys: np.ndarray  # bytes, paths relative to root
    train_noisy: np.ndarray  # int64
    train_clean: np.ndarray  # int64, -1 where no clean label is known
    val_keys: np.ndarray
    val_labels: np.ndarray
    test_keys: np.ndarray
    test_labels: np.ndarray


def _read_kv(path: str) -> Dict[bytes, int]:
    out = {}
    with open(path, "rb") as fh:
        for n, line in enumerate(fh, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or not parts[1].isdigit():
                raise DataError(f"{path} line {n} is not 'key label': {line[:80]!r}; replace it with the "
                                f"release file")
            out[parts[0]] = int(parts[1])
    return out


def _read_keys(path: str) -> List[bytes]:
    with open(path, "rb") as fh:
        return [line.strip() for line in fh if line.strip()]


def _labels_for(keys: List[bytes], kv: Dict[bytes, int], what: str, source: str) -> np.ndarray:
    try:
        labels = np.fromiter((kv[k] for k in keys), dtype=np.int64, count=len(keys))
    except KeyError as exc:
        raise DataError(f"{what} key {exc.args[0].decode(errors='replace')} has no label in {source}; the "
                        f"annotation files do not belong together") from None
    if len(labels) and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DataError(f"{source} holds labels outside 0..{NUM_CLASSES - 1}")
    return labels


def read_index(root: str) -> ClothingIndex:
    """Parse the five annotation files (or load the cached index built from exactly these files)."""
    ann = os.path.join(root, "annotations")
    paths = [os.path.join(ann, f) for f in CLOTHING_ANNOTATIONS]
    stamp = hashlib.blake2b(os.path.abspath(root).encode(), digest_size=8)
    for p in paths:
        st = os.stat(p)
        stamp.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    cache = os.path.join(default_cache_dir(), "clothing1m", stamp.hexdigest() + ".npz")
    fields = ("train_keys", "train_noisy", "train_clean", "val_keys", "val_labels", "test_keys", "test_labels")
    cached = load_npz(cache, fields, lambda z: len(z["train_keys"]) == len(z["train_noisy"]) == len(z["train_clean"])
                      and len(z["val_keys"]) == len(z["val_labels"]) and len(z["test_keys"]) == len(z["test_labels"]))
    if cached is not None:  # a damaged cache file is rebuilt from the annotation files below
        return ClothingIndex(root, *(cached[f] for f in fields))
    train_list, noisy_kv, clean_kv, val_list, test_list = paths
    noisy = _read_kv(noisy_kv)
    clean = _read_kv(clean_kv)
    train_keys = _read_keys(train_list)
    index = ClothingIndex(
        root, np.array(train_keys, dtype=bytes), _labels_for(train_keys, noisy, "training", noisy_kv),
        np.fromiter((clean.get(k, -1) for k in train_keys), dtype=np.int64, count=len(train_keys)),
        np.array(_read_keys(val_list), dtype=bytes), _labels_for(_read_keys(val_list), clean, "validation", clean_kv),
        np.array(_read_keys(test_list), dtype=bytes), _labels_for(_read_keys(test_list), clean, "test", clean_kv))
    for split, keys in (("training", index.train_keys), ("validation", index.val_keys), ("test", index.test_keys)):
        if len(keys) == 0:
            raise DataError(f"the Clothing1M {split} list under {ann} is empty")
        for key in (keys[0], keys[-1]):  # cheap check that the keys point at the image folders
            if not os.path.isfile(os.path.join(root, key.decode())):
                raise DataError(f"image {key.decode()} named in the {split} list is missing under {root}; "
                                f"place the image folders beside annotations/")
    atomic_savez(cache, **{f: getattr(index, f) for f in fields})
    return index


# --- streamed images ------------------------------------------------------------------------------
class JpegFolder(torch.utils.data.Dataset):
    def __init__(self, root: str, keys: np.ndarray, labels: np.ndarray, transform):
        self.root, self.keys, self.labels, self.transform = root, keys, labels, transform

    def __len__(self):
        return len(self.keys)

    def __getitem__(self, i):
        from PIL import Image

        path = os.path.join(self.root, self.keys[i].decode())
        with Image.open(path) as image:
            return self.transform(image.convert("RGB")), int(self.labels[i])


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a container's or taskset's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def auto_workers(cpus: float) -> int:
    """DataLoader worker processes for `cpus` CPUs: none for one CPU (decoding in the training
    process is faster than one worker), else one per CPU, at most 8 (the official setting)."""
    return 0 if cpus < 2 else min(8, int(cpus))


def transforms_for(size: int, augment: bool, mean, std):
    from torchvision import transforms as T

    steps = [T.Resize((size, size))]
    if augment:
        steps += [T.RandomCrop(size, padding=size // 8), T.RandomHorizontalFlip()]
    return T.Compose(steps + [T.ToTensor(), T.Normalize(mean, std)])


# --- the class-wise pieces (pure, pinned by tests) -------------------------------------------------
def per_class_stats(preds: torch.Tensor, labels: torch.Tensor, num_classes: int):
    """(accuracy %, per-class recall %, per-class precision %) as the official evaluate_val:
    recall and precision rounded to 2 decimals; NaN where a class has no examples / no predictions."""
    total = torch.bincount(labels, minlength=num_classes).double()
    predicted = torch.bincount(preds, minlength=num_classes).double()
    correct = torch.bincount(labels[preds == labels], minlength=num_classes).double()
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.around(100 * correct.cpu().numpy() / total.cpu().numpy(), 2)
        precision = np.around(100 * correct.cpu().numpy() / predicted.cpu().numpy(), 2)
    accuracy = 100.0 * float(correct.sum()) / max(len(labels), 1)
    return accuracy, recall, precision


def class_scores(recall: np.ndarray, precision: np.ndarray, beta: float) -> np.ndarray:
    return beta * recall + (1 - beta) * precision


def update_best(best_scores: np.ndarray, best_ref: List[Optional[str]], scores: np.ndarray, ref: str) -> bool:
    """Classes whose score strictly beats their best so far now point at `ref` (NaN never wins, as
    in the official comparison). Returns whether any class did."""
    won = scores > best_scores  # NaN compares False
    for c in np.flatnonzero(won):
        best_scores[c] = scores[c]
        best_ref[c] = ref
    return bool(won.any())


def class_weights(train_counts: np.ndarray, val_counts: np.ndarray) -> np.ndarray:
    """mean(train) / train * val / mean(val); a class absent from training gets weight 0 (officially
    inf, which never meets an example, so the loss is the same)."""
    train = train_counts.astype(np.float64)
    with np.errstate(divide="ignore"):
        w = np.where(train > 0, train.mean() / np.maximum(train, 1), 0.0) * val_counts / val_counts.mean()
    return w


def select_classwise(noisy: np.ndarray, best_ref: List[Optional[str]], predict) -> np.ndarray:
    """Indices i whose noisy label c = noisy[i] is predicted as c by the best model for class c.

    `predict(ref, idx)` returns that model's predictions for examples idx. Each model predicts only
    the classes it is best for, so every example is predicted once (as the official combinateModels)."""
    chosen = []
    for ref in dict.fromkeys(r for r in best_ref if r is not None):
        classes = [c for c, r in enumerate(best_ref) if r == ref]
        idx = np.flatnonzero(np.isin(noisy, classes))
        preds = predict(ref, idx)
        chosen.append(idx[preds == noisy[idx]])
    return np.sort(np.concatenate(chosen)) if chosen else np.empty(0, dtype=np.int64)


# --- the trial ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClothingData:
    index: ClothingIndex
    noisy_labels: torch.Tensor  # (N,) on the CPU
    clean_labels: torch.Tensor  # (N,), -1 where unknown: diagnostics only
    train_idx: torch.Tensor  # all N examples: Clothing1M's validation set is separate and clean
    val_labels: torch.Tensor
    test_labels: torch.Tensor
    realized_noise_rate: float  # on the training examples whose clean label is known
    label_hash: str


def load_pretrained(cfg: TrialConfig) -> Optional[dict]:
    """torchvision's ImageNet ResNet-50 state dict, from `pretrained_weights` or torchvision's store."""
    if not cfg.pretrained:
        return None
    if cfg.pretrained_weights:
        if not os.path.isfile(cfg.pretrained_weights):
            raise ConfigError(f"pretrained_weights file {cfg.pretrained_weights} not found; give the path of "
                              f"torchvision's resnet50 ImageNet weights (.pth), or set pretrained=false")
        state = torch.load(cfg.pretrained_weights, map_location="cpu", weights_only=True)
        return state.get("state_dict", state) if isinstance(state, dict) else state
    try:
        from torchvision.models import ResNet50_Weights

        return ResNet50_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
    except Exception as exc:
        raise DataError(f"could not fetch torchvision's ImageNet ResNet-50 weights ({type(exc).__name__}); "
                        f"download resnet50-0676ba61.pth where there is internet and pass "
                        f"pretrained_weights=PATH, or set pretrained=false") from None


class ClothingTrial(TrialBase):
    def __init__(self, cfg: TrialConfig, state: Optional[dict] = None, index: Optional[ClothingIndex] = None):
        super().__init__(cfg)
        self.pretrained = load_pretrained(cfg)  # a missing weights file fails here, before any training
        index = index if index is not None else data_mod.load(cfg.dataset, cfg.data_root, cfg.download)
        info = data_mod.DATASETS[cfg.dataset]
        noisy, clean = torch.from_numpy(index.train_noisy), torch.from_numpy(index.train_clean)
        known = clean >= 0
        # measurable only on the training images whose clean label the release gives; None (n/a) if none
        rate = float((noisy[known] != clean[known]).double().mean()) if known.any() else None
        digest = hashlib.blake2b(index.train_noisy.tobytes() + index.train_keys.tobytes(), digest_size=8)
        self.data = ClothingData(index, noisy, clean, torch.arange(len(noisy)), torch.from_numpy(index.val_labels),
                                 torch.from_numpy(index.test_labels), rate, digest.hexdigest())
        self.info = info
        self.engine = Engine(self.device, info.mean, info.std, 0, False, info.num_classes, cfg.batch_size,
                             cfg.eval_batch_size, cfg.precision, 0)  # autocast / channels_last only
        self.generator = torch.Generator().manual_seed(derive_seed(cfg.seed, 3))
        self.train_tf = transforms_for(cfg.image_size, True, info.mean, info.std)
        self.eval_tf = transforms_for(cfg.image_size, False, info.mean, info.std)
        self.val_counts = np.bincount(index.val_labels, minlength=info.num_classes).astype(np.float64)
        self.workers = cfg.num_workers if cfg.num_workers >= 0 else auto_workers(available_cpus())
        self.s = self._initial_state(inner=1, outer_epoch=0, round_best=0.0, best_scores=None, best_ref=None,
                                     stored={})
        if state is not None:
            self.load_state_dict(state)

    def _generator(self) -> torch.Generator:
        return self.generator

    def _sizes(self):
        return len(self.data.train_idx), len(self.data.val_labels), len(self.data.test_labels)

    def _state_device(self) -> torch.device:
        return torch.device("cpu")  # indices address files, and per-class best models wait on the CPU

    # --- loop -------------------------------------------------------------------------------
    def _round(self) -> Iterator[dict]:
        cfg, s = self.cfg, self.s
        if self._model is None:
            if s["model"] is not None:  # resuming
                self._model = self._fresh_model(s["outer"])
                self._model.load_state_dict(s["model"])
                self._optimizer = sgd(self._model, cfg.lr, cfg.momentum, cfg.weight_decay)
                self._optimizer.load_state_dict(s["optimizer"])
                s["model"] = s["optimizer"] = None
            else:  # a new outer loop: fresh pretrained network, optimizer, schedule and per-class bests
                self._model = self._fresh_model(s["outer"])
                self._optimizer = sgd(self._model, cfg.lr, cfg.momentum, cfg.weight_decay)
                s["outer_epoch"] = 0
                s["best_scores"] = torch.zeros(self.info.num_classes, dtype=torch.float64)
                s["best_ref"], s["stored"] = [None] * self.info.num_classes, {}
        if s["epoch"] == 0:
            s["round_best"] = 0.0
        noisy = self.data.noisy_labels
        weights = class_weights(np.bincount(noisy[s["train_idx"]].numpy(), minlength=self.info.num_classes),
                                self.val_counts)
        weight = torch.tensor(weights, dtype=torch.float32, device=self.device)
        while True:
            lr = lr_at(s["outer_epoch"], cfg.lr, cfg.lr_milestones, cfg.lr_gamma)
            for group in self._optimizer.param_groups:
                group["lr"] = lr
            loss, acc = self._train_epoch(s["train_idx"], weight)
            preds = self._predict(self.data.index.val_keys, self.data.index.val_labels)
            val_acc, recall, precision = per_class_stats(preds, self.data.val_labels, self.info.num_classes)
            s["epoch"] += 1
            s["step"] += 1
            s["outer_epoch"] += 1
            s["round_best"] = max(s["round_best"], val_acc)
            self._remember_class_bests(class_scores(recall, precision, cfg.beta))
            test_acc = None
            if val_acc > s["best_val"]:
                s["best_val"], s["best_stage"] = val_acc, STAGE if cfg.method == "memomentum" else "ce"
                test_preds = self._predict(self.data.index.test_keys, self.data.index.test_labels)
                s["best_test"] = test_acc = 100.0 * float((test_preds == self.data.test_labels).double().mean())
            over = s["epoch"] >= cfg.epochs_per_stage
            yield from self._epoch_records(over, lr=lr, train_loss=loss, train_acc=acc, val_score=val_acc,
                                           improved=test_acc is not None, test_acc=test_acc)
            if over:
                return

    def _remember_class_bests(self, scores: np.ndarray) -> None:
        s = self.s
        best = s["best_scores"].numpy()
        ref = str(s["step"])
        if update_best(best, s["best_ref"], scores, ref):  # kept on the CPU: up to one ResNet-50 per class
            s["stored"][ref] = {k: v.detach().to("cpu", copy=True) for k, v in self._model.state_dict().items()}
        s["best_scores"] = torch.from_numpy(best)
        live = set(r for r in s["best_ref"] if r is not None)
        s["stored"] = {k: v for k, v in s["stored"].items() if k in live}

    def _end_round(self) -> dict:
        cfg, s = self.cfg, self.s
        record = {"kind": "round", "outer": s["outer"], "inner": s["inner"], "stage": STAGE if cfg.method == "memomentum"
                  else "ce", "epochs": s["epoch"], "step": s["step"], **self._diagnostics(s["train_idx"]),
                  "val_score": s["round_best"], "stage_best": s["round_best"], "best_val_score": s["best_val"],
                  "test_acc": s["best_test"]}
        s["rounds"].append({k: v for k, v in record.items() if k != "kind"})
        if cfg.method == "memomentum":
            chosen = select_classwise(self.data.noisy_labels.numpy(), s["best_ref"], self._predict_with)
            s["train_idx"] = torch.from_numpy(chosen)
            if s["first_idx"] is None:
                s["first_idx"] = s["train_idx"]
        s["epoch"] = 0
        if s["inner"] < cfg.max_inner:
            s["inner"] += 1
        else:
            s["outer"], s["inner"] = s["outer"] + 1, 1
            s["done"] = s["outer"] > cfg.max_outer or cfg.method == "ce"
            s["stored"], s["best_ref"] = {}, None
            self._model = self._optimizer = None
        record["resumable"] = True
        return record

    # --- passes ------------------------------------------------------------------------------
    def _loader(self, keys, labels, transform, batch_size: int, shuffle: bool, seed: int):
        g = torch.Generator().manual_seed(seed)
        return torch.utils.data.DataLoader(
            JpegFolder(self.data.index.root, keys, labels, transform), batch_size=batch_size, shuffle=shuffle,
            num_workers=self.workers, generator=g, pin_memory=self.device.type == "cuda",
            persistent_workers=False)

    def _epoch_seed(self) -> int:
        return int(torch.randint(0, 2 ** 62, (1,), generator=self.generator))

    def _train_epoch(self, idx: torch.Tensor, weight: torch.Tensor) -> Tuple[float, float]:
        index = self.data.index
        seed = self._epoch_seed()
        sel = idx.numpy()
        loader = self._loader(index.train_keys[sel], index.train_noisy[sel], self.train_tf, self.cfg.batch_size,
                              True, seed)
        with torch.random.fork_rng(devices=[]):  # with 0 workers the transforms draw from the global RNG
            torch.manual_seed(seed)
            batches = ((self.engine.place(x), y.to(self.device, non_blocking=True)) for x, y in loader)
            return self.engine.fit_batches(self._model, self._optimizer, batches, weight)

    @torch.inference_mode()
    def _predict(self, keys, labels, model=None) -> torch.Tensor:
        model = model if model is not None else self._model
        model.eval()
        out = []
        for x, _ in self._loader(keys, labels, self.eval_tf, self.cfg.eval_batch_size, False, 0):
            with self.engine.autocast():
                out.append(model(self.engine.place(x)).argmax(1).cpu())
        return torch.cat(out) if out else torch.empty(0, dtype=torch.long)

    def _predict_with(self, ref: str, idx: np.ndarray) -> np.ndarray:
        scratch = self._fresh_model(self.s["outer"])
        scratch.load_state_dict(self.s["stored"][ref])
        index = self.data.index
        return self._predict(index.train_keys[idx], index.train_noisy[idx], scratch).numpy()

    def _fresh_model(self, outer: int):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.cfg.seed, 100 + outer))
            model = create_model(self.cfg.model, self.info.num_classes, 3)
        if self.pretrained is not None:
            backbone = {k: v for k, v in self.pretrained.items() if not k.startswith("fc.")}
            missing, unexpected = model.load_state_dict(backbone, strict=False)
            if unexpected or set(missing) - {"fc.weight", "fc.bias"}:
                raise ConfigError(f"pretrained_weights do not fit {self.cfg.model}: missing {sorted(missing)[:3]}, "
                                  f"unexpected {sorted(unexpected)[:3]}")
        model = self.engine.prepare_model(model)
        if self.cfg.compile:
            model.compile()
        return model
