"""The standard input pipeline of the official Me-Momentum code, rebuilt for side-by-side timing.

What it does, as the official main.py / common/tools.py do:
- each example goes through PIL (`Image.fromarray`) and torchvision transforms (RandomCrop with
  padding, RandomHorizontalFlip, ToTensor, Normalize) inside DataLoader worker processes;
- the training loop reads `loss.item()` and a top-k accuracy every step;
- the validation score counts per class with a Python loop over every sample;
- prediction (the extraction pass) runs in eval mode but without `no_grad` / `inference_mode`,
  and moves every batch's predictions to the CPU as it goes.
Only the input pipeline and the passes differ from memomentum.engine; model, optimiser and batch
sizes are the same, so any time difference is overhead.
"""
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms


class ArrayDataset(Dataset):
    """Images as the official code holds them: uint8 HWC (or HW) numpy arrays, one PIL image per item."""

    def __init__(self, images_nchw: torch.Tensor, labels: torch.Tensor, transform):
        array = images_nchw.permute(0, 2, 3, 1).numpy()
        self.images = array[..., 0] if array.shape[-1] == 1 else array
        self.labels = labels.numpy()
        self.transform = transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def official_transforms(mean, std, crop_padding: int, flip: bool, size: int, augment: bool):
    steps = []
    if augment and crop_padding:
        steps.append(transforms.RandomCrop(size, padding=crop_padding))
    if augment and flip:
        steps.append(transforms.RandomHorizontalFlip())
    steps += [transforms.ToTensor(), transforms.Normalize(mean, std)]
    return transforms.Compose(steps)


def loader(images, labels, transform, batch_size: int, shuffle: bool, workers: int, device) -> DataLoader:
    return DataLoader(ArrayDataset(images, labels, transform), batch_size=batch_size, shuffle=shuffle,
                      num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=False)


def train_epoch(model, optimizer, train_loader, device):
    model.train()
    losses, correct, seen = 0.0, 0.0, 0
    for images, labels in train_loader:
        images, labels = images.to(device), labels.to(device)
        logits = model(images)
        loss = F.cross_entropy(logits, labels)
        correct += (logits.topk(1, 1)[1].squeeze(1) == labels).float().sum().item()  # per-step sync
        losses += loss.item() * len(labels)
        seen += len(labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return losses / seen, 100.0 * correct / seen


def val_score(model, val_loader, num_classes: int, device) -> float:
    class_correct, class_total = np.zeros(num_classes), np.zeros(num_classes)
    model.eval()
    with torch.no_grad():
        for images, labels in val_loader:
            images, labels = images.to(device), labels.to(device)
            pred = F.softmax(model(images), dim=1).max(1)[1]
            for i in range(labels.size(0)):  # the official per-sample loop
                class_total[labels[i]] += 1
                if pred[i] == labels[i]:
                    class_correct[labels[i]] += 1
    present = class_total > 0
    return round(float(np.average(100 * class_correct[present] / class_total[present])), 2)


def predict(model, predict_loader, device) -> np.ndarray:
    model.eval()
    preds = np.array([])
    for images, _ in predict_loader:  # no no_grad: autograd records every forward
        logits = model(images.to(device))
        pred = F.softmax(logits, dim=1).max(1)[1]
        preds = np.concatenate((preds, pred.to("cpu", torch.int).numpy()), axis=0)
    return preds.astype(int)
