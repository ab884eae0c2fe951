"""Realism discriminator R: a PatchGAN (pix2pix, Isola et al. 2017) that tells real face crops from M's blended outputs.

Each output cell judges one receptive field (about 22x22 pixels of a 64x64
crop), so R looks at local texture and parts (eyes, mouth, skin, the blend
seam) rather than identity; M learns from it to paint plausible detail. R is
a training-only network: it is never exported and never used as a judge.
"""
from __future__ import annotations

import torch
from torch import nn


class PatchDiscriminator(nn.Module):
    """faces [N,3,S,S] in [-1, 1] -> realism scores [N,1,S/8,S/8] (unbounded: LSGAN targets 1 real, 0 fake)."""

    def __init__(self, channels: int = 32, layers: int = 3):
        super().__init__()
        modules: list[nn.Module] = [nn.Conv2d(3, channels, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        c = channels
        for _ in range(layers - 1):
            modules += [nn.Conv2d(c, 2 * c, 4, 2, 1), nn.InstanceNorm2d(2 * c, affine=True), nn.LeakyReLU(0.2, inplace=True)]
            c *= 2
        modules += [nn.Conv2d(c, 1, 3, 1, 1)]
        self.net = nn.Sequential(*modules)

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        return self.net(faces)


def build_realism(cfg) -> PatchDiscriminator:
    return PatchDiscriminator(cfg.r_channels, cfg.r_layers)
