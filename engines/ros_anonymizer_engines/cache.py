"""The engine cache: one engine per (model, ONNX hash, TensorRT version, device, precision), each with a sidecar.

An engine only runs where it was built (same TensorRT, same GPU generation),
so all four are in its file name and in its sidecar `<engine>.json`, which
also carries the ONNX metadata_props (the model stays self-describing) and a
checksum of the engine bytes that the runtime verifies before every load.
Nothing here rebuilds on its own: `resolve_engine` builds only when the
configuration says `build_if_missing`, and otherwise names the command to run.
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import platform
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ros_anonymizer.backends.base import ModelError
from ros_anonymizer.backends.tensorrt_backend import (SIDECAR_FORMAT, import_tensorrt, open_cuda,
                                                      read_verified_sidecar, sidecar_checksum, sidecar_path,
                                                      tensorrt_version)

from .builder import BuildOptions, build_engine, onnx_metadata


@dataclass(frozen=True)
class Target:
    """The chip an engine is for: a real GPU, or (tensorrt_rtx without a GPU) a compute capability."""

    device: str  # e.g. "Orin", "NVIDIA H100 80GB HBM3", or "any GPU" for a tensorrt_rtx build without one
    compute_capability: str  # "8.7"

    @property
    def slug(self) -> str:
        return f"{_slug(self.device)}-sm{self.compute_capability.replace('.', '')}"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "gpu"


def detect_target(compute_capability: str | None = None, device: int = 0) -> Target:
    """The local GPU, or a named compute capability when building with tensorrt_rtx without one."""
    if compute_capability:
        return Target("any GPU", compute_capability)
    cuda = open_cuda(device)
    return Target(cuda.device_name, cuda.compute_capability)


def model_bytes(model: str | Path | bytes) -> tuple[bytes, str]:
    """The ONNX bytes and a description of where they came from."""
    if isinstance(model, bytes):
        return model, "bytes"
    path = Path(model).expanduser()
    try:
        return path.read_bytes(), str(path)
    except OSError as e:
        raise ModelError(f"cannot read ONNX model {path}: {e.strerror}.") from None


def engine_path(cache_dir: str | Path, name: str, onnx_sha256: str, trt_version: str, target: Target, precision: str) -> Path:
    return Path(cache_dir).expanduser() / f"{_slug(name)}-{onnx_sha256[:16]}-{_slug(trt_version)}-{target.slug}-{precision}.engine"


def write_engine(path: Path, built, *, name: str, onnx: bytes, source: str, trt, target: Target,
                 options: BuildOptions) -> dict:
    """Write engine then sidecar, each atomically (a half-written pair never verifies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sidecar = {
        "format": SIDECAR_FORMAT,
        "name": name,
        "onnx_sha256": hashlib.sha256(onnx).hexdigest(),
        "onnx_source": source,
        "engine_sha256": hashlib.sha256(built.plan).hexdigest(),
        "engine_bytes": len(built.plan),
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
    }
    sidecar["checksum"] = sidecar_checksum(sidecar)
    _atomic_write(path, built.plan)
    _atomic_write(sidecar_path(path), json.dumps(sidecar, indent=2).encode())
    return sidecar


def _atomic_write(path: Path, data: bytes) -> None:
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    timing_path = path.parent / f"timing-{_slug(tensorrt_version(trt))}-{target.slug}.cache"
    timing = timing_path.read_bytes() if timing_path.exists() else None
    calibrator = calibrator_factory(trt) if calibrator_factory and options.precision == "int8" else None
    built, timing = build_engine(onnx, options, trt=trt, timing_cache=timing, calibrator=calibrator)
    write_engine(path, built, name=name, onnx=onnx, source=source, trt=trt, target=target, options=options)
    if timing:
        _atomic_write(timing_path, timing)
    return path, True


def options_from_config(config, compute_capability: str | None = None) -> BuildOptions:
    return BuildOptions(precision=config.trt_precision, max_faces=getattr(config, "trt_max_faces", 16),
                        compute_capability=compute_capability)


def build_command(model: str | Path | bytes, name: str, config) -> str:
    source = name if isinstance(model, bytes) else str(model)
    return (f"ros-anonymizer engines build --model {source} --name {name} --precision {config.trt_precision} "
            f"--cache-dir {config.engine_cache_dir}")


def resolve_engine(model: str | Path | bytes, config, name: str, *, compute_capability: str | None = None) -> Path:
    """The verified cached engine for this ONNX model on this machine; never rebuilds an existing valid one.

    Missing or invalid engines are built only with `config.build_if_missing`; otherwise ModelError says
    the exact `ros-anonymizer engines build ...` command to run.
    """
    trt = import_tensorrt()
    onnx, _ = model_bytes(model)
    target = detect_target(compute_capability)
    path = engine_path(config.engine_cache_dir, name, hashlib.sha256(onnx).hexdigest(), tensorrt_version(trt),
                       target, config.trt_precision)
    # the name is only a readable prefix: an engine built under another name for the same ONNX serves as well
    same_model = list(path.parent.glob("*-" + path.name[len(_slug(name)) + 1:])) if path.parent.is_dir() else []
    problem = None
    for candidate in sorted(same_model, key=lambda p: p != path):
        try:
            read_verified_sidecar(candidate)
            return candidate
        except ModelError as e:
            problem = problem or str(e)
    if not config.build_if_missing:
        why = problem or f"no TensorRT engine for {name} ({tensorrt_version(trt)}, {target.device}, {config.trt_precision}) in {path.parent}"
        raise ModelError(f"{why.rstrip('.')}. Build it with: {build_command(model, name, config)} "
                         "(or set build_if_missing: true to build at start-up).")
    options = options_from_config(config, compute_capability)
    built_path, _ = build_cached(model, name, config.engine_cache_dir, options, force=True, trt=trt)
    return built_path


def list_engines(cache_dir: str | Path) -> list[tuple[Path, dict | None, str | None]]:
    """Every engine in the cache with its verified sidecar, or the reason it does not verify."""
    result = []
    for path in sorted(Path(cache_dir).expanduser().glob("*.engine")):
        try:
            result.append((path, read_verified_sidecar(path), None))
        except ModelError as e:
            result.append((path, None, str(e)))
    return result
