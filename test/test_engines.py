"""TensorRT engines without a GPU: every model parses and builds, the cache reuses and refuses, the CLI speaks plainly.

`tensorrt_rtx` (dev requirement) carries TensorRT's ONNX parser and builder and
builds real serialized engines on the CPU for a chosen compute capability (8.9
here). Running engines needs a GPU: `engines/check_gpu.sh` does that part.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import tensorrt_rtx as trt  # a dev requirement: the builder that needs no GPU
from onnx import TensorProto, helper

from ros_anonymizer_engines.builder import BuildOptions, build_engine, onnx_profiles
from ros_anonymizer_engines.cache import build_cached
from ros_anonymizer_engines.calibration import calibration_batches, entropy_calibrator, read_frames
from ros_anonymizer.backends import ModelError, load_backend
from ros_anonymizer.backends.engine_files import read_verified_sidecar, sidecar_checksum, sidecar_path
from ros_anonymizer.backends.tensorrt_backend import TensorRTBackend, resolve_engine
from ros_anonymizer.config import AnonymizerConfig
from ros_anonymizer.faces import centerface_onnx

from conftest import REPO, require_data
from onnx_models import anonymizer_model, landmark_probe_anonymizer

SM = "8.9"  # an RTX compute capability tensorrt_rtx can target without a GPU
SHIPPED = sorted((REPO / "ros_anonymizer" / "models").glob("*.onnx"))


def conv_model(path: Path) -> Path:
    """A small conv net with a dynamic batch and image size: Conv, Relu, Resize, Sigmoid, like a detector head."""
    rng = np.random.default_rng(0)
    weight = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3], rng.normal(0, 0.2, (4, 3, 3, 3)).astype(np.float32).ravel())
    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 0.5, 0.5])
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["r"]),
         helper.make_node("Resize", ["r", "", "scales"], ["s"], mode="linear"),
         helper.make_node("Sigmoid", ["s"], ["heat"])],
        "conv", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["B", 3, "H", "W"])],
        [helper.make_tensor_value_info("heat", TensorProto.FLOAT, ["B", 4, "h", "w"])], [weight, scales])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def models_to_build(tmp: Path) -> dict[str, bytes]:
    models = {"face": centerface_onnx()}
    models.update({p.stem: p.read_bytes() for p in SHIPPED})
    models["test_anonymizer"] = anonymizer_model(tmp / "anon.onnx", crop_size=64).read_bytes()
    models["test_conv"] = conv_model(tmp / "conv.onnx").read_bytes()
    return models


def test_every_model_parses_and_builds(tmp_path):
    """CenterFace, every shipped model and the test's own dynamic models become engines; profiles follow the contracts."""
    built = {}
    for name, data in models_to_build(tmp_path).items():
        options = BuildOptions(precision="fp32", compute_capability=SM, batch=(1, 2, 8) if name == "test_conv" else None)
        path, was_built = build_cached(data, name, tmp_path / "cache", options)
        side = read_verified_sidecar(path)
        assert was_built and path.stat().st_size > 1000, name
        assert side["tensorrt_module"] == "tensorrt_rtx" and side["compute_capability"] == SM
        assert side["profiles"] == onnx_profiles(data, options), name
        built[name] = side
    assert built["face"]["profiles"]["input.1"] == [[1, 3, 32, 32], [1, 3, 480, 640], [1, 3, 1088, 1920]]
    assert built["test_anonymizer"]["profiles"]["faces"] == [[1, 3, 64, 64], [4, 3, 64, 64], [16, 3, 64, 64]]
    assert built["test_anonymizer"]["metadata"]["model_kind"] == "anonymizer"  # metadata_props travel with the engine
    assert built["test_conv"]["profiles"]["image"][2] == [8, 3, 1088, 1920]
    for path in SHIPPED:
        kind = onnx.load(str(path)).metadata_props
        assert {p.key: p.value for p in kind} == built[path.stem]["metadata"]


def test_unparsable_model_is_a_plain_error(tmp_path):
    graph = helper.make_graph([helper.make_node("NoSuchOp", ["x"], ["y"], domain="ros.test")], "bad",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ros.test", 1)])
    with pytest.raises(ModelError, match="cannot parse the ONNX model"):
        build_engine(model.SerializeToString(), BuildOptions(compute_capability=SM), trt=trt)


def test_unsupported_target_and_dla_are_refused():
    data = centerface_onnx()
    with pytest.raises(ModelError, match="cannot build for compute capability 9.0"):
        build_engine(data, BuildOptions(compute_capability="9.0"), trt=trt)
    with pytest.raises(ModelError, match="DLA core 0 does not exist here"):
        build_engine(data, BuildOptions(compute_capability=SM, dla_core=0), trt=trt)


@pytest.fixture()
def config(tmp_path):
    return AnonymizerConfig(engine_cache_dir=str(tmp_path / "cache"), trt_precision="fp16", build_if_missing=True)


def test_cache_reuses_and_rebuilds_only_when_the_model_changes(tmp_path, config):
    onnx_path = anonymizer_model(tmp_path / "anon.onnx")
    first = resolve_engine(onnx_path, config, "anonymizer", compute_capability=SM)
    stamp, built_at = first.stat().st_mtime_ns, read_verified_sidecar(first)["built_at"]
    again = resolve_engine(onnx_path, config, "anonymizer", compute_capability=SM)
    assert again == first and first.stat().st_mtime_ns == stamp and read_verified_sidecar(first)["built_at"] == built_at
    anonymizer_model(onnx_path, metadata={"preset": "retrained"})  # new weights/metadata: another hash, another engine
    changed = resolve_engine(onnx_path, config, "anonymizer", compute_capability=SM)
    assert changed != first and read_verified_sidecar(changed)["metadata"]["preset"] == "retrained"
    assert first.stat().st_mtime_ns == stamp  # the old engine is left alone
    for path, precision in ((first, "fp16"), (changed, "fp16")):
        side = read_verified_sidecar(path)
        assert side["requested_precision"] == precision and side["precision"] == "fp32"  # tensorrt_rtx: no fp16 flag


def test_engine_built_under_another_name_serves_the_same_model(tmp_path, config):
    """`engines build --name x` and the runtime's own name for the model find the same engine: the ONNX hash decides."""
    onnx_path = anonymizer_model(tmp_path / "anon.onnx")
    built, _ = build_cached(onnx_path, "my_anonymizer", config.engine_cache_dir, BuildOptions(compute_capability=SM))
    found = resolve_engine(onnx_path, config.replace(build_if_missing=False), "anonymizer", compute_capability=SM)
    assert found == built and len(list(Path(config.engine_cache_dir).glob("*.engine"))) == 1


def test_missing_engine_names_the_build_command(tmp_path, config):
    onnx_path = anonymizer_model(tmp_path / "anon.onnx")
    strict = config.replace(build_if_missing=False)
    with pytest.raises(ModelError) as error:
        resolve_engine(onnx_path, strict, "anonymizer", compute_capability=SM)
    assert f"ros-anonymizer engines build --model {onnx_path} --name anonymizer --precision fp16 --cache-dir {strict.engine_cache_dir}" in str(error.value)
    assert not any(Path(strict.engine_cache_dir).glob("*.engine"))


def _corrupt_engine(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _tamper_sidecar(path: Path, **changes) -> None:
    side = json.loads(sidecar_path(path).read_text())
    side.update(changes)
    sidecar_path(path).write_text(json.dumps(side))


@pytest.mark.parametrize("damage, message", [
    (_corrupt_engine, "does not match the SHA-256"),
    (lambda p: _tamper_sidecar(p, metadata={"model_kind": "anonymizer", "crop_size": "999"}), "was modified or is damaged"),
    (lambda p: sidecar_path(p).unlink(), "has no sidecar"),
    (lambda p: sidecar_path(p).write_text("{not json"), "is unreadable"),
])
def test_damaged_engines_are_refused(tmp_path, config, damage, message):
    """Fail closed: a corrupted engine or edited sidecar never loads, neither in the cache nor in the backend."""
    onnx_path = anonymizer_model(tmp_path / "anon.onnx")
    path = resolve_engine(onnx_path, config, "anonymizer", compute_capability=SM)
    damage(path)
    with pytest.raises(ModelError, match=message):
        resolve_engine(onnx_path, config.replace(build_if_missing=False), "anonymizer", compute_capability=SM)
    with pytest.raises(ModelError, match=message):
        TensorRTBackend(path)
    with pytest.raises(ModelError, match=message):
        load_backend(path, "auto")  # .engine files go to TensorRT
    rebuilt = resolve_engine(onnx_path, config, "anonymizer", compute_capability=SM)  # build_if_missing repairs it
    assert read_verified_sidecar(rebuilt)["engine_sha256"]


def test_engine_from_another_tensorrt_is_refused(tmp_path, config):
    path = resolve_engine(anonymizer_model(tmp_path / "anon.onnx"), config, "anonymizer", compute_capability=SM)
    side = json.loads(sidecar_path(path).read_text())
    side["tensorrt_version"] = "tensorrt_rtx 0.1.0"
    side["checksum"] = sidecar_checksum(side)  # a consistent sidecar, just for another TensorRT
    sidecar_path(path).write_text(json.dumps(side))
    with pytest.raises(ModelError, match="was built with tensorrt_rtx 0.1.0 but this machine has tensorrt_rtx"):
        TensorRTBackend(path)


def local_gpu() -> str | None:
    """GPU 0's compute capability as nvidia-smi reports it (independent of the code under test), or None.

    None as well when neither pycuda nor cuda-python is installed, since then no code here can use the GPU.
    """
    if not any(importlib.util.find_spec(name) for name in ("pycuda", "cuda")):
        return None
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.split()[0] if done.returncode == 0 and done.stdout.strip() else None


def test_building_for_the_local_gpu_needs_one(tmp_path):
    """Without --compute-capability the build targets GPU 0: refused without one, or for one tensorrt_rtx cannot target."""
    gpu = local_gpu()
    if gpu is None:  # the CI machine
        with pytest.raises(ModelError, match="cannot use CUDA GPU 0"):
            build_cached(centerface_onnx(), "face", tmp_path, BuildOptions())
    elif not hasattr(trt.ComputeCapability, "SM" + gpu.replace(".", "")):  # Hopper, Jetson
        with pytest.raises(ModelError, match=f"cannot build for compute capability {gpu}"):
            build_cached(centerface_onnx(), "face", tmp_path, BuildOptions())
    else:  # an RTX GPU: built for exactly that GPU
        path, _ = build_cached(centerface_onnx(), "face", tmp_path, BuildOptions())
        assert read_verified_sidecar(path)["options"]["compute_capability"] == read_verified_sidecar(path)["compute_capability"] == gpu


def test_valid_engine_runs_only_on_the_gpu_it_was_built_for(tmp_path, config):
    """An engine for compute capability 8.9: refused without a GPU or on another GPU generation, run on an 8.9 GPU."""
    path = resolve_engine(anonymizer_model(tmp_path / "anon.onnx"), config, "anonymizer", compute_capability=SM)
    gpu = local_gpu()
    if gpu is None:  # the CI machine
        with pytest.raises(ModelError, match="cannot use CUDA GPU 0"):
            TensorRTBackend(path)
    elif gpu != SM:
        with pytest.raises(ModelError, match=f"built for compute capability {SM} but GPU 0 .* has {gpu}"):
            TensorRTBackend(path)
    else:  # an RTX 40xx GPU runs it
        out = TensorRTBackend(path).run({"faces": np.ones((3, 3, 32, 32), np.float32)})["anonymized"]
        np.testing.assert_allclose(out, -1.0, atol=1e-3)


def test_tensorrt_backend_for_onnx_models_fails_closed_without_a_usable_gpu(tmp_path):
    """backend: tensorrt with ONNX models resolves engines; with no GPU (or no engine) start-up stops with a plain error."""
    from ros_anonymizer.pipeline import Pipeline

    config = AnonymizerConfig(backend="tensorrt", engine_cache_dir=str(tmp_path))
    with pytest.raises(ModelError, match="cannot use CUDA GPU 0|no TensorRT engine for face"):
        load_backend(centerface_onnx(), "tensorrt", config=config, model_name="face")
    with pytest.raises(ModelError):
        Pipeline(config)


def test_calibration_frames_and_batches_from_real_data(tmp_path):
    video = next(require_data("jhmdb", "catch").glob("*.avi"))
    frames = read_frames(video, limit=8)
    assert len(frames) == 8 and frames[0].shape == (240, 320, 3) and frames[0].dtype == np.uint8
    options = BuildOptions(compute_capability=SM)
    face_batches = calibration_batches(frames, {}, onnx_profiles(centerface_onnx(), options))
    assert face_batches[0]["input.1"].shape == (1, 3, 480, 640)
    assert face_batches[0]["input.1"][0, :, :, 640:].size == 0 and face_batches[0]["input.1"].max() > 100  # raw 0-255 pixels
    faces = read_frames(require_data("lfw", "images"), limit=8)  # a folder of images, spread over all of them
    assert len(faces) == 8 and all(f.shape == (250, 250, 3) for f in faces)
    anon = anonymizer_model(tmp_path / "anon.onnx").read_bytes()
    meta = {p.key: p.value for p in onnx.load_from_string(anon).metadata_props}
    crops = calibration_batches(faces, meta, onnx_profiles(anon, options))
    assert crops and crops[0]["faces"].shape == (4, 3, 32, 32)
    assert -1.0 <= crops[0]["faces"].min() < crops[0]["faces"].max() <= 1.0 and set(crops[0]) == {"faces"}
    # An M that takes landmarks calibrates on the detector's real ones, in the crop (0..1).
    probe = landmark_probe_anonymizer(tmp_path / "probe.onnx").read_bytes()
    guided = calibration_batches(faces, {p.key: p.value for p in onnx.load_from_string(probe).metadata_props}, onnx_profiles(probe, options))
    assert guided[0]["landmarks"].shape == (4, 10) and 0.0 < guided[0]["landmarks"].min() < guided[0]["landmarks"].max() < 1.0
    with pytest.raises(ModelError, match="has no INT8 calibration"):
        entropy_calibrator(trt, crops, tmp_path / "x.calib")


def test_calibration_frames_from_a_rosbag(tmp_path, sample_clip):
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    Image, Header, Time = (store.types[t] for t in ("sensor_msgs/msg/Image", "std_msgs/msg/Header", "builtin_interfaces/msg/Time"))
    with Writer(tmp_path / "bag", version=9) as writer:
        conn = writer.add_connection("/camera/image", Image.__msgtype__, typestore=store)
        for i, rgb in enumerate(sample_clip[:5]):
            msg = Image(Header(Time(i, 0), "cam"), rgb.shape[0], rgb.shape[1], "rgb8", 0, rgb.shape[1] * 3, rgb.reshape(-1))
            writer.write(conn, i * 10**8, store.serialize_cdr(msg, Image.__msgtype__))
    frames = read_frames(tmp_path / "bag", limit=3)
    assert len(frames) == 3 and np.array_equal(frames[0], sample_clip[0]) and np.array_equal(frames[-1], sample_clip[4])


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "ros_anonymizer.cli", "engines", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_builds_reuses_checks_and_refuses(tmp_path):
    cache = tmp_path / "cache"
    onnx_path = anonymizer_model(tmp_path / "m.onnx")
    build = ("build", "--model", "face", "--model", str(onnx_path), "--compute-capability", SM, "--cache-dir", str(cache))
    first = _cli(*build, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("built in") == 2 and "note: tensorrt_rtx cannot build fp16" in first.stdout
    second = _cli(*build, cwd=tmp_path)
    assert second.returncode == 0 and second.stdout.count("cached, reused") == 2, second.stdout
    engines = sorted(cache.glob("*.engine"))
    assert _cli("check", *map(str, engines), cwd=tmp_path).returncode == 0
    _corrupt_engine(engines[0])
    check = _cli("check", *map(str, engines), cwd=tmp_path)
    assert check.returncode == 2 and "REFUSED" in check.stdout and "Traceback" not in check.stderr
    assert check.stderr.startswith("ros-anonymizer engines: error: 1 of 2 engine(s) failed verification")
    listing = _cli("list", "--cache-dir", str(cache), cwd=tmp_path)
    assert listing.returncode == 0 and "REFUSED" in listing.stdout and "m fp32" in listing.stdout
    (tmp_path / "params.yaml").write_text(f"anonymizer:\n  ros__parameters:\n    engine_cache_dir: {tmp_path / 'from_config'}\n"
                                          f"    trt_precision: fp32\n    anonymizer_model: {onnx_path}\n")
    configured = _cli("build", "--config", str(tmp_path / "params.yaml"), "--model", "anonymizer", "--compute-capability", SM, cwd=tmp_path)
    assert configured.returncode == 0, configured.stderr
    assert [p.name.endswith("-fp32.engine") for p in (tmp_path / "from_config").glob("anonymizer-*.engine")] == [True]


@pytest.mark.parametrize("args, message", [
    (("build", "--model", "missing.onnx"), "expected face, anonymizer, action or an existing .onnx file"),
    (("build", "--model", "face", "--max-image", "big"), "must be HEIGHTxWIDTH"),
    (("build", "--model", "face", "--precision", "int8"), "int8 engines need --calibration-data"),
    (("build", "--model", "face", "--compute-capability", "9.0"), "cannot build for compute capability 9.0"),
])
def test_cli_bad_options_are_one_sentence(tmp_path, args, message):
    result = _cli(*args, "--cache-dir", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
