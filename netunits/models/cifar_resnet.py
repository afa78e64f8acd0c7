"""The CIFAR ResNets of He et al. 2016 (section 4.2): a 3 x 3 stem of 16 channels, three stages of
16, 32 and 64 channels with n basic blocks each (ResNet20: n = 3), option-A shortcuts (stride-2
subsampling and zero-padded channels, no parameters), global average pooling and a linear head.

State-dict keys are those of akamaster/pytorch_resnet_cifar10 (conv1, bn1, layer1.0.conv1, ...),
whose released checkpoints, among them the ResNet20 that "Decomposing the Deep" analyses, load
unchanged once its head `linear` is read as `fc` (the registry's rename) and the DataParallel
prefix `module.` is dropped. The pooling is a module (`avgpool`), so hooks can name it.
"""
import torch
import torch.nn.functional as F
from torch import nn


class PadShortcut(nn.Module):
    """Option A: every other pixel, and the new channels zero-padded equally on both sides."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.pad = channels // 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad), "constant", 0)


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = PadShortcut(channels) if stride != 1 or in_channels != channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, blocks_per_stage: int, n_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        stages, in_channels = [], 16
        for channels, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for index in range(blocks_per_stage):
                blocks.append(BasicBlock(in_channels, channels, stride if index == 0 else 1))
                in_channels = channels
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(64, n_classes)
        for module in self.modules():           # akamaster's initialisation
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.avgpool(x).flatten(1))


def cifar_resnet(depth: int) -> CifarResNet:
    """ResNet-depth for CIFAR: depth = 6 n + 2 (20, 32, 44, 56, 110)."""
    return CifarResNet((depth - 2) // 6)
