"""ResNet-50 is the torchvision architecture; the width knob keeps its structure."""
from __future__ import annotations

import torch

from trainscale.workloads.resnet import STAGE_BLOCKS, Bottleneck, ResNet50


def count(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_full_resnet50_has_torchvision_parameter_count():
    assert count(ResNet50(num_classes=1000, width=1.0)) == 25_557_032


def test_stage_layout_is_3_4_6_3_bottlenecks_at_any_width():
    for width in (1.0, 0.25, 0.125):
        m = ResNet50(num_classes=10, width=width)
        stages = [m.layer1, m.layer2, m.layer3, m.layer4]
        assert [len(s) for s in stages] == list(STAGE_BLOCKS)
        assert all(isinstance(b, Bottleneck) for s in stages for b in s)
        convs = [x for x in m.modules() if isinstance(x, torch.nn.Conv2d)]
        assert len(convs) == 1 + 3 * 16 + 4  # stem, 3 per bottleneck, 4 projection shortcuts
        assert m.fc.in_features == int(round(512 * width)) * 4


def test_forward_shape_and_downsampling():
    m = ResNet50(num_classes=7, width=0.125).eval()
    with torch.no_grad():
        assert m(torch.randn(2, 3, 64, 64)).shape == (2, 7)
        assert m(torch.randn(1, 3, 224, 224)).shape == (1, 7)
