"""ResNet18 exactly as torchvision builds it, without importing torchvision.

Why: `import torchvision` pulls in torch._dynamo and sympy through torchvision.ops (about
1.4 s and 85 MiB per process here), and most stages never build a model. This file is
torchvision's resnet18 (torchvision/models/resnet.py: BasicBlock, [2, 2, 2, 2]) cut down to
what resnet18 uses: same modules, same state-dict keys, same forward. Modules are created in
torchvision's order and initialised the same way, so the same seed gives bit-identical
initial weights; tests/test_resnet.py checks weights, outputs and gradients against
torchvision itself.

One change to the stem saves training memory and changes no bit (tested, fp64 and bf16): the
ReLU comes after the max-pool instead of before (max-pooling commutes with ReLU, which is
monotone, and the gradient reaches the same positions), so the ReLU runs on a quarter of the
values, and with netunits.accel's max-pool, which keeps only its indices, the pool's input is
not kept for the backward pass.
"""
import torch
from torch import nn

TORCHVISION_CLASSES = 1000


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, channels: int, stride: int, downsample: nn.Module | None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x if self.downsample is None else self.downsample(x)
        return self.relu(out)


def _stage(in_channels, channels, stride):
    downsample = None
    if stride != 1 or in_channels != channels:
        # created before the block, as torchvision does: its default initialisation draws random
        # numbers, and the order of draws decides every later weight
        downsample = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride, bias=False), nn.BatchNorm2d(channels))
    return nn.Sequential(BasicBlock(in_channels, channels, stride, downsample),
                         BasicBlock(channels, channels, 1, None))


class ResNet18(nn.Module):
    def __init__(self, n_classes: int = TORCHVISION_CLASSES) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = _stage(64, 64, 1)
        self.layer2 = _stage(64, 128, 2)
        self.layer3 = _stage(128, 256, 2)
        self.layer4 = _stage(256, 512, 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        # torchvision's default 1000-way head; build_model replaces it, and drawing its initial
        # values here keeps the random stream where torchvision leaves it
        self.fc = nn.Linear(512, n_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.constant_(module.weight, 1)
                nn.init.constant_(module.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # torchvision: maxpool(relu(bn1(conv1(x)))); the same values, see the module docstring
        x = self.relu(self.maxpool(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18() -> ResNet18:
    """torchvision.models.resnet18(weights=None): 1000 classes, random initial weights."""
    return ResNet18(TORCHVISION_CLASSES)
