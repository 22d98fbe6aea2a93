"""CIFAR ResNets (He et al. 2016, section 4.2) with group normalisation instead of batch norm."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fedsim.errors import check
from fedsim.models.lenet import image_channels

STAGE_WIDTHS = (16, 32, 64)


class ZeroPadShortcut(nn.Module):
    """He et al.'s option-A shortcut: subsample by ``stride``, append zero channels.

    Parameter-free, so a ResNet has the paper's parameter count (0.27M for ResNet-20).
    """

    def __init__(self, extra_channels: int, stride: int) -> None:
        super().__init__()
        self.extra_channels, self.stride = extra_channels, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[..., :: self.stride, :: self.stride], (0, 0, 0, 0, 0, self.extra_channels))


class BasicBlock(nn.Module):
    """``conv 3x3 -> GN -> ReLU -> conv 3x3 -> GN``, plus the shortcut, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, groups: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(groups, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(groups, out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = ZeroPadShortcut(out_channels - in_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        return F.relu(self.norm2(self.conv2(out)) + self.shortcut(x))


def cifar_resnet(
    input_shape: Sequence[int], num_classes: int, blocks_per_stage: int, groups: int, name: str
) -> nn.Module:
    """ResNet-(6n+2) for CIFAR: a 3x3 stem, three stages of n blocks, global average pool, FC.

    The stages have 16, 32 and 64 channels; the second and third halve the resolution.
    """
    channels = image_channels(input_shape, name)
    check(
        groups >= 1 and STAGE_WIDTHS[0] % groups == 0,
        f"model.groups={groups} must divide {STAGE_WIDTHS[0]}",
    )
    layers: list[nn.Module] = [
        nn.Conv2d(channels, STAGE_WIDTHS[0], 3, padding=1, bias=False),
        nn.GroupNorm(groups, STAGE_WIDTHS[0]),
        nn.ReLU(),
    ]
    in_channels = STAGE_WIDTHS[0]
    for stage, width in enumerate(STAGE_WIDTHS):
        for block in range(blocks_per_stage):
            stride = 2 if stage > 0 and block == 0 else 1
            layers.append(BasicBlock(in_channels, width, stride, groups))
            in_channels = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_channels, num_classes)]
    return nn.Sequential(*layers)


def resnet8(input_shape: Sequence[int], num_classes: int, groups: int = 2) -> nn.Module:
    """ResNet-8 (one block per stage), GroupNorm of ``groups`` groups; 75,290 parameters."""
    return cifar_resnet(input_shape, num_classes, 1, groups, "resnet8")


def resnet20(input_shape: Sequence[int], num_classes: int, groups: int = 2) -> nn.Module:
    """ResNet-20 (three blocks per stage), GroupNorm of ``groups`` groups; 269,722 parameters."""
    return cifar_resnet(input_shape, num_classes, 3, groups, "resnet20")
