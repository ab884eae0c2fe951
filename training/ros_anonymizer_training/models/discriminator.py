"""Face discriminator D: an identity classifier in the style of SphereFace-20, with a cosine-margin head.

SphereFace-20 (Liu et al., CVPR 2017) on aligned 112x96 faces: four stages of
a stride-2 3x3 conv followed by 1, 2, 4, 1 residual units, PReLU, then a
512-d embedding. The margin head is CosFace's additive cosine margin rather
than A-Softmax's multiplicative angle: same goal (identities separated by an
angular margin), no annealing schedule, stable from the first step.
`edge` uses the same code with fewer channels and units on smaller input.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _Unit(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1), nn.PReLU(channels),
                                  nn.Conv2d(channels, channels, 3, 1, 1), nn.PReLU(channels))

    def forward(self, x):
        return x + self.body(x)


class FaceDiscriminator(nn.Module):
    """faces [N,3,H,W] in [-1, 1] -> L2-normalised embeddings; `logits` gives cosine-margin class scores."""

    def __init__(self, num_classes: int, channels=(64, 128, 256, 512), units=(1, 2, 4, 1),
                 input_size=(112, 96), embedding: int = 512, scale: float = 30.0, margin: float = 0.35):
        super().__init__()
        layers, cin = [], 3
        for cout, n in zip(channels, units):
            layers += [nn.Conv2d(cin, cout, 3, 2, 1), nn.PReLU(cout)] + [_Unit(cout) for _ in range(n)]
            cin = cout
        self.features = nn.Sequential(*layers)
        h, w = input_size
        for _ in channels:
            h, w = (h + 1) // 2, (w + 1) // 2
        self.embed = nn.Linear(cin * h * w, embedding)
        self.weight = nn.Parameter(torch.randn(num_classes, embedding) * 0.01)
        self.input_size = tuple(input_size)
        self.scale, self.margin = scale, margin

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.embed(self.features(faces).flatten(1)), dim=1)

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of each embedding to each identity's centre, [N, classes]."""
        return embeddings @ F.normalize(self.weight, dim=1).t()

    def margin_logits(self, cosine: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """CosFace logits s * (cos - m * onehot): training D to separate identities by a margin."""
        return self.scale * (cosine - self.margin * F.one_hot(labels, cosine.shape[1]).to(cosine.dtype))


def to_discriminator_input(faces: torch.Tensor, input_size) -> torch.Tensor:
    """Square face crops -> D's input: centre crop to D's aspect ratio, then resize (112x96 for `paper`)."""
    h, w = input_size
    size = faces.shape[-1]
    crop_w = round(size * w / h)
    left = (size - crop_w) // 2
    faces = faces[..., :, left:left + crop_w]
    if faces.shape[-2:] != (h, w):
        faces = F.interpolate(faces, size=(h, w), mode="bilinear", align_corners=False, antialias=False)
    return faces


def build_discriminator(cfg, num_classes: int) -> FaceDiscriminator:
    return FaceDiscriminator(num_classes, cfg.d_channels, cfg.d_units, cfg.d_input, cfg.d_embedding, cfg.margin_scale, cfg.margin)
