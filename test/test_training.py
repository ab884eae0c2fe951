"""The trainer on real LFW faces: every stage of the tiny preset end to end, resume, export, DDP on gloo."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, require_data
from ros_anonymizer.media import read_image
from ros_anonymizer_training import checkpoint
from ros_anonymizer_training.config import TrainConfig, TrainConfigError
from ros_anonymizer_training.train import main, train


def tiny(tmp, **changes) -> TrainConfig:
    values = TrainConfig.load("tiny").to_dict()
    values.update(faces_root=str(require_data("lfw", "images")), cache_dir=str(tmp / "cache"), out_dir=str(tmp / "run"))
    values.update(changes)
    return TrainConfig.from_dict(values)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("faces_cache")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, cache_dir):
    """Every stage of the tiny preset once; returns (config, metrics records)."""
    tmp = tmp_path_factory.mktemp("tiny")
    cfg = tiny(tmp, cache_dir=str(cache_dir))
    out = train(cfg, ["pretrain-d", "pretrain-a", "joint", "export"])
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return cfg, records


def _mean(records, stage, key, part):
    """The first logged value (step 1), or the mean over the last quarter of the stage."""
    values = [r[key] for r in records if r.get("kind") == "train" and r["stage"] == stage and key in r]
    return float(values[0] if part == "first" else np.mean(values[-max(1, len(values) // 4):]))


def test_pretraining_losses_fall(tiny_run):
    _, records = tiny_run
    assert _mean(records, "pretrain-d", "loss_d_original", "last") < 0.5 * _mean(records, "pretrain-d", "loss_d_original", "first")
    assert _mean(records, "pretrain-d", "loss_l1", "last") < 0.5 * _mean(records, "pretrain-d", "loss_l1", "first")


def test_action_detector_trains_and_exports(tiny_run):
    from ros_anonymizer.backends import load_backend

    cfg, records = tiny_run
    assert [r for r in records if r["kind"] == "train" and r["stage"] == "pretrain-a"], "pretrain-a did not run"
    assert all("loss_det" in r for r in records if r["kind"] == "train" and r["stage"] == "joint")
    backend = load_backend(str(Path(cfg.out_dir) / "action_detector_tiny.onnx"), "onnxruntime", use_gpu=False)
    assert backend.metadata["model_kind"] == "action_detector" and json.loads(backend.metadata["classes"])


def test_joint_stage_hides_identity_from_d_but_d_still_knows_originals(tiny_run):
    _, records = tiny_run
    evals = [r for r in records if r["kind"] == "eval"]
    start = [r for r in evals if r["stage"] == "pretrain-d"][-1]
    end = [r for r in evals if r["stage"] == "joint"][-1]
    assert start["acc_original"] >= 0.6, "D did not learn the identities in pretraining"
    assert start["acc_modified"] >= 0.5, "M's reconstruction should still be recognisable before the joint stage"
    assert end["acc_modified"] <= start["acc_modified"] - 0.3, f"D still recognises modified faces: {start} -> {end}"
    assert end["acc_original"] >= 0.6, "D forgot the original faces during the joint stage"
    assert _mean(records, "joint", "loss_privacy", "last") < _mean(records, "joint", "loss_privacy", "first")


def test_export_matches_torch_and_runs_in_the_runtime(tiny_run):
    from ros_anonymizer.backends import load_backend
    from ros_anonymizer.filters import LearnedAnonymizer

    cfg, records = tiny_run
    exported = [r for r in records if r["kind"] == "export" and r["stage"] == "export"][-1]
    assert exported["max_abs_diff"] <= exported["tolerance"] == 1e-4
    backend = load_backend(exported["path"], "onnxruntime", use_gpu=False)
    assert backend.metadata["model_kind"] == "anonymizer"
    assert backend.metadata["crop_size"] == str(cfg.crop_size)
    assert float(backend.metadata["box_enlarge"]) == cfg.box_enlarge
    assert backend.metadata["preset"] == "tiny" and "LFW" in backend.metadata["trained_on"]
    assert json.loads(backend.metadata["trained_identities"]) == checkpoint.load(cfg.out_dir)["names"]
    learned = LearnedAnonymizer(backend)
    rgb = read_image(require_data("lfw", "images", "Aaron_Peirsol", "Aaron_Peirsol_0001.jpg"))
    out = rgb.copy()
    region = learned(out, np.array([[90, 80, 160, 170]], np.float32))[0]
    inside = (slice(region[1], region[3]), slice(region[0], region[2]))
    assert np.abs(out[inside].astype(int) - rgb[inside]).mean() > 1.0
    outside = np.ones(rgb.shape[:2], bool)
    outside[inside] = False
    assert np.array_equal(out[outside], rgb[outside])


def test_report_plots_are_written_and_the_config_reloads(tiny_run):
    cfg, _ = tiny_run
    for name in ("losses.png", "d_accuracy.png", "samples.png", "last.pt", "config.yaml"):
        assert (Path(cfg.out_dir) / name).stat().st_size > 100, name
    assert TrainConfig.load(str(Path(cfg.out_dir) / "config.yaml")) == cfg  # `--config <run>/config.yaml` repeats the run
    assert cfg.init_realism == "" and cfg.m_landmark_shape == "person"  # (empty strings and names survive the round trip)


def test_identity_holdout_and_crops_agree_with_the_runtime(tmp_path, cache_dir):
    from ros_anonymizer.config import AnonymizerConfig
    from ros_anonymizer.faces import load_face_detector
    from ros_anonymizer.filters import crop_squares, square_regions
    from ros_anonymizer_training.data.faces import load_face_splits

    cfg = tiny(tmp_path, cache_dir=str(cache_dir))
    splits = load_face_splits(cfg)
    assert not set(splits.names) & set(splits.holdout_names)
    assert not set(splits.train.paths) & set(splits.val.paths)
    assert len(splits.val) >= len(splits.names) * cfg.val_images_per_identity - 2
    path = splits.train.paths[0]
    rgb = read_image(require_data("lfw", "images") / path)
    faces = load_face_detector(AnonymizerConfig(score_threshold=cfg.detect_threshold, use_gpu=False))(rgb)
    square = splits.train.squares[0]
    assert any(np.array_equal(square, s) for s in square_regions(faces.boxes, cfg.box_enlarge))
    assert np.array_equal(splits.train.crops[0], crop_squares(rgb, square[None], cfg.crop_size)[0])


def test_another_seed_draws_again_on_the_same_hold_out_people():
    from ros_anonymizer_training.data.faces import scan_identities, split_identities

    people = scan_identities(require_data("lfw", "images"))
    first, redrawn, resplit = (split_identities(people, TrainConfig.load("edge", overrides))
                               for overrides in ([], ["seed=1"], ["split_seed=1"]))
    assert redrawn == first  # privacy_check's hold-out people stay unseen by a second draw
    assert set(resplit[1]) != set(first[1]) and not set(resplit[0]) & set(resplit[1])


def test_resume_continues_exactly_where_it_stopped(tmp_path, cache_dir):
    faces_only = {"cache_dir": str(cache_dir), "lambda_det": 0.0, "pretrain_a_steps": 0, "checkpoint_every": 8}
    straight = tiny(tmp_path / "a", pretrain_d_steps=16, **faces_only)
    train(straight, ["pretrain-d"])
    stopped = tiny(tmp_path / "b", pretrain_d_steps=8, **faces_only)
    train(stopped, ["pretrain-d"])
    train(stopped.from_dict({**stopped.to_dict(), "pretrain_d_steps": 16}), ["pretrain-d"])
    a, b = checkpoint.load(straight.out_dir), checkpoint.load(stopped.out_dir)
    assert a["progress"]["pretrain-d"] == b["progress"]["pretrain-d"] == 16
    for key in a["d"]:
        torch.testing.assert_close(a["d"][key], b["d"][key], rtol=1e-5, atol=1e-6)
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "run" / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["kind"] == "train"]
    assert steps == sorted(set(steps)), "a resumed run must not repeat steps"
    slower = stopped.from_dict({**stopped.to_dict(), "pretrain_d_steps": 17, "lr_d": 1e-5, "lr_m": 2e-5})
    train(slower, ["pretrain-d"])  # a stage continued with other rates runs at them, not at the checkpoint's
    saved = checkpoint.load(stopped.out_dir)
    assert {g["lr"] for g in saved["opt_d"]["param_groups"]} == {1e-5} and {g["lr"] for g in saved["opt_m"]["param_groups"]} == {2e-5}


def test_fresh_starts_over_and_removes_only_what_a_run_wrote(tmp_path, cache_dir):
    cfg = tiny(tmp_path, cache_dir=str(cache_dir), lambda_det=0.0, pretrain_a_steps=0, pretrain_d_steps=2)
    train(cfg, ["pretrain-d"])
    own = Path(cfg.out_dir) / "log.txt"
    own.write_text("a person's own file, e.g. the run's redirected output")
    train(cfg, [], fresh=True)
    assert own.read_text().startswith("a person's own file")
    assert not (Path(cfg.out_dir) / "metrics.jsonl").exists()
    assert not (Path(cfg.out_dir) / checkpoint.LAST).exists() or checkpoint.load(cfg.out_dir)["progress"] == {}


def test_centerface_in_torch_matches_onnx_runtime_and_scores_faces():
    from ros_anonymizer.backends import load_backend
    from ros_anonymizer.faces import centerface_onnx
    from ros_anonymizer_training import losses
    from ros_anonymizer_training.models.face_detector import CenterFaceTorch

    rgb = read_image(require_data("lfw", "images", "Aaron_Peirsol", "Aaron_Peirsol_0001.jpg"))
    frame = torch.from_numpy(rgb[:224, :224].transpose(2, 0, 1).copy()).float()[None]
    detector = CenterFaceTorch()
    expected = load_backend(centerface_onnx(), "onnxruntime", use_gpu=False).run({"input.1": frame.numpy()})
    for got, want in zip(detector(frame), expected.values()):
        np.testing.assert_allclose(got.numpy(), want, atol=1e-3)
    face = torch.nn.functional.interpolate(frame[:, :, 60:190, 60:190] / 127.5 - 1, size=(64, 64), mode="area")[0]
    faces = torch.stack([face, torch.zeros_like(face)]).requires_grad_(True)  # a real face and a flat grey square
    scores = losses.face_scores(detector, faces)
    assert scores[0] >= 0.8 and scores[1] < 0.2
    losses.detectability_loss(detector, faces, 0.8).backward()
    assert faces.grad[0].abs().max() == 0 and faces.grad[1].abs().max() > 0  # only the face CenterFace misses is pushed


def test_fine_tuning_starts_from_an_exported_anonymizer(tiny_run, tmp_path, cache_dir):
    from ros_anonymizer_training.export import ExportError

    cfg, records = tiny_run
    exported = [r for r in records if r["kind"] == "export" and r["stage"] == "export"][-1]["path"]
    tuned = tiny(tmp_path, cache_dir=str(cache_dir), init_anonymizer=exported, pretrain_d_steps=4, joint_steps=2,
                 lambda_face=1.0, lambda_det=0.0, pretrain_a_steps=0, eval_every=2, log_every=1)
    train(tuned, ["pretrain-d"])
    start, trained = checkpoint.load(tuned.out_dir)["m"], checkpoint.load(cfg.out_dir)["m"]
    for key in trained:  # D pretraining leaves a fine-tuned M as it was exported
        torch.testing.assert_close(start[key], trained[key])
    train(tuned, ["joint"])
    log = [json.loads(line) for line in (Path(tuned.out_dir) / "metrics.jsonl").read_text().splitlines()]
    joint = [r for r in log if r["kind"] == "train" and r["stage"] == "joint"]
    assert [r["step"] for r in joint] == [1, 2] and all(np.isfinite(r["loss_face"]) for r in joint)  # the face term ran each step
    tuned_m = checkpoint.load(tuned.out_dir)["m"]
    assert any(not torch.equal(tuned_m[key], start[key]) for key in start), "the joint stage did not train the fine-tuned M"
    with pytest.raises(ExportError, match="init_anonymizer"):
        train(tiny(tmp_path / "bad", cache_dir=str(cache_dir), init_anonymizer=str(tmp_path / "missing.onnx")), [])


def test_paper_preset_builds_the_authors_networks():
    from ros_anonymizer_training.models.anonymizer import build_anonymizer
    from ros_anonymizer_training.models.discriminator import build_discriminator, to_discriminator_input

    cfg = TrainConfig.load("paper")
    assert cfg.pretrain_a_steps > 0 and cfg.lambda_det > 0, "the paper trains A first and keeps it working in the joint stage"
    m, d = build_anonymizer(cfg), build_discriminator(cfg, 10)
    assert len([b for b in m.net if type(b).__name__ == "ResidualBlock"]) == 9
    with torch.no_grad():
        faces = torch.rand(1, 3, 256, 256) * 2 - 1
        out = m(faces)
        embedding = d(to_discriminator_input(out, cfg.d_input))
        other = m(torch.rand(1, 3, 256, 256) * 2 - 1)
    assert out.shape == faces.shape and not torch.allclose(out, other, atol=1e-3)  # M's output depends on its input
    assert to_discriminator_input(out, cfg.d_input).shape[-2:] == (112, 96) and embedding.shape == (1, 512)


def test_checkpoints_refuse_arbitrary_objects(tmp_path):
    torch.save({"m": {}, "payload": np.random.default_rng()}, tmp_path / "last.pt")
    with pytest.raises(ValueError, match="cannot be loaded safely"):
        checkpoint.load(tmp_path)


def test_bad_settings_stop_with_one_sentence(capsys):
    assert main(["all", "--config", "tiny", "--set", "lambda_l1=lots"]) == 2
    assert main(["all", "--config", "nonsense"]) == 2
    assert main(["dance", "--config", "tiny"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("training: error: ") for line in err), err
    with pytest.raises(TrainConfigError, match="unknown training setting"):
        TrainConfig.load("tiny", ["no_such_key=1"])


# Runs the trainer's CLI on each torchrun rank; before the process group closes, every rank's M and D
# parameters are gathered on rank 0, which prints the largest difference between ranks.
DDP_PROBE = """
import os, sys, torch
from ros_anonymizer_training import train as trainer
runs = []
class Recorded(trainer.Run):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        runs.append(self)
trainer.Run = Recorded
code = trainer.main(sys.argv[1:])
run = runs[-1]  # each rank writes what it ended with; the test compares them (no collective after teardown)
torch.save({"params": torch.cat([p.detach().flatten() for p in [*run.m.parameters(), *run.d.parameters()]]),
            "batch": run.batch("joint", 0)[0]}, os.path.join(run.cfg.out_dir, f"rank{run.rank}.pt"))
sys.exit(code)
"""


def test_ddp_on_gloo_with_two_processes(tmp_path, cache_dir):
    """torchrun path: two CPU processes see different batches, yet end with the same M and D (gradients averaged)."""
    cfg = tiny(tmp_path, cache_dir=str(cache_dir), lambda_det=0.0, pretrain_a_steps=0)
    train(cfg, [])  # rank 0 would cut the crops; do it beforehand so the subprocesses only read the cache
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    sets = [f"faces_root={cfg.faces_root}", f"cache_dir={cfg.cache_dir}", f"out_dir={cfg.out_dir}",
            "pretrain_d_steps=6", "joint_steps=4", "eval_every=4", "log_every=2", "batch_size=8", "lambda_det=0", "pretrain_a_steps=0"]
    (tmp_path / "probe.py").write_text(DDP_PROBE)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(tmp_path / "probe.py"), "pretrain-d", "joint", "--config", "tiny", *[a for s in sets for a in ("--set", s)]]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    state = checkpoint.load(cfg.out_dir)
    assert state["progress"]["pretrain-d"] == 6 and state["progress"]["joint"] == 4
    ranks = [torch.load(Path(cfg.out_dir) / f"rank{r}.pt") for r in (0, 1)]
    assert not torch.equal(ranks[0]["batch"], ranks[1]["batch"]), "both ranks drew the same batch: equal models would prove nothing"
    assert torch.equal(ranks[0]["params"], ranks[1]["params"]), "the two ranks' models differ: gradients were not averaged"
