"""ONNX -> TensorRT engines for the robot: builder, engine cache with integrity sidecars, INT8 calibration.

`resolve_engine(onnx, config, name)` is what the runtime calls when it is asked
to run an ONNX model with the TensorRT backend.
"""
from .cache import resolve_engine

__all__ = ["resolve_engine"]
