"""ONNX -> TensorRT engines for the robot: builder, engine cache, INT8 calibration, INT8 CenterFace for CPUs.

Installed where engines are built (on the GPU that runs them). It imports the
runtime (`ros_anonymizer`), whose backend owns the engine files' format and
loads verified engines; the runtime never imports this package. It registers
`ros-anonymizer engines` and the runtime's `build_if_missing` hook as entry points.
"""
