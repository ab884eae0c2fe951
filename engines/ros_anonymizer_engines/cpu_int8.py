"""INT8 face detector calibrated on your own frames: CenterFace statically quantized for ONNX Runtime's CPU kernels.

The runtime makes and verifies an INT8 CenterFace by itself at first start
(ros_anonymizer.int8_detector, calibrated on generated frames). This command
runs the same quantizer on real frames of the user's choosing (images, a video
or a bag) at the detection scale the robot uses; the result is an ordinary
.onnx file to point `face_model` at.
"""
from __future__ import annotations

import json
from pathlib import Path

from ros_anonymizer.faces import centerface_input
from ros_anonymizer.int8_detector import quantize_centerface

from .calibration import read_frames


def quantize_face_detector(calibration: str | Path, output: str | Path, *, frames: int = 64,
                           detection_scale: float = 1.0) -> Path:
    """Write an INT8 CenterFace calibrated on `calibration` (images, a video or a bag) to `output`."""
    blobs = [centerface_input(frame, detection_scale)[0] for frame in read_frames(calibration, frames)]
    calibrated_on = {"source": str(calibration), "frames": len(blobs), "input_size": list(blobs[0].shape[2:])}
    return quantize_centerface(blobs, Path(output), {"calibrated_on": json.dumps(calibrated_on)})
