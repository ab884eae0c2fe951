"""TensorRT engine files: the cache's naming, the integrity sidecar `<engine>.json`, and their verification.

The runtime owns this format: it reads and verifies engines before loading
them, and the engine builder (`ros_anonymizer_engines`, a separate
distribution) writes them through `write_engine_files`. Nothing here needs a
GPU or TensorRT at import time.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .base import ModelError

SIDECAR_FORMAT = 1
TENSORRT_MODULES = ("tensorrt", "tensorrt_rtx")


# Engine files and their sidecars --------------------------------------------------------------

def sidecar_path(engine_path: str | Path) -> Path:
    return Path(str(engine_path) + ".json")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sidecar_checksum(fields: dict) -> str:
    """SHA-256 of the sidecar's fields (without the checksum itself), so an edited sidecar is noticed."""
    body = {k: v for k, v in fields.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def read_verified_sidecar(engine_path: str | Path) -> dict:
    """The sidecar of `engine_path` after checking it and the engine bytes; ModelError otherwise."""
    engine_path = Path(engine_path).expanduser()
    rebuild = "rebuild it with `ros-anonymizer engines build` (see docs/jetson.md)"
    if not engine_path.is_file():
        raise ModelError(f"TensorRT engine {engine_path} does not exist; {rebuild}.")
    side = sidecar_path(engine_path)
    try:
        fields = json.loads(side.read_text())
    except FileNotFoundError:
        raise ModelError(f"TensorRT engine {engine_path} has no sidecar {side.name}, so it cannot be verified; {rebuild}.") from None
    except (OSError, ValueError) as e:
        raise ModelError(f"the sidecar {side} of TensorRT engine {engine_path.name} is unreadable ({e.__class__.__name__}); {rebuild}.") from None
    if not isinstance(fields, dict) or fields.get("checksum") != sidecar_checksum(fields):
        raise ModelError(f"the sidecar {side} of TensorRT engine {engine_path.name} was modified or is damaged; {rebuild}.")
    if fields.get("format") != SIDECAR_FORMAT:
        raise ModelError(f"the sidecar {side} has format {fields.get('format')!r}, this version reads {SIDECAR_FORMAT}; {rebuild}.")
    if file_sha256(engine_path) != fields.get("engine_sha256"):
        raise ModelError(f"TensorRT engine {engine_path} does not match the SHA-256 in its sidecar "
                         f"(corrupted or replaced); {rebuild}.")
    return fields


def import_tensorrt(preferred: str | None = None):
    """The TensorRT Python module: standard `tensorrt` first, else `tensorrt_rtx` (same API where it matters)."""
    import importlib

    names = (preferred,) if preferred else TENSORRT_MODULES
    for name in names:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ModelError(f"TensorRT is not installed (looked for {' and '.join(names)}); on Jetson it comes with JetPack "
                     "(python3-libnvinfer), elsewhere use the ONNX Runtime backend (backend: onnxruntime).")


def tensorrt_version(trt) -> str:
    return f"{trt.__name__} {trt.__version__}"


@dataclass(frozen=True)
class Target:
    """The chip an engine is for: a real GPU, or (tensorrt_rtx without a GPU) a compute capability."""

    device: str  # e.g. "Orin", "NVIDIA H100 80GB HBM3", or "any GPU" for a tensorrt_rtx build without one
    compute_capability: str  # "8.7"

    @property
    def slug(self) -> str:
        return f"{slug(self.device)}-sm{self.compute_capability.replace('.', '')}"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "gpu"


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
    return Path(cache_dir).expanduser() / f"{slug(name)}-{onnx_sha256[:16]}-{slug(trt_version)}-{target.slug}-{precision}.engine"


def find_cached_engine(path: Path, name: str) -> tuple[Path | None, str | None]:
    """A verified engine for the same model, key and target as `path` (under any name), else (None, the first problem).

    The name is only a readable prefix: an engine built under another name for the same ONNX serves as well.
    """
    same_model = list(path.parent.glob("*-" + path.name[len(slug(name)) + 1:])) if path.parent.is_dir() else []
    problem = None
    for candidate in sorted(same_model, key=lambda p: p != path):
        try:
            read_verified_sidecar(candidate)
            return candidate, None
        except ModelError as e:
            problem = problem or str(e)
    return None, problem


def build_command(model: str | Path | bytes, name: str, config) -> str:
    source = name if isinstance(model, bytes) else str(model)
    return (f"ros-anonymizer engines build --model {source} --name {name} --precision {config.trt_precision} "
            f"--cache-dir {config.engine_cache_dir}")


def write_engine_files(path: Path, plan: bytes, fields: dict) -> dict:
    """Write engine then sidecar (`fields` plus format, engine hash and checksum), each atomically.

    A half-written pair never verifies.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    sidecar = {"format": SIDECAR_FORMAT, **fields, "engine_sha256": hashlib.sha256(plan).hexdigest(),
               "engine_bytes": len(plan)}
    sidecar["checksum"] = sidecar_checksum(sidecar)
    atomic_write(path, plan)
    atomic_write(sidecar_path(path), json.dumps(sidecar, indent=2).encode())
    return sidecar


def atomic_write(path: Path, data: bytes) -> None:
    """`path` holds either its old content or all of `data`, never part of it (a crash mid-write, two starting nodes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def list_engines(cache_dir: str | Path) -> list[tuple[Path, dict | None, str | None]]:
    """Every engine in the cache with its verified sidecar, or the reason it does not verify."""
    result = []
    for path in sorted(Path(cache_dir).expanduser().glob("*.engine")):
        try:
            result.append((path, read_verified_sidecar(path), None))
        except ModelError as e:
            result.append((path, None, str(e)))
    return result
