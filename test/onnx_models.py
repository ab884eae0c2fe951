"""Small real ONNX models built in the tests, for contracts the shipped models also follow."""
from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper


def anonymizer_model(path: Path, crop_size: int = 32, *, fixed_batch: int | None = None,
                     metadata: dict[str, str] | None = None) -> Path:
    """An anonymizer following the M contract that inverts the face (anonymized = -faces).

    With `fixed_batch`, a Reshape pins the batch size, so running more faces
    than that fails inside ONNX Runtime: a real run-time model error.
    """
    batch = fixed_batch or "N"
    nodes = [helper.make_node("Neg", ["faces"], ["negated"])]
    initializers = []
    if fixed_batch:
        initializers.append(helper.make_tensor("shape", TensorProto.INT64, [4], [fixed_batch, 3, crop_size, crop_size]))
        nodes.append(helper.make_node("Reshape", ["negated", "shape"], ["anonymized"]))
    else:
        nodes.append(helper.make_node("Identity", ["negated"], ["anonymized"]))
    graph = helper.make_graph(
        nodes, "anonymizer",
        [helper.make_tensor_value_info("faces", TensorProto.FLOAT, ["N", 3, crop_size, crop_size])],
        [helper.make_tensor_value_info("anonymized", TensorProto.FLOAT, [batch, 3, crop_size, crop_size])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = {"model_kind": "anonymizer", "crop_size": str(crop_size), "value_range": "[-1, 1]", "box_enlarge": "1.3",
            "preset": "test", "trained_on": "nothing: a test model that inverts faces"}
    meta.update(metadata or {})
    for key, value in meta.items():
        if value is not None:
            model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def landmark_probe_anonymizer(path: Path, crop_size: int = 32) -> Path:
    """An anonymizer with the optional `landmarks` input that paints each face flat in the mean of the landmarks it was fed.

    So a test reads back, from the pasted pixels, what the runtime passed.
    """
    nodes = [helper.make_node("ReduceMean", ["landmarks"], ["mean"], axes=[1], keepdims=1),
             helper.make_node("Reshape", ["mean", "shape"], ["level"]),
             helper.make_node("Mul", ["faces", "zero"], ["blank"]),
             helper.make_node("Add", ["blank", "level"], ["anonymized"])]
    initializers = [helper.make_tensor("shape", TensorProto.INT64, [4], [-1, 1, 1, 1]), helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])]
    graph = helper.make_graph(
        nodes, "landmark_probe",
        [helper.make_tensor_value_info("faces", TensorProto.FLOAT, ["N", 3, crop_size, crop_size]),
         helper.make_tensor_value_info("landmarks", TensorProto.FLOAT, ["N", 10])],
        [helper.make_tensor_value_info("anonymized", TensorProto.FLOAT, ["N", 3, crop_size, crop_size])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in {"model_kind": "anonymizer", "crop_size": str(crop_size), "value_range": "[-1, 1]", "box_enlarge": "1.0",
                       "preset": "test", "trained_on": "nothing: a test model that shows the landmarks it was given"}.items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def nan_anonymizer_model(path: Path, crop_size: int = 32) -> Path:
    """An anonymizer following the M contract whose output is NaN wherever the input is negative (Sqrt)."""
    graph = helper.make_graph(
        [helper.make_node("Sqrt", ["faces"], ["anonymized"])], "nan_anonymizer",
        [helper.make_tensor_value_info("faces", TensorProto.FLOAT, ["N", 3, crop_size, crop_size])],
        [helper.make_tensor_value_info("anonymized", TensorProto.FLOAT, ["N", 3, crop_size, crop_size])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in {"model_kind": "anonymizer", "crop_size": str(crop_size), "value_range": "[-1, 1]",
                       "box_enlarge": "1.3", "trained_on": "nothing: a test model whose output is NaN"}.items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def centerface_nan_when_dark(path: Path, darkness: float = 40.0) -> Path:
    """The real CenterFace, whose heatmap turns NaN on frames darker than `darkness` (mean grey level).

    Heatmap + 0 * log(mean(input) - darkness): unchanged on brighter frames (the
    start-up self-test passes), NaN on darker ones, as a broken engine might.
    """
    from ros_anonymizer.faces import CENTERFACE_INPUT, CENTERFACE_OUTPUTS, centerface_onnx

    model = onnx.load_from_string(centerface_onnx())
    heatmap = CENTERFACE_OUTPUTS[0]
    for node in model.graph.node:
        node.output[:] = [o + "_raw" if o == heatmap else o for o in node.output]
    model.graph.initializer.extend([helper.make_tensor("darkness", TensorProto.FLOAT, [], [darkness]),
                                    helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])])
    model.graph.node.extend([
        helper.make_node("ReduceMean", [CENTERFACE_INPUT], ["mean"], keepdims=0),
        helper.make_node("Sub", ["mean", "darkness"], ["margin"]),
        helper.make_node("Log", ["margin"], ["log_margin"]),
        helper.make_node("Mul", ["log_margin", "zero"], ["poison"]),
        helper.make_node("Add", [heatmap + "_raw", "poison"], [heatmap]),
    ])
    onnx.save(model, str(path))
    return path


def centerface_corrupted(path: Path, seed: int = 0) -> Path:
    """The real CenterFace with its convolution weights shuffled: it loads and runs, and finds nothing."""
    import numpy as np
    from onnx import numpy_helper

    from ros_anonymizer.faces import centerface_onnx

    model = onnx.load_from_string(centerface_onnx())
    rng = np.random.default_rng(seed)
    for i, tensor in enumerate(model.graph.initializer):
        weights = numpy_helper.to_array(tensor)
        if weights.ndim == 4:  # convolution kernels
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(rng.permutation(weights.ravel()).reshape(weights.shape), tensor.name))
    onnx.save(model, str(path))
    return path
