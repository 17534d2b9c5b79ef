"""ResNet-50 in plain torch, layer for layer the torchvision architecture (v1.5: stride on the 3x3).

Bottleneck blocks [3, 4, 6, 3], expansion 4; at width 1.0 and 1000 classes it has 25,557,032
parameters, like torchvision.models.resnet50(). ``width`` scales every stage's channel count (the
depth and block structure stay), so CPU runs can use a narrow net of the same shape.
"""
from __future__ import annotations

import torch
from torch import nn

STAGE_BLOCKS = (3, 4, 6, 3)
EXPANSION = 4


def _channels(base: int, width: float) -> int:
    return max(1, int(round(base * width)))


class Bottleneck(nn.Module):
    def __init__(self, in_ch: int, mid_ch: int, stride: int, downsample: nn.Module | None) -> None:
        super().__init__()
        out_ch = mid_ch * EXPANSION
        self.conv1 = nn.Conv2d(in_ch, mid_ch, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_ch)
        self.conv2 = nn.Conv2d(mid_ch, mid_ch, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid_ch)
        self.conv3 = nn.Conv2d(mid_ch, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet50(nn.Module):
    def __init__(self, num_classes: int = 1000, width: float = 1.0) -> None:
        super().__init__()
        stem = _channels(64, width)
        self.conv1 = nn.Conv2d(3, stem, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_ch = stem
        stages = []
        for i, blocks in enumerate(STAGE_BLOCKS):
            mid = _channels(64 * 2**i, width)
            stride = 1 if i == 0 else 2
            layers = []
            for b in range(blocks):
                s = stride if b == 0 else 1
                down = None
                if s != 1 or in_ch != mid * EXPANSION:
                    down = nn.Sequential(
                        nn.Conv2d(in_ch, mid * EXPANSION, 1, stride=s, bias=False),
                        nn.BatchNorm2d(mid * EXPANSION),
                    )
                layers.append(Bottleneck(in_ch, mid, s, down))
                in_ch = mid * EXPANSION
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))
