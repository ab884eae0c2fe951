"""Filling the engine cache: one engine per (model, ONNX hash, TensorRT version, device, precision).

An engine only runs where it was built (same TensorRT, same GPU generation),
so all four are in its file name and in its sidecar `<engine>.json`, which
also carries the ONNX metadata_props (the model stays self-describing) and a
checksum of the engine bytes that the runtime verifies before every load. The
file names and the sidecar format belong to the runtime
(`ros_anonymizer.backends.engine_files`); this module builds and writes them.
The runtime's `resolve_engine` calls `build_for_config` (entry point
`ros_anonymizer.engine_builders`) only when the configuration says `build_if_missing`.
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import platform
from pathlib import Path

from ros_anonymizer.backends.base import ModelError
from ros_anonymizer.backends.engine_files import (atomic_write, engine_path, import_tensorrt, model_bytes,
                                                  read_verified_sidecar, slug, tensorrt_version, write_engine_files)
from ros_anonymizer.backends.tensorrt_backend import Target, detect_target

from .builder import BuildOptions, build_engine, onnx_metadata


def write_engine(path: Path, built, *, name: str, onnx: bytes, source: str, trt, target: Target,
                 options: BuildOptions) -> dict:
    """Write the engine and its sidecar in the runtime's format."""
    return write_engine_files(path, built.plan, {
        "name": name,
        "onnx_sha256": hashlib.sha256(onnx).hexdigest(),
        "onnx_source": source,
        "tensorrt_module": trt.__name__,
        "tensorrt_version": tensorrt_version(trt),
        "device": target.device,
        "compute_capability": target.compute_capability,
        "requested_precision": options.precision,
        "precision": built.precision,
        "options": options.to_dict(),
        "profiles": built.profiles,
        "inputs": built.inputs,
        "outputs": built.outputs,
        "metadata": onnx_metadata(onnx),
        "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "build_seconds": round(built.seconds, 2),
        "built_on": platform.node(),
    })


def build_cached(model: str | Path | bytes, name: str, cache_dir: str | Path, options: BuildOptions, *,
                 force: bool = False, calibrator_factory=None, trt=None) -> tuple[Path, bool]:
    """The cached engine for `model`, built when missing, invalid, built with other options, or `force`d.

    Returns (engine path, whether it was built now). `calibrator_factory(trt, profiles)` supplies the INT8
    calibrator only when a build actually happens.
    """
    trt = trt or import_tensorrt()
    onnx, source = model_bytes(model)
    target = detect_target(options.compute_capability)
    if trt.__name__ == "tensorrt_rtx" and not options.compute_capability:
        # tensorrt_rtx builds for any GPU but runs only on the generations it knows (not Hopper, not Jetson):
        # naming the local one makes the builder refuse an unsupported GPU instead of writing a useless engine
        options = dataclasses.replace(options, compute_capability=target.compute_capability)
    path = engine_path(cache_dir, name, hashlib.sha256(onnx).hexdigest(), tensorrt_version(trt), target, options.precision)
    if not force and path.exists():
        try:
            if read_verified_sidecar(path).get("options") == options.to_dict():
                return path, False
        except ModelError:
            pass  # damaged or tampered: rebuilt below, as the user asked for a build
    timing_path = path.parent / f"timing-{slug(tensorrt_version(trt))}-{target.slug}.cache"
    timing = timing_path.read_bytes() if timing_path.exists() else None
    calibrator = calibrator_factory(trt) if calibrator_factory and options.precision == "int8" else None
    built, timing = build_engine(onnx, options, trt=trt, timing_cache=timing, calibrator=calibrator)
    write_engine(path, built, name=name, onnx=onnx, source=source, trt=trt, target=target, options=options)
    if timing:
        atomic_write(timing_path, timing)
    return path, True


def options_from_config(config, compute_capability: str | None = None) -> BuildOptions:
    return BuildOptions(precision=config.trt_precision, max_faces=getattr(config, "trt_max_faces", 16),
                        compute_capability=compute_capability)


def build_for_config(model: str | Path | bytes, name: str, config, *, compute_capability: str | None = None,
                     trt=None) -> Path:
    """The runtime's `build_if_missing` hook: build (replacing a damaged one) the engine the configuration asks for."""
    path, _ = build_cached(model, name, config.engine_cache_dir, options_from_config(config, compute_capability),
                           force=True, trt=trt)
    return path
