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
