"""The natural-face trainer (issue 10): low-pass generator, realism discriminator, landmark/low-pass/ring losses, export."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import require_data
from ros_anonymizer.media import read_image
from ros_anonymizer_training import losses
from ros_anonymizer_training.config import TrainConfig, TrainConfigError
from ros_anonymizer_training.models.anonymizer import LowPassAnonymizer, build_anonymizer
from ros_anonymizer_training.models.realism import PatchDiscriminator
from ros_anonymizer_training.train import train

NATURAL = dict(m_generator="lowpass", m_input_size=8, m_channels=8, m_blocks=1, lambda_realism=1.0, lambda_lowpass=5.0,
               lowpass_size=8, lambda_ring=2.0, lambda_landmarks=1.0, landmark_faces=8, lambda_det=0.0, pretrain_a_steps=0)


def real_faces(n: int = 8, size: int = 32) -> torch.Tensor:
    """n LFW face crops in [-1, 1] (the runtime's crop geometry is not needed here: LFW centres the face)."""
    root = require_data("lfw", "images")
    paths = sorted(root.glob("A*/*_0001.jpg"))[:n]
    crops = [read_image(p)[60:190, 60:190] for p in paths]
    x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 127.5 - 1
    return torch.nn.functional.interpolate(x, size=(size, size), mode="area")


@pytest.mark.parametrize("coarse", [{}, {"m_input_size": 4, "m_grid_size": 8}], ids=["edge", "4x4 input on the 8x8 grid"])
def test_edge_generator_has_no_transposed_convolution_and_sees_only_the_low_pass_copy(coarse):
    cfg = TrainConfig.load("edge", [f"{k}={v}" for k, v in coarse.items()])
    m = build_anonymizer(cfg).eval()
    assert isinstance(m, LowPassAnonymizer)
    assert not [layer for layer in m.modules() if isinstance(layer, torch.nn.ConvTranspose2d)]
    paper = build_anonymizer(TrainConfig.load("paper"))  # the authors' generator keeps its transposed convolutions
    assert [layer for layer in paper.modules() if isinstance(layer, torch.nn.ConvTranspose2d)]
    edge = build_anonymizer(TrainConfig.load("edge")).state_dict()  # the same weights: a coarser M can start from an edge M
    assert {k: v.shape for k, v in m.state_dict().items()} == {k: v.shape for k, v in edge.items()}
    faces = real_faces(4, 64)
    block = cfg.crop_size // cfg.m_input_size  # detail with zero mean in every block is invisible to M: it cannot pass identity on
    detail = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    detail -= torch.nn.functional.avg_pool2d(detail, block).repeat_interleave(block, 2).repeat_interleave(block, 3)
    with torch.no_grad():  # float32 rounding of the pooled sums only: seen detail moves the output by 1e-2 and more
        torch.testing.assert_close(m(faces), m(faces + 0.3 * detail), atol=1e-4, rtol=0)
        assert not torch.allclose(m(faces), m(faces * 0.5), atol=1e-3)  # ... while the coarse picture does reach it
        m.scale_detail(0.0)  # the trade-off knob at its end: nothing painted, the low-pass copy itself
        base = torch.nn.functional.interpolate(torch.nn.functional.avg_pool2d(faces, block), scale_factor=float(block), mode="bilinear")
        torch.testing.assert_close(m(faces), base.clamp(-1, 1))


def test_realism_discriminator_and_generator_each_move_their_loss_the_right_way():
    torch.manual_seed(0)
    real = real_faces(8)
    m, r = LowPassAnonymizer(32, 8, 8, 1), PatchDiscriminator(16, 2)
    opt_r = torch.optim.Adam(r.parameters(), lr=2e-3, betas=(0.5, 0.999))
    fake = m(real).detach()
    before = losses.realism_d_loss(r(real), r(fake)).item()
    for _ in range(30):
        loss = losses.realism_d_loss(r(real), r(fake))
        opt_r.zero_grad()
        loss.backward()
        opt_r.step()
    assert loss.item() < 0.5 * before, "R did not learn to tell real faces from M's outputs"
    r.requires_grad_(False)
    opt_m = torch.optim.Adam(m.parameters(), lr=2e-3, betas=(0.5, 0.999))
    start = losses.realism_g_loss(r(m(real))).item()
    for _ in range(30):
        loss = losses.realism_g_loss(r(m(real)))
        opt_m.zero_grad()
        loss.backward()
        opt_m.step()
    assert loss.item() < 0.7 * start, "M did not learn to fool a fixed R"


def test_landmark_lowpass_and_ring_losses_are_zero_on_the_input_and_grow_with_change():
    from ros_anonymizer_training.models.face_detector import CenterFaceTorch
    from ros_anonymizer_training.train import _soft_ellipse

    faces = real_faces(4, 64)
    detector = CenterFaceTorch()
    mask = torch.from_numpy(_soft_ellipse(64))
    assert losses.landmark_loss(detector, faces, faces).item() < 1e-6
    assert losses.lowpass_l1(faces, faces, 8).item() == 0 and losses.ring_l1(faces, faces, mask).item() == 0
    shifted = torch.roll(faces, shifts=(6, 6), dims=(2, 3))  # the same faces, moved: the landmarks must notice
    assert losses.landmark_loss(detector, shifted, faces).item() > 0.02
    assert losses.lowpass_l1(shifted, faces, 8).item() > 0.02
    assert losses.ring_l1(faces + 0.5, faces, mask).item() == pytest.approx(0.5, rel=1e-4)
    grey = torch.zeros_like(faces).requires_grad_(True)
    losses.landmark_loss(detector, grey, faces).backward()
    assert grey.grad.abs().sum() > 0


@pytest.fixture(scope="module")
def natural_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("natural")
    values = TrainConfig.load("tiny").to_dict()
    values.update(faces_root=str(require_data("lfw", "images")), cache_dir=str(tmp / "cache"), out_dir=str(tmp / "run"),
                  pretrain_d_steps=40, joint_steps=30, eval_every=30, log_every=5, track_views=3,
                  lambda_track_privacy=1.0, m_landmarks=True, m_landmark_shape="turn", **NATURAL)
    cfg = TrainConfig.from_dict(values)
    out = train(cfg, ["pretrain-d", "joint", "export"])
    return cfg, [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_trainer_runs_every_new_term_and_the_export_runs_in_the_runtime(natural_run):
    import onnx

    from ros_anonymizer.backends import load_backend
    from ros_anonymizer.filters import LearnedAnonymizer

    cfg, records = natural_run
    joint = [r for r in records if r["kind"] == "train" and r["stage"] == "joint"]
    for key in ("loss_r", "loss_realism", "loss_lowpass", "loss_ring", "loss_landmarks", "loss_privacy", "loss_track_privacy", "loss_l1"):
        assert joint and all(np.isfinite(r[key]) for r in joint), key
    pretrain = [r for r in records if r["kind"] == "train" and r["stage"] == "pretrain-d"]
    assert pretrain[-1]["loss_lowpass"] < pretrain[0]["loss_lowpass"], "M did not learn the face's colour and lighting"
    exported = [r for r in records if r["kind"] == "export"][-1]
    assert exported["max_abs_diff"] <= 1e-4
    graph = onnx.load(exported["path"])
    assert "ConvTranspose" not in {n.op_type for n in graph.graph.node}
    backend = load_backend(exported["path"], "onnxruntime", use_gpu=False)
    assert "lowpass generator on 8x8 low-pass input and CenterFace's 5 landmarks (turn)" in backend.metadata["trained_on"]
    assert "track privacy over 3 views" in backend.metadata["trained_on"]
    assert [i.name for i in graph.graph.input] == ["faces", "landmarks"]
    learned = LearnedAnonymizer(backend)
    assert learned.takes_landmarks
    rgb = read_image(require_data("lfw", "images", "Aaron_Peirsol", "Aaron_Peirsol_0001.jpg"))
    out = rgb.copy()
    landmarks = np.array([[110, 110, 140, 110, 125, 130, 112, 150, 138, 150]], np.float32)
    x1, y1, x2, y2 = learned(out, np.array([[90, 80, 160, 170]], np.float32), landmarks)[0]
    assert np.abs(out[y1:y2, x1:x2].astype(int) - rgb[y1:y2, x1:x2]).mean() > 1.0
    outside = np.ones(rgb.shape[:2], bool)
    outside[y1:y2, x1:x2] = False
    assert np.array_equal(out[outside], rgb[outside])


def test_landmark_heads_start_at_zero_and_then_paint_only_where_the_landmarks_are_known():
    from ros_anonymizer_training.data.faces import flip_landmarks

    torch.manual_seed(0)
    plain = LowPassAnonymizer(32, 4, 8, 1, 8).eval()
    guided = LowPassAnonymizer(32, 4, 8, 1, 8, landmarks=True).eval()
    guided.load_state_dict(plain.state_dict(), strict=False)
    x = real_faces(3)
    marks = torch.tensor([[0.35, 0.4, 0.65, 0.4, 0.5, 0.55, 0.4, 0.7, 0.6, 0.7]] * 2 + [[-1.0] * 10])
    with torch.no_grad():
        assert torch.equal(guided(x, marks), plain(x))  # zero heads: the M it was started from
        for head in guided.landmark_heads:
            torch.nn.init.normal_(head.weight, 0, 0.5)
        moved = guided(x, marks)
        unknown = guided(x, torch.full_like(marks, -1.0))
    assert (moved[:2] - unknown[:2]).abs().mean() > 1e-3 and torch.equal(moved[2], unknown[2])
    maps = guided.landmark_maps(guided.points(marks), 16)
    assert maps.shape == (3, 5, 16, 16) and maps[2].abs().max() == 0
    assert maps[0, 0].flatten().argmax() == 6 * 16 + 5  # the left eye's peak, at x 0.35 and y 0.4 of 16 cells
    mirrored = flip_landmarks(marks)
    assert torch.allclose(mirrored[0, :2], torch.tensor([0.35, 0.4])) and torch.allclose(mirrored[0, 4:6], torch.tensor([0.5, 0.55]))
    assert torch.allclose(flip_landmarks(mirrored), marks)


def test_a_landmark_step_rounds_the_points_and_keeps_unknown_faces_unknown():
    stepped = LowPassAnonymizer(32, 4, 8, 1, 8, landmarks=True, landmark_step=0.25)
    marks = torch.tensor([[0.3, 0.4, 0.7, 0.4, 0.5, 0.55, 0.4, 0.7, 0.6, 0.7], [-1.0] * 10])
    rounded = torch.tensor([[0.25, 0.5, 0.75, 0.5, 0.5, 0.5, 0.5, 0.75, 0.5, 0.75], [-1.0] * 10])
    exact = LowPassAnonymizer(32, 4, 8, 1, 8, landmarks=True)
    assert torch.equal(stepped.landmark_maps(stepped.points(marks), 16), exact.landmark_maps(exact.points(rounded), 16))
    assert stepped.landmark_maps(stepped.points(marks), 16)[1].abs().max() == 0
    with pytest.raises(TrainConfigError, match="m_landmark_step"):
        TrainConfig.load("edge", ["m_landmark_step=0.7"])


def test_pose_points_keep_place_size_roll_and_yaw_but_not_the_persons_proportions():
    from ros_anonymizer_training.models.anonymizer import FACE_TEMPLATE

    template = torch.tensor(FACE_TEMPLATE) / 112.0
    angle = torch.tensor(0.3)
    rotation = torch.stack([torch.stack([angle.cos(), -angle.sin()]), torch.stack([angle.sin(), angle.cos()])])
    placed = (template - 0.5) @ rotation.T * 0.8 + torch.tensor([0.52, 0.47])  # a generic face, rolled, smaller, moved
    posed = LowPassAnonymizer(32, 4, 8, 1, 8, landmarks=True, landmark_shape="pose")
    x, y, known = posed.points(torch.stack([placed.flatten(), torch.full((10,), -1.0)]))
    torch.testing.assert_close(torch.stack((x[0], y[0]), 1), placed, atol=1e-5, rtol=0)  # what is already the template stays
    assert torch.isfinite(x).all() and posed.landmark_maps((x, y, known), 16)[1].abs().max() == 0  # an unknown face: no maps

    def pose(marks):
        return torch.stack(LowPassAnonymizer.pose_points(marks), 2).flatten(1)

    def proportions(marks):  # mouth width and eye-to-mouth height, in eye distances: what differs between people
        p = marks.view(-1, 5, 2)
        eyes = (p[:, 1] - p[:, 0]).norm(dim=1)
        return torch.stack([(p[:, 4] - p[:, 3]).norm(dim=1) / eyes, ((p[:, 3] + p[:, 4]) / 2 - (p[:, 0] + p[:, 1]) / 2).norm(dim=1) / eyes], 1)

    people = placed.flatten() + 0.03 * torch.randn(6, 10, generator=torch.Generator().manual_seed(0))
    assert proportions(people).std(0).min() > 0.05  # six different faces ...
    assert proportions(pose(people)).std(0).max() < 0.02  # ... all given the template's proportions
    turned = placed.clone()
    turned[2:, 0] += torch.tensor([0.06, 0.03, 0.03])  # the head turned: nose and mouth move sideways, the eyes do not
    yawed = pose(turned.flatten()[None])[0].view(5, 2)
    nose_shift = (yawed[2] - (yawed[0] + yawed[1]) / 2) - (placed[2] - (placed[0] + placed[1]) / 2)
    assert nose_shift[0] > 0.03  # the yaw reaches M
    with pytest.raises(TrainConfigError, match="m_landmark_shape"):
        TrainConfig.load("edge", ["m_landmarks=true", "m_landmark_shape=face"])


def test_turn_points_keep_sideways_place_roll_and_yaw_but_give_everyone_one_height_and_size():
    from ros_anonymizer_training.models.anonymizer import FACE_TEMPLATE, TURN_HEIGHT, TURN_SIZE

    template = torch.tensor(FACE_TEMPLATE) / 112.0
    template = template - template.mean(0)
    turned = LowPassAnonymizer(32, 4, 8, 1, 8, landmarks=True, landmark_shape="turn")
    faces = []
    for angle, size, x, y in ((0.3, 0.7, 0.45, 0.50), (0.3, 0.9, 0.45, 0.60), (-0.2, 0.8, 0.55, 0.55)):
        angle = torch.tensor(angle)
        rotation = torch.stack([torch.stack([angle.cos(), -angle.sin()]), torch.stack([angle.sin(), angle.cos()])])
        faces.append((template @ rotation.T * size + torch.tensor([x, y])).flatten())
    x, y, _ = turned.points(torch.stack(faces))
    cx, cy, a, b, _ = LowPassAnonymizer.pose_fit(torch.stack((x, y), 2).flatten(1))
    torch.testing.assert_close(cy.flatten(), torch.full((3,), TURN_HEIGHT), atol=1e-5, rtol=0)  # one height ...
    torch.testing.assert_close(a.hypot(b).flatten(), torch.full((3,), TURN_SIZE), atol=1e-5, rtol=0)  # ... and size for all
    torch.testing.assert_close(cx.flatten(), torch.tensor([0.45, 0.45, 0.55]), atol=1e-5, rtol=0)  # the sideways place stays
    torch.testing.assert_close(torch.atan2(b, a).flatten(), torch.tensor([0.3, 0.3, -0.2]), atol=1e-5, rtol=0)  # and the roll
    yawed = faces[0].clone().view(5, 2)
    yawed[2:, 0] += 0.05
    before, after = (torch.stack(turned.points(face.flatten()[None])[:2], 2)[0] for face in (faces[0], yawed))
    nose_shift = (after[2] - (after[0] + after[1]) / 2) - (before[2] - (before[0] + before[1]) / 2)
    assert nose_shift.norm() > 0.03  # and the yaw


def test_pose_repeats_reads_a_photos_roll_and_size_and_finds_a_repeated_pose():
    import cv2

    from ros_anonymizer.config import AnonymizerConfig
    from ros_anonymizer.faces import load_face_detector
    from ros_anonymizer_training.models.anonymizer import TURN_SIZE
    from ros_anonymizer_training.pose_repeats import pose_parts, rank1

    detector = load_face_detector(AnonymizerConfig(use_gpu=False))
    rgb = read_image(require_data("lfw", "images", "Aaron_Peirsol", "Aaron_Peirsol_0001.jpg"))
    upright = pose_parts(detector, rgb, 1.3)
    assert abs(upright[2] - TURN_SIZE) < 0.1  # a typical face's size in its crop
    turn = cv2.getRotationMatrix2D((125, 125), -12, 1.0)  # 12 degrees clockwise on screen: the face rolls by +0.21 rad
    rolled = pose_parts(detector, cv2.warpAffine(rgb, turn, (250, 250), borderMode=cv2.BORDER_REFLECT), 1.3)
    assert 0.5 * np.radians(12) < rolled[3] - upright[3] < 1.5 * np.radians(12)  # (the detector's points lean to upright: 0.15)
    assert abs(rolled[2] - upright[2]) < 0.05
    parts = np.random.default_rng(0).normal(size=(50, 5))
    assert rank1(parts, parts + 0.01) == 1.0 and rank1(parts, parts[::-1]) < 0.1


def test_m_train_landmarks_moves_only_the_landmark_heads():
    from ros_anonymizer_training.train import trainable_m_parameters

    cfg = TrainConfig.load("edge", ["m_input_size=4", "m_grid_size=8", "m_landmarks=true", "m_train=landmarks"])
    m = build_anonymizer(cfg)
    heads = {id(p) for p in m.landmark_heads.parameters()}
    assert {id(p) for p in trainable_m_parameters(m, cfg)} == heads
    assert not any(p.requires_grad for p in m.parameters() if id(p) not in heads)
    everything = TrainConfig.load("edge", ["m_landmarks=true"])
    assert len(trainable_m_parameters(build_anonymizer(everything), everything)) == len(list(m.parameters()))
    with pytest.raises(TrainConfigError, match="m_train"):
        TrainConfig.load("edge", ["m_train=landmarks"])  # no heads to train


def test_the_expression_branch_starts_as_the_m_it_grew_from_and_then_paints_what_it_reads():
    torch.manual_seed(0)
    plain = LowPassAnonymizer(32, 4, 8, 1, 8).eval()
    expressive = LowPassAnonymizer(32, 4, 8, 1, 8, expression=2).eval()
    expressive.load_state_dict(plain.state_dict(), strict=False)
    x = real_faces(3)
    with torch.no_grad():
        assert torch.equal(expressive(x), plain(x))  # zero patterns: the M it was started from
        code = expressive.expression(x)
        for pattern in expressive.expression_patterns:
            torch.nn.init.normal_(pattern, 0, 0.5)
        painted = expressive(x)
    assert code.shape == (3, 2, 1, 1) and code.abs().max() <= 1 and (code[0] - code[1]).abs().max() > 0  # each face its own numbers
    assert (painted - plain(x)).abs().mean() > 1e-3
    assert len(expressive.expression_patterns) == 2 * 3  # one pattern per number and resize stage (8 -> 16 -> 32)


def test_m_train_expression_moves_only_the_expression_branch_and_a_shipped_m_starts_it(tmp_path):
    from ros_anonymizer_training import export
    from ros_anonymizer_training.train import trainable_m_parameters

    cfg = TrainConfig.load("edge", ["m_input_size=4", "m_grid_size=8", "m_expression=2", "m_train=expression"])
    m = build_anonymizer(cfg)
    branch = {id(p) for p in m.expression_encoder.parameters()} | {id(p) for p in m.expression_patterns}
    assert {id(p) for p in trainable_m_parameters(m, cfg)} == branch
    shipped = build_anonymizer(TrainConfig.load("edge", ["m_input_size=4", "m_grid_size=8"])).eval()
    path = tmp_path / "shipped.onnx"
    export.export_anonymizer(shipped, path, crop_size=64, box_enlarge=1.3, preset="edge", trained_on="test")
    weights = export.anonymizer_weights(path, m.state_dict())
    assert all(torch.equal(weights[k], v) for k, v in shipped.state_dict().items())
    m.load_state_dict(weights)  # and the branch exports to the contract, within the TensorRT path's ops, as torch computes it
    assert export.export_anonymizer(m, tmp_path / "expressive.onnx", crop_size=64, box_enlarge=1.3, preset="edge",
                                    trained_on="test")["max_abs_diff"] < export.TOLERANCE
    with pytest.raises(TrainConfigError, match="m_train"):
        TrainConfig.load("edge", ["m_train=expression"])  # no branch to train
    with pytest.raises(TrainConfigError, match="m_expression"):
        TrainConfig.load("edge", ["m_expression=9"])


def test_the_person_correlation_finds_who_it_is_in_the_numbers_and_its_square_removes_only_that():
    g = torch.Generator().manual_seed(0)
    person, now, later = (torch.randn(400, 1, generator=g) for _ in range(3))
    assert losses.person_correlation(person + 0.1 * now, person + 0.1 * later).item() > 0.9  # a number that says who it is
    assert abs(losses.person_correlation(now, later).item()) < 0.15  # one that says only how the face looks now
    # Numbers mixing both: the training term takes who it is out and keeps how it looks now (it is scale-free: no collapse).
    weights = torch.ones(2, requires_grad=True)  # (who it is, how it looks now)
    opt = torch.optim.SGD([weights], lr=0.5)
    for _ in range(200):
        opt.zero_grad()
        losses.person_correlation(weights[0] * person + weights[1] * now, weights[0] * person + weights[1] * later).square().sum().backward()
        opt.step()
    mixed = lambda other: weights[0] * person + weights[1] * other
    assert losses.person_correlation(mixed(now), mixed(later)).item() < 0.1 < 1 <= weights[1].item()  # from 0.5 at the start


def test_the_person_and_mean_terms_train_on_another_photo_of_each_person_and_report_on_people_never_trained(natural_run, tmp_path):
    from ros_anonymizer_training.train import Run

    cfg, _ = natural_run
    values = {**cfg.to_dict(), "out_dir": str(tmp_path / "person"), "track_views": 1, "lambda_track_privacy": 0.0, "m_expression": 2,
              "lambda_expression_person": 1.0, "lambda_expression_mean": 1.0, "pretrain_d_steps": 0, "joint_steps": 10, "eval_every": 10, "log_every": 5,
              "export_detail_scale": 0.9}  # the export copies M: it must hold no training graph
    run = Run(TrainConfig.from_dict(values))
    x, y, _ = run.batch("joint", 3)
    partner, partner_y, _ = run.partner_batch("joint", 3)
    assert torch.equal(partner_y, y)  # the same people...
    assert all(not torch.equal(a, b) for a, b in zip(x, partner))  # ...in other photos (every tiny person has 10+)
    assert torch.equal(run.partner_batch("joint", 3)[0], partner)  # a pure function of the step: resuming replays exactly
    with torch.no_grad():
        run.m.eval()(x)
    assert not hasattr(run.m, "last_code")  # only training keeps the numbers, and the trainer takes them
    records = [json.loads(line) for line in (train(TrainConfig.from_dict(values), ["joint", "export"]) / "metrics.jsonl").read_text().splitlines()]
    joint = [r for r in records if r["kind"] == "train" and r["stage"] == "joint"]
    assert joint and all(np.isfinite(r["loss_expression_person"]) and 0 <= r["loss_expression_mean"] <= 2 for r in joint)  # two numbers in [-1, 1]
    evaluation = [r for r in records if r["kind"] == "eval"][-1]
    assert all(-1 <= evaluation[f"expression_person_{s}"] <= 1 for s in ("val", "holdout"))
    with pytest.raises(TrainConfigError, match="lambda_expression_person"):
        TrainConfig.load("edge", ["lambda_expression_person=1"])  # no numbers to free
    with pytest.raises(TrainConfigError, match="lambda_expression_mean"):
        TrainConfig.load("edge", ["m_input_size=4", "m_grid_size=8", "m_expression=2", "lambda_expression_mean=1", "track_views=2",
                                  "lambda_track_privacy=1"])


def test_the_feature_l1_weighs_a_change_at_the_mouth_over_one_at_the_forehead():
    x = real_faces(2)
    marks = torch.tensor([[0.35, 0.4, 0.65, 0.4, 0.5, 0.55, 0.4, 0.7, 0.6, 0.7], [-1.0] * 10])
    assert losses.feature_l1(x, x, marks) == 0
    mouth, forehead = x.clone(), x.clone()
    mouth[:, :, 20:24, 12:20] += 0.5  # rows 0.62-0.75 of the crop, between the mouth corners
    forehead[:, :, 1:5, 12:20] += 0.5  # the same change at the top
    assert losses.feature_l1(mouth, x, marks) > 5 * losses.feature_l1(forehead, x, marks)
    assert losses.l1_loss(mouth, x) == pytest.approx(losses.l1_loss(forehead, x).item())  # the whole-face L1 cannot tell them apart
    assert losses.feature_l1(mouth[1:], x[1:], marks[1:]) == 0  # a face without points weighs nothing


def test_track_moves_are_small_and_reproducible():
    from ros_anonymizer_training.train import TrackMoves

    x = real_faces(4, 64)
    moves = TrackMoves.draw(len(x), 3, torch.Generator().manual_seed(0), x.device)
    later = moves.apply(x)
    assert later.shape == (8, 3, 64, 64) and torch.equal(later, TrackMoves.draw(4, 3, torch.Generator().manual_seed(0), x.device).apply(x))
    change = (later - x.repeat(2, 1, 1, 1)).abs().mean((1, 2, 3))
    other_face = (x - x.roll(1, 0)).abs().mean((1, 2, 3)).min()
    assert (change > 0.005).all() and (change < other_face).all()  # moved, but still nearer the same face than another one
    assert later.min() >= -1 and later.max() <= 1


def test_track_moves_are_the_same_in_every_process():
    """Resuming replays the same moves: their seed must not depend on Python's per-process hash salt."""
    import os
    import subprocess
    import sys

    code = ("from ros_anonymizer_training.train import TRACK_STREAM, step_generator; import torch; "
            "print(torch.rand(3, generator=step_generator(0, 0, TRACK_STREAM, 7)).tolist())")
    draws = {subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": salt},
                            capture_output=True, text=True, check=True).stdout for salt in ("1", "2")}
    assert len(draws) == 1


def test_bad_generator_settings_stop_with_one_sentence():
    with pytest.raises(TrainConfigError, match="m_generator"):
        TrainConfig.load("edge", ["m_generator=unet"])
    with pytest.raises(TrainConfigError, match="m_input_size"):
        TrainConfig.load("edge", ["m_input_size=7"])
    with pytest.raises(TrainConfigError, match="m_grid_size"):
        TrainConfig.load("edge", ["m_input_size=8", "m_grid_size=4"])
    with pytest.raises(TrainConfigError, match="m_grid_size"):  # the copy is resized by a whole factor
        TrainConfig.load("edge", ["crop_size=96", "m_input_size=6", "lowpass_size=6", "m_grid_size=8"])
    with pytest.raises(TrainConfigError, match="track_views"):
        TrainConfig.load("edge", ["track_views=0"])
    with pytest.raises(TrainConfigError, match="track_views and lambda_det"):
        TrainConfig.load("paper", ["track_views=4", "lambda_track_privacy=1"])
    with pytest.raises(TrainConfigError, match="go together"):
        TrainConfig.load("edge", ["track_views=4"])
    with pytest.raises(TrainConfigError, match="l1_target"):
        TrainConfig.load("edge", ["l1_target=mirror"])


def test_the_l1_target_is_the_face_itself_or_another_face_of_the_batch():
    x = real_faces(4)
    assert losses.l1_target(x, "self") is x
    other = losses.l1_target(x, "other")
    assert all(torch.equal(other[i], x[i - 1]) for i in range(4))
    assert losses.l1_loss(x, other) > 0.1 > losses.l1_loss(x, losses.l1_target(x, "self"))


def test_the_lookalike_l1_target_keeps_the_faces_low_pass_copy_and_takes_detail_from_another_identity():
    from ros_anonymizer_training.data.faces import to_uint8
    from ros_anonymizer_training.lookalike import Lookalike

    x = real_faces(6)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    bank = Lookalike(to_uint8(x), box_enlarge=1.3, input_size=4, labels=labels.numpy())
    target = losses.l1_target(x, "lookalike", bank, labels)
    assert target.shape == x.shape and target.dtype == x.dtype
    chosen = bank.nearest(to_uint8(x), labels.numpy())
    assert all(labels[i] != labels[c] for i, c in enumerate(chosen))  # never the person's own detail
    # The face's own 4x4 copy: far nearer the face's than the stranger's (the bilinear base lets a little of the stranger's through).
    pooled = lambda t: torch.nn.functional.avg_pool2d(t, 8)
    assert (pooled(target) - pooled(x)).abs().mean() < 0.25 * (pooled(x[chosen]) - pooled(x)).abs().mean()
    # Without the labels the nearest stranger of a bank face is itself: its own detail, i.e. the face back.
    assert bank.nearest(to_uint8(x)).tolist() == list(range(6))
    with pytest.raises(TrainConfigError, match="lookalike needs the lowpass generator"):
        TrainConfig.load("paper", ["l1_target=lookalike"])


def test_interpolating_two_anonymizers_lands_between_them_and_keeps_the_contract(natural_run, tmp_path):
    import onnx

    from ros_anonymizer.backends import load_backend
    from ros_anonymizer_training.export import anonymizer_weights, export_anonymizer
    from ros_anonymizer_training.interpolate import main as interpolate_main

    cfg, records = natural_run
    first = Path([r for r in records if r["kind"] == "export"][-1]["path"])
    m = build_anonymizer(cfg)
    m.load_state_dict(anonymizer_weights(first, m.state_dict()))
    export_args = dict(crop_size=cfg.crop_size, box_enlarge=cfg.box_enlarge, preset=cfg.preset, trained_on="test")
    m.scale_detail(0.5)  # the last conv is the only difference between the two ends, so the midpoint is detail scale 0.75
    export_anonymizer(m, tmp_path / "half.onnx", trained_identities=["Someone_Else"], **export_args)
    m.scale_detail(1.5)
    export_anonymizer(m, tmp_path / "three_quarters.onnx", **export_args)
    config = tmp_path / "natural.yaml"
    config.write_text(json.dumps(cfg.to_dict()))  # JSON is YAML
    assert interpolate_main(["--config", str(config), str(first), str(tmp_path / "half.onnx"), "--toward", "0.5", "--out", str(tmp_path / "mid.onnx")]) == 0
    faces = real_faces(3, cfg.crop_size).numpy()
    mid = load_backend(tmp_path / "mid.onnx", "onnxruntime", use_gpu=False)
    expected = load_backend(tmp_path / "three_quarters.onnx", "onnxruntime", use_gpu=False)
    feeds = {"faces": faces, "landmarks": np.array([[0.35, 0.4, 0.65, 0.4, 0.5, 0.55, 0.4, 0.7, 0.6, 0.7]] * 2 + [[-1] * 10], np.float32)}
    np.testing.assert_allclose(mid.run(feeds)["anonymized"], expected.run(feeds)["anonymized"], atol=1e-5)
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "mid.onnx")).metadata_props}
    assert meta["model_kind"] == "anonymizer" and "0.50 x half.onnx" in meta["trained_on"]
    assert "Someone_Else" in json.loads(meta["trained_identities"]) and len(json.loads(meta["trained_identities"])) > 1


def test_interpolating_from_an_anonymizer_without_landmarks_scales_a_landmark_models_heads(tmp_path):
    """The bundled M (no `landmarks` input) to a landmark M fine-tuned from it (`m_train: landmarks`): the heads turned down."""
    from ros_anonymizer.backends import load_backend
    from ros_anonymizer.filters import BUNDLED_ANONYMIZER, bundled_model
    from ros_anonymizer_training.export import anonymizer_weights, export_anonymizer
    from ros_anonymizer_training.interpolate import main as interpolate_main

    cfg = TrainConfig.load("edge", ["m_input_size=4", "m_grid_size=8", "m_landmarks=true", "m_landmark_shape=turn"])
    m = build_anonymizer(cfg).eval()
    m.load_state_dict(anonymizer_weights(bundled_model(BUNDLED_ANONYMIZER), m.state_dict()))
    torch.manual_seed(0)
    with torch.no_grad():
        for p in m.landmark_heads.parameters():
            p.normal_(0, 0.05)
    export_args = dict(crop_size=cfg.crop_size, box_enlarge=cfg.box_enlarge, preset=cfg.preset, trained_on="test")
    export_anonymizer(m, tmp_path / "heads.onnx", **export_args)
    with torch.no_grad():
        for p in m.landmark_heads.parameters():
            p.mul_(0.5)
    export_anonymizer(m, tmp_path / "half_heads.onnx", **export_args)
    config = tmp_path / "turn.yaml"
    cfg.save(config)
    assert interpolate_main(["--config", str(config), str(bundled_model(BUNDLED_ANONYMIZER)), str(tmp_path / "heads.onnx"),
                             "--toward", "0.5", "--out", str(tmp_path / "mid.onnx")]) == 0
    feeds = {"faces": real_faces(3, cfg.crop_size).numpy(),
             "landmarks": np.array([[0.35, 0.4, 0.65, 0.4, 0.5, 0.55, 0.4, 0.7, 0.6, 0.7]] * 2 + [[-1] * 10], np.float32)}
    mid, half, full = (load_backend(tmp_path / name, "onnxruntime", use_gpu=False).run(feeds)["anonymized"]
                       for name in ("mid.onnx", "half_heads.onnx", "heads.onnx"))
    np.testing.assert_allclose(mid, half, atol=1e-5)
    assert np.abs(mid - full).max() > 1e-2  # the heads moved the output, and the midpoint moved it half as far


def test_interpolation_refuses_bad_input_with_one_sentence(natural_run, tmp_path, capsys):
    from ros_anonymizer_training.interpolate import main as interpolate_main

    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    assert interpolate_main(["--config", "edge", str(tmp_path / "junk.onnx"), str(tmp_path / "junk.onnx"), "--toward", "0.5",
                             "--out", str(tmp_path / "x.onnx")]) == 2
    assert "cannot read the anonymizer" in capsys.readouterr().err
    assert interpolate_main(["--config", "edge", "a.onnx", "b.onnx", "--toward", "1.5", "--out", str(tmp_path / "x.onnx")]) == 2
    assert "from 0 to 1" in capsys.readouterr().err and not (tmp_path / "x.onnx").exists()
    cfg, records = natural_run  # the same weights fit a coarser-input M: only running the parents tells them apart
    first = [r for r in records if r["kind"] == "export"][-1]["path"]
    coarser = tmp_path / "coarser.yaml"
    coarser.write_text(json.dumps({**cfg.to_dict(), "m_input_size": 4, "m_grid_size": cfg.m_input_size}))
    assert interpolate_main(["--config", str(coarser), first, first, "--toward", "0.5", "--out", str(tmp_path / "x.onnx")]) == 2
    assert "is not the network" in capsys.readouterr().err and not (tmp_path / "x.onnx").exists()


def test_the_bundled_anonymizer_cannot_see_detail_finer_than_its_low_pass_copy():
    """The shipped M's privacy floor is structural: identity detail with zero mean in each 16x16 block of the crop never reaches it."""
    import onnx

    from ros_anonymizer.backends import load_backend
    from ros_anonymizer.filters import BUNDLED_ANONYMIZER, bundled_model

    backend = load_backend(bundled_model(BUNDLED_ANONYMIZER), "onnxruntime", use_gpu=False)
    assert "ConvTranspose" not in {n.op_type for n in onnx.load(str(bundled_model(BUNDLED_ANONYMIZER))).graph.node}  # no checkerboard
    faces = real_faces(4, 64).numpy()
    cell = 16  # it sees a 4x4 copy of the 64x64 crop
    detail = np.random.default_rng(0).normal(0, 0.3, faces.shape).astype(np.float32)
    cells = detail.reshape(4, 3, 64 // cell, cell, 64 // cell, cell).mean(axis=(3, 5), keepdims=True)
    detail -= cells.repeat(cell, 3).repeat(cell, 5).reshape(detail.shape)
    out = backend.run({"faces": faces})["anonymized"]
    np.testing.assert_allclose(backend.run({"faces": faces + detail})["anonymized"], out, atol=1e-4)
    assert np.abs(out - faces).mean() > 0.02  # ... and it does repaint the face


def test_a_run_can_start_from_an_earlier_runs_realism_discriminator(natural_run, tmp_path):
    from ros_anonymizer_training import checkpoint

    cfg, _ = natural_run
    trained_r = checkpoint.load(cfg.out_dir)["r"]
    values = {**cfg.to_dict(), "out_dir": str(tmp_path / "carried"), "init_realism": cfg.out_dir, "pretrain_d_steps": 1}
    train(TrainConfig.from_dict(values), ["pretrain-d"])
    carried = checkpoint.load(tmp_path / "carried")["r"]
    train(TrainConfig.from_dict({**values, "out_dir": str(tmp_path / "fresh"), "init_realism": ""}), ["pretrain-d"])
    fresh = checkpoint.load(tmp_path / "fresh")["r"]
    moved = lambda r: max(float((r[k] - trained_r[k]).abs().max()) for k in trained_r if r[k].is_floating_point())
    assert moved(carried) < 0.01 < moved(fresh)  # one step of Adam at 2e-4 from the trained R, against a new one
    with pytest.raises(TrainConfigError, match="init_realism"):
        train(TrainConfig.from_dict({**values, "out_dir": str(tmp_path / "other"), "r_channels": cfg.r_channels * 2}), ["pretrain-d"])
