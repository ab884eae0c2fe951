"""ONNX export of the anonymizer M (and A through its own exporter), self-described by metadata and checked against torch.

The graph keeps to ops TensorRT's ONNX parser takes (ALLOWED_OPS), so the
same file runs in ONNX Runtime on a laptop and as an engine on a Jetson.
"""
from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import torch

OPSET = 17
TOLERANCE = 1e-4  # max |onnxruntime - torch| on the [-1, 1] output, float32 on CPU
ALLOWED_OPS = {"Conv", "ConvTranspose", "InstanceNormalization", "Relu", "Tanh", "Pad", "Add", "AveragePool", "Resize", "Clip",
               "Slice", "Unsqueeze", "Sub", "Mul", "Exp", "GreaterOrEqual", "Cast", "Div", "Round", "Sqrt"}  # the second line: M's landmark maps


class ExportError(RuntimeError):
    """The exported graph is unusable on the robot; the message says why."""


def export_anonymizer(model: torch.nn.Module, path: str | Path, *, crop_size: int, box_enlarge: float, preset: str,
                      trained_on: str, trained_identities: list[str] = ()) -> dict:
    """Write M to `path` with the anonymizer contract's metadata; returns the verification figures.

    `trained_identities` (the people whose faces M was trained against) go
    into the metadata, so an evaluation can report privacy on other people
    without a side file.
    """
    import onnx

    from ros_anonymizer.filters import ANONYMIZER_INPUT, ANONYMIZER_LANDMARKS, ANONYMIZER_OUTPUT

    model = model.eval().float().cpu()
    inputs = [ANONYMIZER_INPUT] + ([ANONYMIZER_LANDMARKS] if takes_landmarks(model) else [])
    example = (torch.zeros(2, 3, crop_size, crop_size), torch.full((2, 10), 0.5))[:len(inputs)]
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the exporter's notes on InstanceNorm and Slice folding; fold_constants handles both
        warnings.simplefilter("ignore", UserWarning)
        torch.onnx.export(model, example, buffer, input_names=inputs, output_names=[ANONYMIZER_OUTPUT],
                          dynamic_axes={name: {0: "N"} for name in inputs + [ANONYMIZER_OUTPUT]}, opset_version=OPSET, dynamo=False)
    graph = fold_constants(onnx.load_from_string(buffer.getvalue()))
    metadata = {"model_kind": "anonymizer", "crop_size": str(crop_size), "value_range": "[-1, 1]",
                "box_enlarge": str(float(box_enlarge)), "preset": preset, "trained_on": trained_on,
                "trained_identities": json.dumps(list(trained_identities))}
    for key, value in metadata.items():
        graph.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(graph)
    unsupported = sorted({node.op_type for node in graph.graph.node} - ALLOWED_OPS)
    if unsupported:
        raise ExportError(f"the anonymizer graph uses {', '.join(unsupported)}, which the TensorRT path does not take; keep M to {sorted(ALLOWED_OPS)}.")
    data = graph.SerializeToString()
    report = verify_against_torch(model, data, crop_size)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"path": str(path), "bytes": len(data), **report}


def fold_constants(model):
    """Evaluate node chains whose inputs are all constant (torch's exporter computes Pad's pads that way) into initializers.

    Leaves a graph of the network's own ops only, which TensorRT and ONNX
    Runtime both take as they are.
    """
    import onnx
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    kept = []
    for node in graph.node:
        if all(name in constants for name in node.input if name):
            sub = onnx.helper.make_model(
                onnx.helper.make_graph([node], "fold", [], [onnx.helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in node.output],
                                       initializer=[numpy_helper.from_array(constants[i], i) for i in node.input if i]),
                opset_imports=model.opset_import)
            for name, value in zip(node.output, ReferenceEvaluator(sub).run(None, {})):
                constants[name] = np.asarray(value)
        else:
            kept.append(node)
    used = {name for node in kept for name in node.input} | {o.name for o in graph.output}
    del graph.node[:]
    graph.node.extend(kept)
    del graph.initializer[:]
    graph.initializer.extend(numpy_helper.from_array(value, name) for name, value in constants.items() if name in used)
    return model


def takes_landmarks(model: torch.nn.Module) -> bool:
    """Whether M has landmark heads, so its graph gets the contract's second input."""
    return getattr(model, "landmark_heads", None) is not None


def verify_against_torch(model: torch.nn.Module, onnx_bytes: bytes, crop_size: int, batches=(1, 5)) -> dict:
    """Run real faces-like inputs (and landmarks, the first face's unknown) through ONNX Runtime and torch; raise if they differ by more than TOLERANCE.

    An ONNX file without the `landmarks` input (an M from before the landmark
    heads, which a landmark M can start from) is compared with the torch
    model given no landmarks.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    with_landmarks = takes_landmarks(model) and "landmarks" in {i.name for i in session.get_inputs()}
    generator = torch.Generator().manual_seed(0)
    worst = 0.0
    for n in batches:
        feeds = {"faces": torch.rand(n, 3, crop_size, crop_size, generator=generator) * 2 - 1}
        if with_landmarks:
            feeds["landmarks"] = torch.rand(n, 10, generator=generator) * 0.6 + 0.2
            feeds["landmarks"][0] = -1
        with torch.no_grad():
            expected = model(*feeds.values()).numpy()
        got = session.run(["anonymized"], {name: value.numpy() for name, value in feeds.items()})[0]
        if got.shape != expected.shape:
            raise ExportError(f"ONNX output shape {got.shape} differs from torch's {expected.shape} for a batch of {n}.")
        worst = max(worst, float(np.abs(got - expected).max()))
    if worst > TOLERANCE:
        raise ExportError(f"ONNX Runtime and torch differ by {worst:.2e} (> {TOLERANCE:.0e}); the export is wrong.")
    return {"max_abs_diff": worst, "tolerance": TOLERANCE, "batches_checked": list(batches)}


NEW_BRANCHES = ("landmark_heads.", "expression_")  # weights a fine-tune may add to a shipped M: they start as initialised


def anonymizer_weights(path: str | Path, expected: dict, name: str = "the anonymizer") -> dict:
    """M's state dict read back from an exported anonymizer, to fine-tune a shipped model.

    The exporter keeps torch's parameter names as initializer names, so an
    ONNX file this trainer wrote holds a complete state dict; anything else
    (another preset, another network) is refused with a plain reason.
    """
    import onnx
    from google.protobuf.message import DecodeError
    from onnx import numpy_helper

    try:
        model = onnx.load(str(path))
    except (OSError, DecodeError) as e:
        raise ExportError(f"cannot read {name} {path}: {e.__class__.__name__}; give an anonymizer ONNX this trainer exported.") from None
    found = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in model.graph.initializer}
    missing = [k for k in expected if k not in found and not k.startswith(NEW_BRANCHES)]
    wrong = [k for k in expected if k in found and tuple(found[k].shape) != tuple(expected[k].shape)]
    if missing or wrong:
        raise ExportError(f"{name} {path} does not fit this preset's M ({len(missing)} weights missing, "
                          f"{len(wrong)} of another shape); use the same m_channels, m_blocks and crop_size it was trained with.")
    return {k: found[k].to(expected[k].dtype) if k in found else expected[k].clone() for k in expected}  # (a copy: expected may be live weights)
