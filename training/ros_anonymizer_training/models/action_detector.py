"""The action detector A: a CenterNet-style one-stage, anchor-free detector.

Why this design (the paper used Faster R-CNN): every person box is a peak in
a per-class heatmap plus a size and a sub-cell offset, so the whole decode is
sigmoid, 3x3 max-pool, TopK and a gather. Those are plain ONNX operators that
TensorRT runs natively; there are no anchors, no RoI pooling and no NMS
plugin, and the exported graph returns final boxes directly.
"""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_NORMALIZATION = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}

PRESETS = {
    # Small enough to train on a CPU and run in real time on a Jetson.
    "edge": {"backbone": "edge", "widths": [24, 48, 96, 160], "depths": [1, 1, 2, 1], "neck": 48, "input_size": [192, 256]},
    # ResNet-18-scale, for GPU training on the full datasets.
    "paper": {"backbone": "resnet18", "widths": [64, 128, 256, 512], "depths": [2, 2, 2, 2], "neck": 128, "input_size": [384, 512]},
}
STRIDE = 4  # heatmap cells are 4x4 input pixels
_MAX_LOG_SIZE = 6.0  # exp(6) * 4 = 1600 px: keeps exp() finite in fp16 engines


def _conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if act else nn.Sequential(*layers)


class _SeparableBlock(nn.Module):
    """Depthwise 3x3 + pointwise 1x1 with a residual: cheap on CPUs and Jetsons."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(_conv_bn(channels, channels, groups=channels), _conv_bn(channels, channels, 1, act=False))

    def forward(self, x):
        return F.relu(x + self.body(x))


class _BasicBlock(nn.Module):
    """ResNet-18's block."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(_conv_bn(cin, cout, stride=stride), _conv_bn(cout, cout, act=False))
        self.skip = nn.Identity() if stride == 1 and cin == cout else _conv_bn(cin, cout, 1, stride, act=False)

    def forward(self, x):
        return F.relu(self.skip(x) + self.body(x))


def _edge_backbone(widths, depths) -> tuple[nn.Module, list[nn.Module]]:
    stem = nn.Sequential(_conv_bn(3, 16, stride=2), _conv_bn(16, widths[0], stride=2),
                         *[_SeparableBlock(widths[0]) for _ in range(depths[0])])
    stages = [nn.Sequential(_conv_bn(cin, cout, stride=2), *[_SeparableBlock(cout) for _ in range(depth)])
              for cin, cout, depth in zip(widths[:-1], widths[1:], depths[1:])]
    return stem, stages


def _resnet_backbone(widths, depths) -> tuple[nn.Module, list[nn.Module]]:
    stem = nn.Sequential(_conv_bn(3, widths[0], 7, 2), nn.MaxPool2d(3, 2, 1),
                         *[_BasicBlock(widths[0], widths[0], 1) for _ in range(depths[0])])
    stages = [nn.Sequential(_BasicBlock(cin, cout, 2), *[_BasicBlock(cout, cout, 1) for _ in range(depth - 1)])
              for cin, cout, depth in zip(widths[:-1], widths[1:], depths[1:])]
    return stem, stages


class ActionDetectorNet(nn.Module):
    """Backbone at strides 4-32, a top-down neck back to stride 4, and three heads.

    `forward` returns raw maps: `heatmap` logits [B, C, H/4, W/4], `size`
    (log of box width/height in cells) and `offset` (centre within its cell).
    """

    def __init__(self, num_classes: int, backbone: str = "edge", widths=(24, 48, 96, 160), depths=(1, 1, 2, 1), neck: int = 48):
        super().__init__()
        build = {"edge": _edge_backbone, "resnet18": _resnet_backbone}[backbone]
        self.num_classes = num_classes
        self.stride = STRIDE
        stem, stages = build(list(widths), list(depths))
        self.stem, self.stages = stem, nn.ModuleList(stages)
        self.laterals = nn.ModuleList(_conv_bn(w, neck, 1) for w in widths)
        self.smooth = nn.Sequential(_conv_bn(neck, neck, groups=neck), _conv_bn(neck, neck, 1))
        self.heatmap = self._head(neck, num_classes)
        self.size = self._head(neck, 2)
        self.offset = self._head(neck, 2)
        nn.init.constant_(self.heatmap[-1].bias, -math.log((1 - 0.01) / 0.01))  # start near "no person anywhere"

    @staticmethod
    def _head(channels: int, outputs: int) -> nn.Sequential:
        return nn.Sequential(_conv_bn(channels, channels, groups=channels), _conv_bn(channels, channels, 1),
                             nn.Conv2d(channels, outputs, 1))

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        features = [self.stem(image)]
        for stage in self.stages:
            features.append(stage(features[-1]))
        x = self.laterals[-1](features[-1])
        for lateral, feature in zip(reversed(self.laterals[:-1]), reversed(features[:-1])):
            x = lateral(feature) + F.interpolate(x, size=feature.shape[-2:], mode="nearest")
        x = self.smooth(x)
        return {"heatmap": self.heatmap(x), "size": self.size(x), "offset": self.offset(x)}


def build_action_detector(cfg: Mapping | str, num_classes: int | None = None) -> ActionDetectorNet:
    """A detector from a preset name or a mapping {preset, num_classes, and any preset key to override}."""
    cfg = {"preset": cfg} if isinstance(cfg, str) else dict(cfg)
    preset = cfg.pop("preset", "edge")
    if preset not in PRESETS:
        raise ValueError(f"unknown action detector preset {preset!r}; use one of {', '.join(PRESETS)}.")
    params = {**PRESETS[preset], **cfg}
    classes = params.pop("num_classes", None) if num_classes is None else num_classes
    params.pop("num_classes", None)
    if not classes:
        raise ValueError("the action detector needs num_classes (the number of action classes).")
    params.pop("input_size")
    return ActionDetectorNet(int(classes), **params)


# Training targets and loss -------------------------------------------------

def _gaussian_radius(height: float, width: float, min_overlap: float = 0.7) -> float:
    """CenterNet's radius: a centre this far off still gives a box with IoU >= min_overlap."""
    b1, c1 = height + width, width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1 ** 2 - 4 * c1)) / 2
    b2, c2 = 2 * (height + width), (1 - min_overlap) * width * height
    r2 = (b2 + math.sqrt(b2 ** 2 - 16 * c2)) / 2
    a3, b3, c3 = 4 * min_overlap, -2 * min_overlap * (height + width), (min_overlap - 1) * width * height
    r3 = (b3 + math.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def _draw_gaussian(heatmap: np.ndarray, cx: int, cy: int, radius: int) -> None:
    sigma = (2 * radius + 1) / 6
    ys, xs = np.ogrid[-radius:radius + 1, -radius:radius + 1]
    g = np.exp(-(xs * xs + ys * ys) / (2 * sigma * sigma))
    h, w = heatmap.shape
    left, right, top, bottom = min(cx, radius), min(w - cx, radius + 1), min(cy, radius), min(h - cy, radius + 1)
    region = heatmap[cy - top:cy + bottom, cx - left:cx + right]
    np.maximum(region, g[radius - top:radius + bottom, radius - left:radius + right], out=region)


def build_targets(targets: Sequence[Mapping], num_classes: int, map_size: tuple[int, int], stride: int = STRIDE) -> dict[str, torch.Tensor]:
    """Ground-truth boxes (network-input pixels, xyxy) -> heatmaps and the size/offset at each centre."""
    h, w = map_size
    heat = np.zeros((len(targets), num_classes, h, w), np.float32)
    index, size, offset = [], [], []
    for b, target in enumerate(targets):
        boxes = torch.as_tensor(target["boxes"]).detach().cpu().numpy().reshape(-1, 4) / stride
        labels = torch.as_tensor(target["labels"]).detach().cpu().numpy().reshape(-1)
        for (x1, y1, x2, y2), label in zip(boxes, labels):
            bw, bh = x2 - x1, y2 - y1
            if bw <= 0 or bh <= 0:
                continue
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            ix, iy = min(int(cx), w - 1), min(int(cy), h - 1)
            _draw_gaussian(heat[b, label], ix, iy, max(0, int(_gaussian_radius(bh, bw))))
            index.append((b, iy, ix))
            size.append((math.log(bw), math.log(bh)))
            offset.append((cx - ix, cy - iy))
    return {"heatmap": torch.from_numpy(heat), "index": torch.tensor(index, dtype=torch.long).reshape(-1, 3),
            "size": torch.tensor(size, dtype=torch.float32).reshape(-1, 2),
            "offset": torch.tensor(offset, dtype=torch.float32).reshape(-1, 2)}


def detection_loss(outputs: Mapping[str, torch.Tensor], targets: Sequence[Mapping], size_weight: float = 1.0,
                   offset_weight: float = 1.0) -> dict[str, torch.Tensor]:
    """CenterNet loss: focal loss on the heatmaps + L1 on log-size and offset at the box centres.

    `targets` is one dict per image with `boxes` [n, 4] (xyxy, network-input
    pixels) and `labels` [n] (class indices). Returns `loss` (the total to
    back-propagate) and its parts `heatmap`, `size`, `offset`.
    """
    logits = outputs["heatmap"]
    t = build_targets(targets, logits.shape[1], tuple(logits.shape[-2:]))
    gt = t["heatmap"].to(logits.device)
    pos = gt.eq(1).float()
    prob = torch.sigmoid(logits)
    pos_term = F.logsigmoid(logits) * (1 - prob) ** 2 * pos
    neg_term = F.logsigmoid(-logits) * prob ** 2 * (1 - gt) ** 4 * (1 - pos)
    heat_loss = -(pos_term.sum() + neg_term.sum()) / pos.sum().clamp(min=1)
    if len(t["index"]):
        b, y, x = t["index"].to(logits.device).unbind(1)
        size_pred = outputs["size"].permute(0, 2, 3, 1)[b, y, x]
        offset_pred = outputs["offset"].permute(0, 2, 3, 1)[b, y, x]
        size_loss = F.l1_loss(size_pred, t["size"].to(logits.device))
        offset_loss = F.l1_loss(offset_pred, t["offset"].to(logits.device))
    else:
        size_loss = offset_loss = logits.sum() * 0
    total = heat_loss + size_weight * size_loss + offset_weight * offset_loss
    return {"loss": total, "heatmap": heat_loss.detach(), "size": size_loss.detach(), "offset": offset_loss.detach()}


# Decode and export -----------------------------------------------------------

def decode(outputs: Mapping[str, torch.Tensor], max_detections: int, stride: int = STRIDE,
           input_size: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Raw maps of ONE image -> (boxes [K, 4] xyxy input pixels, scores [K], labels [K] int64).

    Peaks are cells equal to their 3x3 max-pool (CenterNet's NMS); the K best
    over all classes are kept. Only ONNX/TensorRT-native operators are used.
    """
    heat = torch.sigmoid(outputs["heatmap"][:1])
    _, classes, h, w = heat.shape
    peaks = heat * (F.max_pool2d(heat, 3, 1, 1) == heat).to(heat.dtype)
    scores, index = torch.topk(peaks.reshape(-1), min(max_detections, classes * h * w))
    labels = torch.div(index, h * w, rounding_mode="floor")
    cell = index - labels * (h * w)
    ys = torch.div(cell, w, rounding_mode="floor")
    xs = cell - ys * w
    size = outputs["size"][0].reshape(2, h * w)[:, cell].clamp(max=_MAX_LOG_SIZE).exp() * stride
    offset = outputs["offset"][0].reshape(2, h * w)[:, cell]
    cx, cy = (xs.to(heat.dtype) + offset[0]) * stride, (ys.to(heat.dtype) + offset[1]) * stride
    boxes = torch.stack([cx - size[0] / 2, cy - size[1] / 2, cx + size[0] / 2, cy + size[1] / 2], 1)
    if input_size is not None:
        limit = torch.tensor([input_size[1], input_size[0]] * 2, dtype=boxes.dtype, device=boxes.device)
        boxes = torch.minimum(boxes.clamp(min=0), limit)
    return boxes, scores, labels.to(torch.int64)


class ActionDetectorExport(nn.Module):
    """The network plus its decode, as one graph: image [1,3,H,W] -> boxes, scores, labels."""

    def __init__(self, model: ActionDetectorNet, max_detections: int = 50):
        super().__init__()
        self.model = model
        self.max_detections = max_detections

    def forward(self, image: torch.Tensor):
        return decode(self.model(image), self.max_detections, self.model.stride, tuple(image.shape[-2:]))


def export_action_detector(model: ActionDetectorNet, path: str | Path, input_size: Sequence[int], classes: Sequence[str],
                           normalization: Mapping = IMAGENET_NORMALIZATION, trained_on: str = "", max_detections: int = 50,
                           preset: str = "", opset: int = 17, check_inputs: Sequence[np.ndarray] = (),
                           atol: float = 1e-3) -> dict[str, float]:
    """Write A as ONNX with its self-description, then check ONNX Runtime against torch.

    The check runs `check_inputs` (float32 [1,3,H,W]; two random inputs when
    none) through both; boxes, scores and labels of the detections must agree
    within `atol` (scores) and `atol * H` pixels (boxes, each ONNX detection
    matched to the nearest torch detection of its class). Returns the largest
    differences seen.
    """
    import onnx
    import onnxruntime as ort

    if len(classes) != model.num_classes:
        raise ValueError(f"{len(classes)} class names for a model with {model.num_classes} classes.")
    height, width = (int(v) for v in input_size)
    if height % 32 or width % 32:
        raise ValueError(f"input_size {height}x{width} must be multiples of 32 (the backbone's stride).")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = ActionDetectorExport(model, max_detections).eval()
    was_training = model.training
    model.eval()
    dummy = torch.zeros(1, 3, height, width)
    with warnings.catch_warnings():  # the tracer warns that shapes become constants: intended, the input size is fixed
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)  # dynamo=False is deliberate: no onnxscript on robots or here
        torch.onnx.export(wrapper, (dummy,), str(path), input_names=["image"], output_names=["boxes", "scores", "labels"],
                          opset_version=opset, dynamo=False)
    proto = onnx.load(str(path))
    metadata = {"model_kind": "action_detector", "input_size": json.dumps([height, width]),
                "normalization": json.dumps({"mean": list(normalization["mean"]), "std": list(normalization["std"])}),
                "classes": json.dumps(list(classes)), "trained_on": trained_on, "preset": preset,
                "max_detections": str(max_detections)}
    del proto.metadata_props[:]
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(0)
    inputs = list(check_inputs) or [torch.randn(1, 3, height, width, generator=generator).numpy() for _ in range(2)]
    worst = {"boxes": 0.0, "scores": 0.0}
    with torch.no_grad():
        for x in inputs:
            boxes, scores, labels = (t.numpy() for t in wrapper(torch.from_numpy(np.asarray(x, np.float32))))
            o_boxes, o_scores, o_labels = session.run(None, {"image": np.asarray(x, np.float32)})
            worst["scores"] = max(worst["scores"], float(np.abs(o_scores - scores).max()))
            worst["boxes"] = max(worst["boxes"], _box_mismatch(boxes, scores, labels, o_boxes, o_scores, o_labels))
    model.train(was_training)
    if worst["scores"] > atol or worst["boxes"] > atol * height:
        raise RuntimeError(f"exported action detector {path} differs from torch (scores {worst['scores']:.2e}, "
                           f"boxes {worst['boxes']:.2e} px; tolerance {atol}, {atol * height} px).")
    return worst



def _box_mismatch(boxes, scores, labels, o_boxes, o_scores, o_labels, tie: float = 1e-6) -> float:
    """Largest distance (px) from an ONNX detection to the nearest torch detection of the same class.

    Matching instead of comparing row by row: near-equal scores may come out
    of TopK in another order. Detections tied with the K-th score are left out,
    since either side may have cut them off.
    """
    worst = 0.0
    for box, score, label in zip(o_boxes, o_scores, o_labels):
        if score <= scores[-1] + tie:
            continue
        same = boxes[labels == label]
        worst = max(worst, float(np.abs(same - box).max(1).min()) if len(same) else float("inf"))
    return worst
