"""The evaluation harness: metrics on cases with known answers, with the real dlib recognizer,
the real CenterFace and the real Pipeline, and the command end to end on a small subset."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from conftest import REPO, require_data

from ros_anonymizer.config import AnonymizerConfig
from ros_anonymizer.media import read_image
from ros_anonymizer_evaluation import leaks, naturalness, privacy, recognizer, utility
from ros_anonymizer_evaluation.methods import PipelineMethod, Unchanged, build_methods, evaluation_config, trained_identities
from ros_anonymizer_evaluation.workers import FaceWorkers


@pytest.fixture(scope="module")
def dlib_recognizer():
    return recognizer.FaceRecognizer()


@pytest.fixture(scope="module")
def in_process():
    return FaceWorkers(1)


@pytest.fixture(scope="module")
def reference():
    return naturalness.reference_detector()


@pytest.fixture(scope="module")
def lfw_image():
    root = require_data("lfw")
    return read_image(privacy.image_path(root, privacy.ImageRef("Aaron_Peirsol", 1)))


def masked(config_filter: str = "mask") -> PipelineMethod:
    return PipelineMethod(evaluation_config(AnonymizerConfig(filter=config_filter, box_enlarge=1.6)))


# Privacy ---------------------------------------------------------------------------------

def test_identical_images_are_reidentified(dlib_recognizer, lfw_image):
    original = dlib_recognizer.describe(lfw_image)
    again = dlib_recognizer.describe(lfw_image.copy(), near=original.box)
    assert original is not None and again is not None
    assert privacy.reidentified(original.embedding[None], again.embedding[None]).tolist() == [True]
    assert privacy.reidentified(original.embedding[None], dlib_recognizer.embed_at(lfw_image, original)[None]).tolist() == [True]


def test_solid_mask_is_not_reidentified_and_no_face_is_found(dlib_recognizer, reference, lfw_image):
    original = dlib_recognizer.describe(lfw_image)
    out = masked()(lfw_image).image
    assert out is not None and not np.array_equal(out, lfw_image)
    assert dlib_recognizer.describe(out, near=original.box) is None
    located = dlib_recognizer.embed_at(out, original)
    assert privacy.reidentified(original.embedding[None], located[None]).tolist() == [False]
    box = naturalness.main_face(reference(lfw_image), lfw_image.shape)
    assert box is not None
    assert naturalness.face_still_found(reference(lfw_image), box)
    assert not naturalness.face_still_found(reference(out), box)
    inside, outside = naturalness.ssim_inside_outside(lfw_image, out, box)
    assert inside < 0.2 < outside


def test_a_face_dlib_cannot_find_counts_as_not_reidentified():
    nan = np.full((1, 128), np.nan, np.float32)
    assert privacy.reidentified(np.zeros((1, 128)), nan).tolist() == [False]
    assert privacy.verification_accuracy(np.array([np.nan, np.nan]), np.array([True, False])) == 0.5


def test_rank1_ignores_the_probe_itself_and_needs_another_image_of_the_person():
    e = np.eye(4, 128, dtype=np.float32)
    gallery, people, keys = e, ["a", "a", "b", "c"], ["a1", "a2", "b1", "c1"]
    probes = np.stack([0.9 * e[0] + 0.1 * e[1], e[3], e[3]])  # a1 nearest a2: hit; b1: no other b; a2 looks like c: miss
    rate, counted = privacy.rank1_identification(probes, ["a", "b", "a"], ["a1", "b1", "a2"], gallery, people, keys)
    assert (rate, counted) == (0.5, 2)


def test_tuned_threshold_separates_what_the_fixed_one_does_not():
    distance, same = np.array([0.7, 0.75, 0.9, 1.0]), np.array([True, True, False, False])
    assert privacy.verification_accuracy(distance, same) == 0.5
    accuracy, threshold = privacy.best_threshold_accuracy(distance, same)
    assert accuracy == 1.0 and 0.75 < threshold < 0.9


def test_verification_is_high_on_identical_images_and_chance_under_a_full_mask(in_process, tmp_path):
    root = require_data("lfw")
    pairs = privacy.select_pairs(privacy.read_pairs(root / "pairsDevTrain.txt"), 8)
    assert sum(p.same for p in pairs) == 4
    study = privacy.LfwStudy(root, pairs, in_process, cache=privacy.OriginalsCache(tmp_path / "c.npz"))
    again = privacy.LfwStudy(root, pairs, None, cache=privacy.OriginalsCache(tmp_path / "c.npz"))  # all from the cache
    assert np.array_equal(again.gallery, study.gallery) and again.gallery_keys == study.gallery_keys
    clear = study.run(Unchanged(), samples=2).metrics
    assert clear["reidentification"] == 1.0 and clear["located_attack"]["reidentification"] == 1.0
    assert clear["verification_accuracy"] >= 0.85
    assert clear["naturalness"]["ssim_face"] == 1.0
    hidden = study.run(masked()).metrics
    assert hidden["pairs"] == clear["pairs"]
    evaluated = [p for p in study.pairs if study.originals[p.first.key].face is not None]
    assert hidden["verification_accuracy"] == pytest.approx(sum(not p.same for p in evaluated) / len(evaluated))
    assert hidden["verification_accuracy"] == hidden["verification_chance"]
    assert hidden["reidentification"] == 0.0 and hidden["no_face_found"] == 1.0 and hidden["rank1_identification"] == 0.0
    assert hidden["naturalness"]["face_still_found"] == 0.0


def test_worker_processes_measure_exactly_what_one_process_does(in_process):
    root = require_data("lfw")
    pairs = privacy.select_pairs(privacy.read_pairs(root / "pairsDevTrain.txt"), 6)
    method = PipelineMethod(evaluation_config(AnonymizerConfig(filter="blur", blur_strength=0.1)))
    alone = privacy.LfwStudy(root, pairs, in_process)
    with FaceWorkers(2) as two:
        spread = privacy.LfwStudy(root, pairs, two)
        assert np.array_equal(spread.gallery, alone.gallery)
        got, expected = spread.run(method, samples=2).metrics, alone.run(method, samples=2).metrics
    for metrics in (got, expected):
        metrics.pop("seconds")
    assert got == expected and 0.0 < expected["naturalness"]["ssim_face"] < 1.0


def test_the_bundled_anonymizer_names_the_people_it_was_trained_against():
    notes = []
    methods = build_methods(["blur", "learned"], AnonymizerConfig(use_gpu=False), notes)
    people = trained_identities(methods)
    assert len(people) > 100 and any("learned: anonymizer trained on" in n for n in notes)
    images = require_data("lfw", "images")
    assert all((images / name).is_dir() for name in people)
    assert trained_identities(methods[:1]) == set()


def test_bad_pairs_file_is_a_plain_error(tmp_path):
    (tmp_path / "pairs.txt").write_text("2\nAaron 1 2\nnot a pair at all here\n")
    with pytest.raises(privacy.DatasetError, match="line 3"):
        privacy.read_pairs(tmp_path / "pairs.txt")


# Utility ---------------------------------------------------------------------------------

def test_ground_truth_against_itself_has_map_one():
    truth = [np.array([[10, 10, 50, 90]], np.float32), np.zeros((0, 4), np.float32),
             np.array([[0, 0, 20, 20], [30, 30, 60, 60]], np.float32)]
    labels = [["catch"], [], ["run", "catch"]]
    dets = [utility.Detections(b, np.ones(len(b), np.float32), l) for b, l in zip(truth, labels)]
    mean_ap, per_class = utility.frame_map(dets, truth, labels)
    assert mean_ap == 1.0 and per_class == {"catch": 1.0, "run": 1.0}


def test_a_box_shifted_below_iou_half_is_a_miss():
    truth = [np.array([[0, 0, 100, 100]], np.float32)]
    shifted = np.array([[40, 0, 140, 100]], np.float32)  # IoU 60/140 = 0.43
    near = np.array([[20, 0, 120, 100]], np.float32)  # IoU 80/120 = 0.67
    assert utility.frame_ap([(shifted, np.ones(1))], truth) == 0.0
    assert utility.frame_ap([(near, np.ones(1))], truth) == 1.0
    assert utility.frame_map([utility.Detections(near, np.ones(1), ["walk"])], truth, [["catch"]])[0] == 0.0  # wrong class


def test_duplicates_and_ranking_follow_voc():
    truth = [np.array([[0, 0, 10, 10]], np.float32), np.array([[0, 0, 10, 10]], np.float32)]
    box = np.array([[0, 0, 10, 10]], np.float32)
    # frame 0: a duplicate (false positive) ranked above the second frame's hit: precision 1, 1/2, 2/3
    dets = [(np.concatenate([box, box]), np.array([0.9, 0.8])), (box, np.array([0.7]))]
    assert utility.frame_ap(dets, truth) == pytest.approx(0.5 * 1.0 + 0.5 * 2 / 3)


def test_agreement_is_perfect_for_the_same_detections_and_counts_lost_people():
    boxes = np.array([[0, 0, 10, 10], [20, 20, 40, 40]], np.float32)
    ref = [utility.Detections(boxes, np.array([0.9, 0.8]), ["catch", "run"])]
    assert utility.agreement(ref, ref, 0.3)["f1"] == 1.0
    lost = [utility.Detections(boxes[:1], np.array([0.9]), ["run"])]
    result = utility.agreement(ref, lost, 0.3)
    assert result["recall"] == 0.5 and result["precision"] == 1.0 and result["same_action"] == 0.0


def test_dataset_readers_give_ground_truth_boxes():
    jhmdb = utility.jhmdb_clips(require_data("jhmdb"), max_frames=5)
    assert jhmdb[0].labels[0] == ["catch"] and jhmdb[0].boxes[0].shape == (1, 4) and len(jhmdb[0].frames) == 5
    ucf = utility.ucf24_clips(require_data("ucf101_24"))[0]
    assert len(ucf.frames) == 141 and sum(len(b) for b in ucf.boxes) == 44  # one tube, frames 8..51
    assert ucf.labels[8] == ["Basketball"] and not len(ucf.boxes[7]) and not len(ucf.boxes[52])
    x, y, w, h = 189, 102, 47, 78
    assert ucf.boxes[8].tolist() == [[x, y, x + w, y + h]]


# Leaks -----------------------------------------------------------------------------------

def test_leak_check_flags_raw_faces_and_passes_masked_or_dropped_ones(reference, lfw_image):
    boxes = reference(lfw_image).boxes
    assert len(boxes)
    assert leaks.leaked_faces(lfw_image, lfw_image.copy(), boxes) == len(boxes)
    assert leaks.leaked_faces(lfw_image, masked()(lfw_image).image, boxes) == 0
    assert leaks.leaked_faces(lfw_image, None, boxes) == 0
    partly = lfw_image.copy()
    x1, y1, x2, y2 = boxes[0].astype(int)
    partly[y1:y2, x1:x1 + (x2 - x1) // 3] = 0  # a third covered: still a leak
    assert leaks.leaked_faces(lfw_image, partly, boxes[:1]) == 1


# The command -----------------------------------------------------------------------------

def constant_action_model(path, classes=("catch",)):
    """An action detector following A's contract that reports one fixed person box, whatever the frame."""
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 240, 320])
    nodes = [helper.make_node("ReduceMean", ["image"], ["mean"], keepdims=0),
             helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
             helper.make_node("Add", ["nothing", "score"], ["scores"]),
             helper.make_node("Identity", ["box"], ["boxes"]),
             helper.make_node("Identity", ["label"], ["labels"])]
    graph = helper.make_graph(
        nodes, "constant_actions", [image],
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 4]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1]),
         helper.make_tensor_value_info("labels", TensorProto.INT64, [1])],
        [helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]), helper.make_tensor("score", TensorProto.FLOAT, [1], [0.9]),
         helper.make_tensor("box", TensorProto.FLOAT, [1, 4], [150, 60, 250, 210]),
         helper.make_tensor("label", TensorProto.INT64, [1], [0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in {"model_kind": "action_detector", "input_size": "[240, 320]",
                       "normalization": '{"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}',
                       "classes": json.dumps(list(classes)), "trained_on": "nothing: a test model"}.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path


def evaluate(*args):
    return subprocess.run([sys.executable, "-m", "ros_anonymizer.cli", "evaluate", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600)


def test_command_runs_end_to_end_on_a_small_subset(tmp_path):
    data = require_data()
    model = constant_action_model(tmp_path / "actions.onnx")
    out = tmp_path / "report"
    done = evaluate("--data", str(data), "--mot", "none", "--max-pairs", "4", "--max-frames", "4", "--located-probes", "2",
                    "--sweep-pairs", "2", "--samples", "2", "--methods", "none,blur,mask,deface", "--action-model", str(model),
                    "--out", str(out), "--cache", str(tmp_path / "cache"), "--no-progress")
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "report.json").read_text())
    rows = {row["label"]: row for row in report["methods"]}
    assert {"none", "blur", "mask", "deface"} <= set(rows) and any(k.startswith("blur blur_strength=") for k in rows)
    assert rows["none"]["privacy"]["reidentification"] == 1.0 and rows["mask"]["privacy"]["reidentification"] == 0.0
    assert rows["none"]["clips"]["utility"]["agreement_with_raw"]["f1"] == 1.0
    # the test's action detector ignores the pixels, so every filter must score exactly what the raw frames score
    utility_of = {name: rows[name]["clips"]["utility"] for name in ("none", "mask")}
    assert np.isfinite(utility_of["none"]["frame_map"]) and utility_of["mask"]["frame_map"] == utility_of["none"]["frame_map"]
    assert utility_of["mask"]["agreement_with_raw"]["f1"] == 1.0
    assert rows["mask"]["clips"]["speed"]["320x240"]["frames"] == 8
    assert rows["none"]["clips"]["leaks"]["frames_leaked"] == rows["none"]["clips"]["leaks"]["frames_with_faces"]
    assert "leaks_without_persistence" in rows["blur"]
    judged = lambda label, key: rows[label]["privacy"]["naturalness"][key]
    independent_detectors = ("dlib_cnn_found", "dlib_hog_found", "mtcnn_found", "blazeface_found", "cascade_found")
    assert all(judged("none", key) == 1.0 for key in independent_detectors)
    assert judged("none", "landmark_displacement") == 0.0
    assert all(judged("mask", key) == 0.0 for key in independent_detectors)
    assert judged("none", "judged_faces") == 2 and 0.0 < judged("none", "landmark_noise_original") < 0.05
    video = rows["none"]["clips"]["video"]
    assert "flicker_ratio" in video and (video["face_pairs"] == 0 or video["flicker_ratio"] == pytest.approx(1.0))
    for name in ("report.md", "privacy_utility.png", "privacy_naturalness.png", "samples.png"):
        assert (out / name).stat().st_size > 0
    assert "| mask |" in (out / "report.md").read_text()
    assert (tmp_path / "cache" / "lfw_originals_up0.npz").is_file()


def test_bad_dataset_path_or_method_stops_with_one_sentence(tmp_path):
    done = evaluate("--lfw", str(tmp_path / "missing"), "--out", str(tmp_path / "out"))
    assert done.returncode == 2
    assert "does not exist" in done.stderr and "Traceback" not in done.stderr
    done = evaluate("--methods", "blur,sharpen", "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and "sharpen" in done.stderr and "Traceback" not in done.stderr


def test_an_unreadable_cache_is_ignored(tmp_path):
    (tmp_path / "c.npz").write_bytes(b"not a numpy archive")
    assert privacy.OriginalsCache(tmp_path / "c.npz").entries == {}


def test_privacy_is_also_reported_without_the_trained_people(in_process):
    root = require_data("lfw")
    pairs = privacy.select_pairs(privacy.read_pairs(root / "pairsDevTrain.txt"), 6)
    trained = {pairs[0].first.person}
    study = privacy.LfwStudy(root, pairs, in_process, trained_people=trained)
    metrics = study.run(Unchanged()).metrics
    untouched = [p for p in pairs if p.first.person not in trained and p.second.person not in trained]
    assert metrics["pairs"] == len(pairs) and metrics["unseen_people"]["pairs"] == len(untouched) < len(pairs)
    assert metrics["unseen_people"]["reidentification"] == 1.0


def test_scattered_unchanged_pixels_are_not_a_leak(reference, lfw_image):
    box = reference(lfw_image).boxes[:1]
    speckled = lfw_image.copy()
    speckled[::2, ::2] = 255 - speckled[::2, ::2]  # a quarter of the pixels changed, evenly spread: a filter's texture
    assert leaks.leaked_faces(lfw_image, speckled, box) == 0


def test_a_method_that_drops_every_frame_is_judged_as_no_face_and_nothing_reidentified(in_process):
    """Fail closed inside the evaluation: a frame the pipeline drops (here: over its pixel limit) publishes nothing to judge."""
    root = require_data("lfw")
    pairs = privacy.select_pairs(privacy.read_pairs(root / "pairsDevTrain.txt"), 4)
    dropping = PipelineMethod(evaluation_config(AnonymizerConfig(filter="blur", max_image_pixels=100)))
    metrics = privacy.LfwStudy(root, pairs, in_process).run(dropping).metrics
    assert metrics["dropped_images"] > 0 and metrics["reidentification"] == 0.0 and metrics["located_attack"]["reidentification"] == 0.0
    judged = metrics["naturalness"]
    assert judged["judged_faces"] > 0
    assert all(judged[key] == 0.0 for key in ("dlib_cnn_found", "dlib_hog_found", "mtcnn_found", "blazeface_found", "cascade_found", "mesh_found"))
