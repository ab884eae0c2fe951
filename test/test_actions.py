"""The action detector A: dataset loaders on the real clips, training, ONNX export, runtime decode."""
from __future__ import annotations

import json
import pickle

import cv2
import numpy as np
import pytest
import scipy.io
import torch
from onnx import TensorProto, helper

from conftest import read_video, require_data
from ros_anonymizer.actions import ActionDetector, Actions, ActionTracker, letterbox, load_action_detector, preprocess
from ros_anonymizer.backends import ModelError, load_backend
from ros_anonymizer.config import AnonymizerConfig
from ros_anonymizer.faces import box_iou
from ros_anonymizer_training.data.actions import ActionFrames, FaceBoxCache, FrameRef, collate, normalize_images, paste_anonymized
from ros_anonymizer_training.data.clips import read_frame
from ros_anonymizer_training.data.jhmdb import load_jhmdb
from ros_anonymizer_training.data.ucf24 import CLASSES as UCF_CLASSES, load_ucf24, read_annotations
from ros_anonymizer_training.models.action_detector import (IMAGENET_NORMALIZATION, ActionDetectorExport, build_action_detector,
                                             detection_loss, export_action_detector)
from ros_anonymizer_training.train_action_detector import anonymized_frames, frame_ap

JHMDB_CLIP = "Goal_Keeping_Tips_catch_f_cm_np1_fr_med_2"
UCF_VIDEO = "Basketball/v_Basketball_g01_c01"
SMALL_INPUT = (128, 160)  # half of the 320x240 clips: keeps the overfitting test to seconds on 2 cores


@pytest.fixture(scope="module")
def jhmdb_clip():
    return load_jhmdb(require_data("jhmdb"))[0]


@pytest.fixture(scope="module")
def ucf_clip():
    return load_ucf24(require_data("ucf101_24"))[0]


# Loaders -----------------------------------------------------------------------

def test_jhmdb_box_is_the_puppet_mask_extent(jhmdb_clip):
    mask = scipy.io.loadmat(require_data("jhmdb", "puppet_mask", "catch", f"{JHMDB_CLIP}.mat"))["part_mask"]
    assert jhmdb_clip.name == f"catch/{JHMDB_CLIP}"
    assert jhmdb_clip.num_frames == mask.shape[2] == len(read_video(jhmdb_clip.video)) == 40
    for t in (0, 17, 39):
        rows = np.flatnonzero(mask[:, :, t].any(axis=1))
        cols = np.flatnonzero(mask[:, :, t].any(axis=0))
        expected = [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]
        np.testing.assert_array_equal(jhmdb_clip.boxes[t], [expected])
        assert [jhmdb_clip.class_names[label] for label in jhmdb_clip.labels[t]] == ["catch"]


def test_jhmdb_official_split_files_choose_the_clips(tmp_path):
    source = require_data("jhmdb")
    (tmp_path / "puppet_mask" / "catch").mkdir(parents=True)
    (tmp_path / "puppet_mask" / "catch" / f"{JHMDB_CLIP}.mat").symlink_to(source / "puppet_mask" / "catch" / f"{JHMDB_CLIP}.mat")
    (tmp_path / "catch").mkdir()
    (tmp_path / "catch" / f"{JHMDB_CLIP}.avi").symlink_to(source / "catch" / f"{JHMDB_CLIP}.avi")
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "catch_test_split1.txt").write_text(f"{JHMDB_CLIP}.avi 2\n")
    assert [c.name for c in load_jhmdb(tmp_path, split=1, subset="test")] == [f"catch/{JHMDB_CLIP}"]
    with pytest.raises(FileNotFoundError):
        load_jhmdb(tmp_path, split=1, subset="train")
    with pytest.raises(FileNotFoundError, match="split files"):
        load_jhmdb(tmp_path, split=2)


def test_ucf24_boxes_line_up_with_the_video_frames(ucf_clip):
    with open(require_data("ucf101_24", "pyannot.pkl"), "rb") as f:
        raw = pickle.load(f, encoding="latin1")[UCF_VIDEO]  # the plain reader, as a reference
    frames = read_video(ucf_clip.video)
    assert ucf_clip.name == UCF_VIDEO
    assert ucf_clip.num_frames == raw["numf"] == len(frames) == 141
    tube = raw["annotations"][0]
    assert ucf_clip.annotated_frames() == list(range(tube["sf"], tube["ef"]))
    height, width = frames[0].shape[:2]
    for t in ucf_clip.annotated_frames():
        (x1, y1, x2, y2), = ucf_clip.boxes[t]
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
        assert ucf_clip.class_names[ucf_clip.labels[t][0]] == "Basketball"
    x, y, w, h = tube["boxes"][0].astype(float)
    np.testing.assert_array_equal(ucf_clip.boxes[tube["sf"]], [[x, y, x + w, y + h]])


def test_ucf24_class_names_match_every_annotated_video():
    annotations = read_annotations(require_data("ucf101_24", "pyannot.pkl"))
    assert len(annotations) == 3194
    assert all(UCF_CLASSES[tube["label"]] == name.split("/")[0] for name, video in annotations.items() for tube in video["annotations"])


def test_ucf24_refuses_an_annotation_file_that_would_run_code(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    (tmp_path / "pyannot.pkl").write_bytes(pickle.dumps({"Basketball/v": Payload()}))
    with pytest.raises(ValueError, match="builtins.print"):
        load_ucf24(tmp_path)


def test_dataset_matches_the_runtime_preprocessing(jhmdb_clip, jhmdb_frames):
    item = ActionFrames([FrameRef(jhmdb_clip, 5)], SMALL_INPUT)[0]
    metadata = {"model_kind": "action_detector", "input_size": json.dumps(list(SMALL_INPUT)),
                "normalization": json.dumps(IMAGENET_NORMALIZATION), "classes": '["catch"]'}
    runtime_input, scale = preprocess(jhmdb_frames[5], metadata)
    np.testing.assert_allclose(normalize_images(item["image"][None]).numpy(), runtime_input, atol=1e-6)
    assert item["scale"] == scale == 0.5
    np.testing.assert_allclose(item["boxes"].numpy(), jhmdb_clip.boxes[5] * 0.5)


def test_face_boxes_are_computed_once_and_cached(tmp_path, jhmdb_clip, jhmdb_frames):
    frames = tmp_path / "clip"  # a frame folder, the other layout the loaders accept
    frames.mkdir()
    picked = (32, 36, 39)
    for n, t in enumerate(picked, 1):
        cv2.imwrite(str(frames / f"{n:05d}.png"), cv2.cvtColor(jhmdb_frames[t], cv2.COLOR_RGB2BGR))
    cache = FaceBoxCache(tmp_path / "cache")
    found = cache.boxes(frames)
    assert len(found) == 3 and sum(len(f) for f in found) >= 1
    for faces, t in zip(found, picked):
        (x1, y1, x2, y2), = jhmdb_clip.boxes[t]
        centers = (faces[:, :2] + faces[:, 2:]) / 2
        assert ((centers[:, 0] > x1) & (centers[:, 0] < x2) & (centers[:, 1] > y1) & (centers[:, 1] < y2)).all()
    assert cache.path_for(frames).is_file()
    again = FaceBoxCache(tmp_path / "cache")
    again._detector = "must not run"  # a second cache object reads the file instead of detecting again
    assert all(np.array_equal(a, b) for a, b in zip(again.boxes(frames), found))


def test_a_can_train_on_the_frames_the_runtime_publishes(jhmdb_clip, jhmdb_frames):
    refs = [FrameRef(jhmdb_clip, t) for t in (32, 36, 39)]  # frames where the goalkeeper's face is visible
    published = anonymized_frames(refs, AnonymizerConfig(filter="learned"))
    assert set(published) == {(jhmdb_clip.name, t) for t in (32, 36, 39)}
    assert all(not np.array_equal(published[jhmdb_clip.name, t], jhmdb_frames[t]) for t in (32, 36, 39))
    item = ActionFrames(refs[:1], SMALL_INPUT, frames=published)[0]
    expected, _ = letterbox(published[jhmdb_clip.name, 32], SMALL_INPUT)
    assert np.array_equal(item["image"].permute(1, 2, 0).numpy(), expected)


def test_pasting_anonymized_faces_changes_only_faces_and_passes_gradients():
    torch.manual_seed(0)
    images = torch.rand(2, 3, 96, 128) * 255
    faces = [torch.tensor([[40.0, 20.0, 60.0, 44.0]]), torch.zeros(0, 4)]
    identity = paste_anonymized(images, faces, lambda crops: crops, 32, 1.3)
    assert (identity - images).abs().mean() < 0.5
    darken = torch.nn.Conv2d(3, 3, 1)
    torch.nn.init.zeros_(darken.weight), torch.nn.init.constant_(darken.bias, -1.0)
    out = paste_anonymized(images, faces, darken, 32, 1.3)
    assert out[0, :, 32, 50].abs().max() < 1  # the face centre is M's (black) output
    outside = torch.ones(96, 128, dtype=torch.bool)
    outside[16:48, 34:66] = False  # the square square_regions grows around the face (1.3 x its 24 px height)
    assert torch.equal(out[0][:, outside], images[0][:, outside]) and torch.equal(out[1], images[1])
    out.sum().backward()
    assert darken.bias.grad.abs().sum() > 0


def test_trainer_gets_batches_whose_detection_loss_reaches_m(tmp_path, jhmdb_frames):
    from types import SimpleNamespace

    from ros_anonymizer_training.data.actions import ActionTraining

    # Eight frames of the shared clip in the official layout: frame folder + puppet_mask/<class>/<clip>/puppet_mask.mat.
    mask = scipy.io.loadmat(require_data("jhmdb", "puppet_mask", "catch", f"{JHMDB_CLIP}.mat"))["part_mask"][:, :, 30:38]
    (tmp_path / "puppet_mask" / "catch" / JHMDB_CLIP).mkdir(parents=True)
    scipy.io.savemat(tmp_path / "puppet_mask" / "catch" / JHMDB_CLIP / "puppet_mask.mat", {"part_mask": mask})
    (tmp_path / "Rename_Images" / "catch" / JHMDB_CLIP).mkdir(parents=True)
    for n, frame in enumerate(jhmdb_frames[30:38], 1):
        cv2.imwrite(str(tmp_path / "Rename_Images" / "catch" / JHMDB_CLIP / f"{n:05d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    cfg = SimpleNamespace(preset="tiny", jhmdb_root=str(tmp_path), ucf24_root="", cache_dir=str(tmp_path / "cache"),
                          augment=False, seed=0, crop_size=32, box_enlarge=1.3)
    model, optimizer, data = ActionTraining.build(cfg, "cpu")
    images, targets = data.batch(7, 4, "cpu")
    again, _ = data.batch(7, 4, "cpu")
    assert images.shape == (4, 3, 192, 256) and torch.equal(images, again)
    assert data.dataset.classes == ("catch",) and all(len(t["boxes"]) == 1 for t in targets)
    with_faces = next(step for step in range(8) if any(len(t["faces"]) for t in data.batch(step, 4, "cpu")[1]))
    m = torch.nn.Conv2d(3, 3, 1)
    anonymized, targets = data.anonymized_batch(with_faces, 4, "cpu", m, cfg)
    assert not torch.equal(anonymized, data.batch(with_faces, 4, "cpu")[0])
    data.loss(model(anonymized), targets).backward()
    assert m.weight.grad.abs().sum() > 0 and optimizer.param_groups[0]["params"][0].grad is not None


# Training and export -----------------------------------------------------------

@pytest.fixture(scope="module")
def overfit(jhmdb_clip, ucf_clip):
    """An edge detector trained on four frames (two per clip) until it knows them, and its loss curve."""
    torch.manual_seed(0)
    refs = [FrameRef(jhmdb_clip, 4), FrameRef(jhmdb_clip, 30), FrameRef(ucf_clip, 10), FrameRef(ucf_clip, 40)]
    dataset = ActionFrames(refs, SMALL_INPUT, ("Basketball", "catch"))
    images, targets = collate([dataset[i] for i in range(len(dataset))])
    model = build_action_detector({"preset": "edge", "num_classes": 2})
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses, threads = [], torch.get_num_threads()
    torch.set_num_threads(1)  # these small convolutions run 10-25x slower with 2 threads on a busy 2-core machine
    try:
        for _ in range(60):
            loss = detection_loss(model(normalize_images(images)), targets)["loss"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    finally:
        torch.set_num_threads(threads)
    return model.eval(), losses, refs


def test_detector_overfits_a_few_frames(overfit):
    _, losses, _ = overfit
    assert np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < 0.3 * np.mean(losses[:5]), losses


@pytest.fixture(scope="module")
def exported(overfit, tmp_path_factory):
    model, _, _ = overfit
    path = tmp_path_factory.mktemp("action") / "a.onnx"
    export_action_detector(model, path, SMALL_INPUT, ["Basketball", "catch"], trained_on="four test frames", max_detections=20)
    return path


def test_exported_model_matches_torch_decode(overfit, exported, jhmdb_frames, ucf_frames):
    """Tolerance: scores within 1e-4, boxes within 0.01 network-input pixels, labels identical."""
    model, _, _ = overfit
    backend = load_backend(exported, "onnxruntime", use_gpu=False)
    assert [o.name for o in backend.outputs] == ["boxes", "scores", "labels"]
    assert backend.metadata["model_kind"] == "action_detector"
    assert json.loads(backend.metadata["input_size"]) == list(SMALL_INPUT)
    assert json.loads(backend.metadata["classes"]) == ["Basketball", "catch"]
    wrapper = ActionDetectorExport(model, 20).eval()
    for frame in (jhmdb_frames[4], ucf_frames[45]):
        x, _ = preprocess(frame, backend.metadata)
        out = backend.run({"image": x})
        with torch.no_grad():
            boxes, scores, labels = (t.numpy() for t in wrapper(torch.from_numpy(x)))
        assert out["labels"].dtype == np.int64 and out["boxes"].shape == (20, 4)
        np.testing.assert_allclose(out["scores"], scores, atol=1e-4)
        confident = scores > 0.1
        assert confident.any()
        np.testing.assert_allclose(out["boxes"][confident], boxes[confident], atol=1e-2)
        np.testing.assert_array_equal(out["labels"][confident], labels[confident])


def test_runtime_boxes_are_in_frame_pixels(overfit, exported):
    """The trained frames, at their own size and enlarged 2x: the best box lands on the person either way."""
    _, _, refs = overfit
    detector = ActionDetector(load_backend(exported, "onnxruntime", use_gpu=False), score_threshold=0.2)
    for ref in refs:
        frame = read_frame(ref.clip.video, ref.frame)
        truth = ref.clip.boxes[ref.frame]
        for factor in (1, 2):
            big = cv2.resize(frame, None, fx=factor, fy=factor, interpolation=cv2.INTER_LINEAR)
            detector.reset()
            actions = detector(big)
            assert len(actions), ref
            assert box_iou(actions.boxes[:1], truth * factor)[0, 0] > 0.5, (ref, actions.boxes[:1], truth * factor)
            assert actions.names()[0] == ref.clip.class_names[ref.clip.labels[ref.frame][0]]


def _constant_model(metadata: dict[str, str] | None, input_size=(64, 96), boxes=((8.0, 4.0, 40.0, 60.0),)) -> bytes:
    """A hand-built ONNX graph that ignores its image and returns fixed detections (network-input pixels)."""
    k = len(boxes)
    nodes = [helper.make_node("Constant", [], ["boxes"], value=helper.make_tensor("b", TensorProto.FLOAT, [k, 4], np.ravel(boxes).tolist())),
             helper.make_node("Constant", [], ["scores"], value=helper.make_tensor("s", TensorProto.FLOAT, [k], [0.9] * k)),
             helper.make_node("Constant", [], ["labels"], value=helper.make_tensor("l", TensorProto.INT64, [k], [1] * k)),
             helper.make_node("ReduceMean", ["image"], ["unused"], keepdims=0)]
    graph = helper.make_graph(nodes, "constant_detector",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, *input_size])],
                              [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [k, 4]),
                               helper.make_tensor_value_info("scores", TensorProto.FLOAT, [k]),
                               helper.make_tensor_value_info("labels", TensorProto.INT64, [k])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    return model.SerializeToString()


GOOD_METADATA = {"model_kind": "action_detector", "input_size": "[64, 96]",
                 "normalization": json.dumps(IMAGENET_NORMALIZATION), "classes": '["stand", "wave"]'}


def test_letterbox_inverse_maps_boxes_back_to_the_frame():
    detector = ActionDetector(load_backend(_constant_model(GOOD_METADATA), "onnxruntime", use_gpu=False))
    wide = np.zeros((120, 240, 3), np.uint8)  # limited by width: scale 96/240 = 0.4
    actions = detector(wide)
    np.testing.assert_allclose(actions.boxes, [[20.0, 10.0, 100.0, 120.0]], atol=1e-4)  # y2 150 clipped to the frame
    assert actions.names() == ["wave"] and actions.class_names == ("stand", "wave")
    tall = np.zeros((256, 128, 3), np.uint8)  # limited by height: scale 64/256 = 0.25
    np.testing.assert_allclose(detector(tall).boxes, [[32.0, 16.0, 128.0, 240.0]], atol=1e-4)


def test_letterbox_pads_bottom_and_right_with_zeros():
    frame = np.full((100, 300, 3), 200, np.uint8)
    padded, scale = letterbox(frame, (64, 96))
    assert padded.shape == (64, 96, 3) and scale == pytest.approx(0.32)
    assert (padded[:32] == 200).all() and (padded[32:] == 0).all()


@pytest.mark.parametrize("metadata, message", [
    (None, "not an action detector"),
    ({"model_kind": "anonymizer"}, "not an action detector"),
    ({k: v for k, v in GOOD_METADATA.items() if k != "classes"}, "lacks 'classes'"),
    ({**GOOD_METADATA, "normalization": "{not json"}, "cannot be read"),
])
def test_a_model_without_the_metadata_is_refused(metadata, message):
    backend = load_backend(_constant_model(metadata), "onnxruntime", use_gpu=False)
    with pytest.raises(ModelError, match=message):
        ActionDetector(backend)


def test_no_action_model_configured_means_no_detector():
    assert load_action_detector(AnonymizerConfig()) is None


def test_bundled_model_finds_the_person_in_its_clips(jhmdb_clip, ucf_clip):
    """The shipped demonstrator on held-out frames (the last of each clip), at 640x480 as a robot camera sends them."""
    detector = load_action_detector(AnonymizerConfig(action_model="default", use_gpu=False))
    assert detector.class_names == ("Basketball", "catch")
    for clip, t in ((jhmdb_clip, 36), (ucf_clip, 48)):
        frame = cv2.resize(read_frame(clip.video, t), (640, 480))
        actions = detector(frame)
        truth = clip.boxes[t] * 2
        assert len(actions) and box_iou(actions.boxes[:1], truth)[0, 0] > 0.5, (clip.name, actions.boxes, truth)
        assert actions.names()[0] == clip.class_names[clip.labels[t][0]]


def test_tracker_keeps_ids_of_moving_people_and_forgets_after_misses():
    tracker = ActionTracker(match_iou=0.3, max_misses=2)
    first = tracker.update(np.array([[0, 0, 10, 20], [50, 0, 60, 20]], np.float32))
    moved = tracker.update(np.array([[52, 1, 62, 21], [1, 0, 11, 20]], np.float32))
    assert list(moved) == [first[1], first[0]]
    for _ in range(3):
        tracker.update(np.zeros((0, 4), np.float32))
    assert tracker.update(np.array([[0, 0, 10, 20]], np.float32))[0] not in first


def test_frame_ap_counts_hits_misses_and_duplicates():
    truth = [(np.array([[0, 0, 10, 10]], np.float32), np.array([0]))]
    perfect = [(np.array([[0, 0, 10, 10]], np.float32), np.array([0.9], np.float32), np.array([0]))]
    assert frame_ap(perfect, truth, 1) == [1.0]
    wrong_class = [(perfect[0][0], perfect[0][1], np.array([1]))]
    assert frame_ap(wrong_class, truth, 2)[0] == 0.0
    duplicate_first = [(np.array([[0, 0, 10, 10], [0, 0, 10, 10]], np.float32), np.array([0.9, 0.95], np.float32), np.array([0, 0]))]
    assert frame_ap(duplicate_first, truth, 1) == [1.0]  # the second hit on one person is a false positive after recall 1
    miss_first = [(np.array([[50, 50, 60, 60], [0, 0, 10, 10]], np.float32), np.array([0.95, 0.9], np.float32), np.array([0, 0]))]
    assert frame_ap(miss_first, truth, 1) == [0.5]


def test_empty_actions_keep_their_class_names():
    empty = Actions.empty(("a", "b"))
    assert len(empty) == 0 and empty.class_names == ("a", "b") and empty.boxes.shape == (0, 4)
