"""Anonymizer M: the ResNet generator of Ren, Lee & Ryoo (ECCV 2018), one code path for every preset.

`paper`: 256x256 crops, 64 channels, 9 residual blocks (the authors' network).
`edge`: 64x64 crops, 32 channels, 3 blocks (real time on a Jetson, trainable on a CPU).
Only Conv, ConvTranspose, InstanceNorm, ReLU, Tanh and reflection Pad are
used, so the ONNX graph parses in TensorRT.
"""
from __future__ import annotations

import torch
from torch import nn


def _conv_block(cin: int, cout: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    pad = kernel // 2
    layers: list[nn.Module] = [nn.ReflectionPad2d(pad)] if stride == 1 and pad else []
    layers += [nn.Conv2d(cin, cout, kernel, stride, padding=0 if stride == 1 else pad),
               nn.InstanceNorm2d(cout, affine=True), nn.ReLU(inplace=True)]
    return layers


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels, affine=True), nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels, affine=True),
        )

    def forward(self, x):
        return x + self.body(x)


class Anonymizer(nn.Module):
    """faces [N,3,S,S] in [-1, 1] -> anonymized faces, same shape and range."""

    def __init__(self, channels: int = 64, blocks: int = 9):
        super().__init__()
        c = channels
        layers = _conv_block(3, c, 7) + _conv_block(c, 2 * c, 3, 2) + _conv_block(2 * c, 4 * c, 3, 2)
        layers += [ResidualBlock(4 * c) for _ in range(blocks)]
        for cin, cout in ((4 * c, 2 * c), (2 * c, c)):
            layers += [nn.ConvTranspose2d(cin, cout, 3, 2, padding=1, output_padding=1),
                       nn.InstanceNorm2d(cout, affine=True), nn.ReLU(inplace=True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(c, 3, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        return self.net(faces)


def build_anonymizer(cfg) -> Anonymizer:
    return Anonymizer(cfg.m_channels, cfg.m_blocks)
