"""Network registry: name -> constructor(num_classes, in_channels) (SPEC §1 table).

`create_model("resnet18", 10, 3)`; an unknown name raises an error listing the valid ones.
"""
import os
from typing import Callable, Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from memomentum.errors import ConfigError, DataError, unknown


class LeNet(nn.Module):
    """LeNet-5 style net of the official MNIST runs: conv 6@5x5 pad 2, pool, conv 16@5x5, pool, FC 400-120-84-C."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(400, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class DigitsNet(nn.Module):
    """Small CNN for the embedded 8x8 digits: conv 16@3x3, conv 32@3x3, pool, FC 512-64-C."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet for 32x32 inputs: 3x3 stem, no max-pool, four stages of BasicBlocks, global average pool.

    As in the official code the stem convolution has NO padding (32x32 -> 30x30 maps); that is the
    network behind the published numbers."""

    def __init__(self, blocks, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, padding=0, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        stages, in_planes = [], 64
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), blocks)):
            layers = []
            for stride in [1 if i == 0 else 2] + [1] * (n - 1):
                layers.append(BasicBlock(in_planes, planes, stride))
                in_planes = planes
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


def resnet50(num_classes: int = 14, in_channels: int = 3) -> nn.Module:
    """torchvision's ImageNet ResNet-50 with a new C-way head (Clothing1M)."""
    import torchvision

    model = torchvision.models.resnet50(weights=None)
    if in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


MODELS: Dict[str, Callable[..., nn.Module]] = {
    "lenet": LeNet,
    "digitsnet": DigitsNet,
    "resnet18": lambda num_classes=10, in_channels=3: CifarResNet((2, 2, 2, 2), num_classes, in_channels),
    "resnet34": lambda num_classes=10, in_channels=3: CifarResNet((3, 4, 6, 3), num_classes, in_channels),
    "resnet50": resnet50,
}

# The "deep head" and the "last layer" of each network by module name, for methods that re-initialise them (PES,
# SPEC §8.4: layer4 + linear, then linear, of the CIFAR ResNets). The fully connected layers of the small networks
# are the project's choice (P), as no reference re-initialises them.
HEADS = {"resnet18": (("layer4", "linear"), ("linear",)), "resnet34": (("layer4", "linear"), ("linear",)),
         "resnet50": (("layer4", "fc"), ("fc",)), "lenet": (("fc1", "fc2", "fc3"), ("fc3",)),
         "digitsnet": (("fc1", "fc2"), ("fc2",))}

# Input shape (C, H, W) each network is built for; used by the registry-driven tests and benchmarks.
INPUT_SHAPES = {"lenet": (1, 28, 28), "digitsnet": (1, 8, 8), "resnet18": (3, 32, 32),
                "resnet34": (3, 32, 32), "resnet50": (3, 64, 64)}


# CPU threads a trial of this network uses by default where no CPU share is reserved for it (`python -m memomentum`;
# memomentum/threads.py): the small networks run on one thread, since one trial with every core runs 4-7x slower
# beside a second one, while one thread loses nothing there (benchmarks/RESULTS.md "CPU threads per trial").
# A network not listed uses the CPUs the process may run on.
DEFAULT_THREADS = {"lenet": 1, "digitsnet": 1}


def create_model(name: str, num_classes: int, in_channels: int) -> nn.Module:
    if name not in MODELS:
        raise ConfigError(unknown("model", name, MODELS))
    return MODELS[name](num_classes=num_classes, in_channels=in_channels)


# torchvision's ImageNet weights for the networks that have them (`pretrained: true`)
IMAGENET_WEIGHTS = {"resnet50": ("ResNet50_Weights", "resnet50-0676ba61.pth")}


def load_pretrained(pretrained: bool, weights_path: str, name: str) -> Optional[dict]:
    """ImageNet state dict for network `name`: from `weights_path`, else from torchvision's store
    (which downloads); None when not `pretrained`. A missing file fails here, before any training."""
    if not pretrained:
        return None
    if name not in IMAGENET_WEIGHTS:
        raise ConfigError(f"pretrained=true, but there are no ImageNet weights for model {name!r} "
                          f"(only for {', '.join(IMAGENET_WEIGHTS)}); set pretrained=false")
    weights_class, file_name = IMAGENET_WEIGHTS[name]
    if weights_path:
        if not os.path.isfile(weights_path):
            raise ConfigError(f"pretrained_weights file {weights_path} not found; give the path of "
                              f"torchvision's {name} ImageNet weights ({file_name}), or set pretrained=false")
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        return state.get("state_dict", state) if isinstance(state, dict) else state
    try:
        import torchvision.models

        return getattr(torchvision.models, weights_class).IMAGENET1K_V1.get_state_dict(progress=False)
    except Exception as exc:
        raise DataError(f"could not fetch torchvision's ImageNet {name} weights ({type(exc).__name__}); "
                        f"download {file_name} where there is internet and pass pretrained_weights=PATH, "
                        f"or set pretrained=false") from None


def load_backbone(model: nn.Module, state: dict, name: str) -> None:
    """Every ImageNet weight but the classifier head (`fc`), which keeps its fresh init."""
    backbone = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = model.load_state_dict(backbone, strict=False)
    if unexpected or set(missing) - {"fc.weight", "fc.bias"}:
        raise ConfigError(f"pretrained_weights do not fit {name}: missing {sorted(missing)[:3]}, "
                          f"unexpected {sorted(unexpected)[:3]}")
