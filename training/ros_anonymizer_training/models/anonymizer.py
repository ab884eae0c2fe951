"""Anonymizer M: two generators behind one contract (faces [N,3,S,S] in [-1, 1] in, same out).

`Anonymizer` is the ResNet generator of Ren, Lee & Ryoo (ECCV 2018), as in
its pix2pix/CycleGAN lineage: `paper` uses the authors' network (256x256
crops, 64 channels, 9 residual blocks, transposed-convolution upsampling).
`upsample: resize` swaps the transposed convolutions for nearest-neighbour
resize then convolution, which cannot paint the checkerboard that a
stride-2 transposed convolution leaves (Odena et al., Distill 2016).

`LowPassAnonymizer` (the `edge` preset) sees only an area-downsampled copy
of the crop (`m_input_size`, 8x8 for edge): the identity-bearing detail is
gone before the network starts, the face's position, pose, colour and
lighting remain, and the network (trained against the realism and identity
discriminators) paints new, plausible detail on top of the upsampled
low-pass image. So the output is a face by construction of the game, not a
copy of the person, and it costs a fraction of the ResNet's compute. With
`m_landmarks` it also takes the detector's five landmarks (eyes, nose tip,
mouth corners) as Gaussian maps at every upsampling stage, as DeepPrivacy
conditions on keypoints: the pose and the mouth's shape, which a 4x4 copy
cannot carry, without the detail that identifies. With `landmark_shape:
pose` the points M uses are a fixed template face placed where the
person's points are (their similarity fit: place, size, roll) with the nose
and mouth moved sideways as far as the person's nose is (yaw): the pose
reaches M, the person's own proportions (eye distance, nose length, mouth
width), which a recognizer can use, do not. `landmark_shape: turn` goes one step
further: the template sits at the training faces' mean height and size in
the crop, and only its sideways place, roll and yaw are the person's. The
height of a face's points in its detector box and their spread repeat
across one person's photos (probe-gallery correlation 0.34 and 0.32 on the
hold-out people), the sideways place, roll and yaw do not (-0.03 to -0.02):
the first two are the face's proportions, the rest is pose.

Only Conv, ConvTranspose, InstanceNorm, ReLU, Tanh, reflection Pad, Add,
AveragePool, Resize and Clip are used (the landmark maps add Slice and
elementwise Sub, Mul, Exp and a comparison; the pose fit adds Div, and Sqrt for `turn`), so the ONNX graph parses in TensorRT.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# A generic face's 5 points (eyes, nose tip, mouth corners; x, y): the ArcFace
# alignment template (Deng et al., CVPR 2019), divided by its 112-pixel side.
FACE_TEMPLATE = ((38.2946, 51.6963), (73.5318, 51.5014), (56.0252, 71.7366), (41.5493, 92.3655), (70.7299, 92.2041))
YAW_WEIGHTS = (0.0, 0.0, 1.0, 0.5, 0.5)  # how far each template point follows the nose sideways
# The template's centre height and size (|z| of the fit) under `landmark_shape: turn`: the means over
# the 3,467 training-split LFW crops cut by the runtime (CenterFace box x1.3); the spreads are 0.021 and 0.036.
TURN_HEIGHT, TURN_SIZE = 0.553, 0.785
_TEMPLATE = torch.tensor(FACE_TEMPLATE) / 112.0
TEMPLATE_CENTRED = (_TEMPLATE - _TEMPLATE.mean(0)).tolist()  # q in the similarity fit, and its squared norm
TEMPLATE_NORM = sum(x * x + y * y for x, y in TEMPLATE_CENTRED)


def _conv_block(cin: int, cout: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    pad = kernel // 2
    layers: list[nn.Module] = [nn.ReflectionPad2d(pad)] if stride == 1 and pad else []
    layers += [nn.Conv2d(cin, cout, kernel, stride, padding=0 if stride == 1 else pad),
               nn.InstanceNorm2d(cout, affine=True), nn.ReLU(inplace=True)]
    return layers


def _up_block(cin: int, cout: int, upsample: str) -> list[nn.Module]:
    """Double the resolution: transposed conv (the authors') or nearest resize + 3x3 conv (no checkerboard)."""
    if upsample == "transpose":
        return [nn.ConvTranspose2d(cin, cout, 3, 2, padding=1, output_padding=1), nn.InstanceNorm2d(cout, affine=True), nn.ReLU(inplace=True)]
    return [nn.Upsample(scale_factor=2, mode="nearest")] + _conv_block(cin, cout, 3)


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
    """The authors' ResNet generator: faces [N,3,S,S] in [-1, 1] -> anonymized faces, same shape and range."""

    def __init__(self, channels: int = 64, blocks: int = 9, upsample: str = "transpose"):
        super().__init__()
        c = channels
        layers = _conv_block(3, c, 7) + _conv_block(c, 2 * c, 3, 2) + _conv_block(2 * c, 4 * c, 3, 2)
        layers += [ResidualBlock(4 * c) for _ in range(blocks)]
        for cin, cout in ((4 * c, 2 * c), (2 * c, c)):
            layers += _up_block(cin, cout, upsample)
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(c, 3, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, faces: torch.Tensor, landmarks: torch.Tensor | None = None) -> torch.Tensor:
        """`landmarks` are not used: the authors' M sees the whole crop."""
        return self.net(faces)


class LowPassAnonymizer(nn.Module):
    """Paints a face over the crop's low-pass copy; nothing finer than `input_size` reaches the network.

    crop S -> average pool to input_size -> (bilinear resize to grid_size) ->
    conv + one stride-2 stage -> residual blocks at grid_size/2 -> resize-conv
    stages back to S (channels halving, at least `channels // 2`) -> 3x3 conv
    to a residual added to the bilinear upsampling of the low-pass input,
    clipped to [-1, 1]. A grid finer than the input keeps the network of a
    finer-input M, so a coarser M can start from its weights.

    With `expression` K > 0, M also reads K numbers in [-1, 1] from the
    full-resolution crop (a small encoder, pooled over the face) and each
    paints a learned pattern into every stage: meant to say how the face
    looks now (mouth, eyes), which the low-pass copy cannot; measured, what
    two such numbers gained (and leaked) came from the fixed part of their
    painting, not from what they read (model report, "The identity term on
    the reader").
    """

    def __init__(self, crop_size: int = 64, input_size: int = 8, channels: int = 32, blocks: int = 2, grid_size: int = 0,
                 landmarks: bool = False, landmark_sigma: float = 0.05, landmark_step: float = 0.0,
                 landmark_shape: str = "person", expression: int = 0):
        super().__init__()
        self.pool = crop_size // input_size
        self.grid = grid_size or input_size
        self.grid_scale = self.grid / input_size
        c = channels * 4  # widest at the bottleneck, where it costs least
        layers = _conv_block(3, c // 2, 3) + _conv_block(c // 2, c, 3, 2) + [ResidualBlock(c) for _ in range(blocks)]
        size, width = self.grid // 2, c
        self.stage_ends, widths = {}, []  # the last layer of each resize-conv stage (where landmark maps join) -> its side
        while size < crop_size:
            out = max(width // 2, channels // 2)
            layers += _up_block(width, out, "resize")
            self.stage_ends[len(layers) - 1] = size * 2
            widths.append(out)
            size, width = size * 2, out
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(width, 3, 3)]
        self.net = nn.Sequential(*layers)
        self.landmark_sigma, self.landmark_step, self.landmark_shape = landmark_sigma, landmark_step, landmark_shape
        # One 3x3 conv per stage from the 5 landmark maps, zero at the start: M begins as the M without landmarks.
        self.landmark_heads = nn.ModuleList(nn.Conv2d(5, w, 3, padding=1) for w in widths) if landmarks else None
        for head in self.landmark_heads or ():
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        # The expression numbers: three stride-2 stages to an 8th of the crop, K channels, averaged over the face, tanh.
        # Their patterns, one per number and stage, start at zero: M begins as the M without them.
        self.expression_pool = crop_size // 8
        self.expression_encoder = nn.Sequential(*_conv_block(3, 16, 3, 2), *_conv_block(16, 32, 3, 2), *_conv_block(32, 32, 3, 2),
                                                nn.Conv2d(32, expression, 1)) if expression else None
        self.expression_patterns = nn.ParameterList(nn.Parameter(torch.zeros(1, w, side, side)) for w, side
                                                    in zip(widths, self.stage_ends.values()) for _ in range(expression))
        self.expressions = expression

    @torch.no_grad()
    def scale_detail(self, factor: float) -> None:
        """Multiply the painted residual by `factor` (folded into the last conv, so the graph keeps its ops).

        Below 1 the output leans towards the low-pass copy: less painted
        detail, so less that a recognizer can latch on to, and less that a
        detector can find; the trade-off knob measured in the model report.
        """
        last = self.net[-1]
        last.weight.mul_(factor)
        last.bias.mul_(factor)

    @staticmethod
    def pose_fit(landmarks: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """[N,10] points -> their pose as [N,1] each: centre cx, cy; scale and rotation a, b; yaw (the nose's sideways offset).

        The fit is closed-form in complex numbers (scale and rotation
        z = a + ib = sum(conj(q) p) / sum(|q|^2) over the centred template q
        and points p); sums over the five points are slices and adds, so the
        graph keeps to the ops TensorRT's parser takes (export.ALLOWED_OPS).
        An unknown face (-1 rows) gets a finite fit.
        """
        def total(t):
            return t[:, 0:1] + t[:, 1:2] + t[:, 2:3] + t[:, 3:4] + t[:, 4:5]

        q = landmarks.new_tensor(TEMPLATE_CENTRED)
        qx, qy = q[:, 0], q[:, 1]
        px, py = landmarks[:, 0::2], landmarks[:, 1::2]
        cx, cy = total(px) * 0.2, total(py) * 0.2
        px, py = px - cx, py - cy
        a, b = total(qx * px + qy * py) / TEMPLATE_NORM, total(qx * py - qy * px) / TEMPLATE_NORM
        # The nose in the template's frame (z^-1 p) and its sideways offset from the template's nose: the yaw.
        nose_x = (a * px[:, 2:3] + b * py[:, 2:3]) / (a * a + b * b + 1e-6)
        return cx, cy, a, b, nose_x - TEMPLATE_CENTRED[2][0]

    @staticmethod
    def pose_points(landmarks: torch.Tensor, proportions: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """[N,10] points -> x, y [N,5]: the template face placed by their similarity fit, nose and mouth shifted by their yaw.

        Without `proportions` the fit keeps only its sideways place and its
        roll; the height and size are TURN_HEIGHT and TURN_SIZE for everyone.
        """
        cx, cy, a, b, yaw = LowPassAnonymizer.pose_fit(landmarks)
        q = landmarks.new_tensor(TEMPLATE_CENTRED)
        qx, qy = q[:, 0], q[:, 1]
        shifted_x = qx + yaw * landmarks.new_tensor(YAW_WEIGHTS)
        if not proportions:
            size = torch.sqrt(a * a + b * b) + 1e-6
            a, b, cy = a * TURN_SIZE / size, b * TURN_SIZE / size, cy * 0 + TURN_HEIGHT  # a constant in the graph's ops (Mul, Add)
        return cx + a * shifted_x - b * qy, cy + b * shifted_x + a * qy

    def points(self, landmarks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[N,10] points in the crop (0..1; -1: unknown) -> the x, y [N,5] M puts its maps at, and which points are known.

        With a `landmark_step`, each point is first rounded to that grid (in
        crop units): where the eyes and mouth are survives, the fine geometry
        between them (eye distance, mouth width), which identifies, less so.
        With `landmark_shape: pose`, a template face takes their place; with
        `turn`, one at everyone's height and size.
        """
        known = (landmarks[:, 0::2] >= 0).to(landmarks.dtype)
        if self.landmark_step:
            landmarks = torch.round(landmarks / self.landmark_step) * self.landmark_step
        if self.landmark_shape in ("pose", "turn"):
            x, y = self.pose_points(landmarks, proportions=self.landmark_shape == "pose")
        else:
            x, y = landmarks[:, 0::2], landmarks[:, 1::2]
        return x, y, known

    def landmark_maps(self, points: tuple[torch.Tensor, torch.Tensor, torch.Tensor], size: int) -> torch.Tensor:
        """`points` (x, y, known) -> [N,5,size,size] Gaussian maps, all zero for an unknown point."""
        return point_maps(*points, size, self.landmark_sigma)

    def expression(self, faces: torch.Tensor) -> torch.Tensor:
        """[N,K,1,1] in [-1, 1]: the numbers M reads off the full-resolution crop."""
        return torch.tanh(F.avg_pool2d(self.expression_encoder(faces), self.expression_pool))

    def forward(self, faces: torch.Tensor, landmarks: torch.Tensor | None = None) -> torch.Tensor:
        """With landmark heads, `landmarks` [N,10] (CenterFace's 5 points in the crop, 0..1; -1 or None: unknown).

        In training mode with the expression branch, the numbers it read stay
        in `last_code` [N,K] for the trainer to take (its person and mean
        terms need them from this same forward pass, as DDP wants); the
        exported graph keeps one output.
        """
        low = F.avg_pool2d(faces, self.pool)
        base = F.interpolate(low, scale_factor=float(self.pool), mode="bilinear", align_corners=False)
        grid = low if self.grid_scale == 1 else F.interpolate(low, scale_factor=self.grid_scale, mode="bilinear", align_corners=False)
        if self.landmark_heads is None and not self.expressions:
            return (base + self.net(grid)).clamp(-1, 1)
        if self.landmark_heads is not None:
            if landmarks is None:
                landmarks = faces.new_full((len(faces), 10), -1.0)
            points, heads = self.points(landmarks.to(faces.dtype)), iter(self.landmark_heads)
        if self.expressions:
            code, patterns = self.expression(faces), iter(self.expression_patterns)
            if self.training:
                self.last_code = code[:, :, 0, 0]
        for index, layer in enumerate(self.net):
            grid = layer(grid)
            if index in self.stage_ends:
                if self.landmark_heads is not None:
                    grid = grid + next(heads)(self.landmark_maps(points, self.stage_ends[index]))
                for k in range(self.expressions):  # slices and products: ops TensorRT's parser takes
                    grid = grid + code[:, k:k + 1] * next(patterns)
        return (base + grid).clamp(-1, 1)


def point_maps(x: torch.Tensor, y: torch.Tensor, known: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """[N,P] points in crop units (x, y) and which are known -> [N,P,size,size] Gaussians of `sigma`, zero where unknown."""
    x, y, known = (t[..., None, None] for t in (x, y, known))
    centres = (torch.arange(size, dtype=x.dtype, device=x.device) + 0.5) / size  # a constant in the graph
    dx, dy = centres[None, None, None, :] - x, centres[None, None, :, None] - y
    return torch.exp((dx * dx + dy * dy) * (-0.5 / sigma ** 2)) * known


def build_anonymizer(cfg) -> nn.Module:
    if cfg.m_generator == "lowpass":
        return LowPassAnonymizer(cfg.crop_size, cfg.m_input_size, cfg.m_channels, cfg.m_blocks, cfg.m_grid_size, cfg.m_landmarks,
                                 landmark_step=cfg.m_landmark_step, landmark_shape=cfg.m_landmark_shape, expression=cfg.m_expression)
    return Anonymizer(cfg.m_channels, cfg.m_blocks, cfg.m_upsample)
