"""The trainer: pretrain D (and A), then the joint adversarial stage, then export. Read top to bottom.

    python -m ros_anonymizer_training all --config edge                     # every stage, CPU or one GPU
    python -m ros_anonymizer_training joint --config edge --set lambda_l1=1  # one stage, with an override
    torchrun --nproc_per_node 4 -m training all --config paper  # several GPUs (DDP)

Progress is kept in <out_dir>/last.pt: a run that stops (or is stopped)
picks up where it was when started again with the same stages. `--fresh`
starts over.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from . import checkpoint, export, losses
from .config import TrainConfig, TrainConfigError
from .data.faces import FaceSplits, flip_landmarks, load_face_splits, to_tensor, to_uint8
from .lookalike import Lookalike
from .models.anonymizer import build_anonymizer
from .models.discriminator import build_discriminator, to_discriminator_input
from .models.face_detector import CenterFaceTorch
from .models.realism import build_realism
from .report import MetricsLog, face_grid, plot_curves

STAGES = ("pretrain-d", "pretrain-a", "joint", "export")
FACE_FOUND = 0.5  # CenterFace score at which the evaluation's naturalness figure counts a face as found
LANDMARK_DROPOUT = 0.15  # share of training faces M sees without landmarks (m_landmarks)


# ----------------------------------------------------------------------------- set-up
def trainable_m_parameters(m: nn.Module, cfg: TrainConfig) -> list[nn.Parameter]:
    """M's weights its optimiser moves: all, or only the landmark heads or the expression branch, the rest frozen as it started."""
    if cfg.m_train == "landmarks":
        m.requires_grad_(False)
        m.landmark_heads.requires_grad_(True)
    elif cfg.m_train == "expression":
        m.requires_grad_(False)
        m.expression_encoder.requires_grad_(True)
        m.expression_patterns.requires_grad_(True)
    return [p for p in m.parameters() if p.requires_grad]


class Run:
    """Everything one process needs: config, device, rank, models, optimisers, data, logs."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
        if self.distributed:
            use_cuda = torch.cuda.is_available() and cfg.device != "cpu"
            dist.init_process_group("nccl" if use_cuda else "gloo")
            self.rank, self.world = dist.get_rank(), dist.get_world_size()
            local = int(os.environ.get("LOCAL_RANK", "0"))
            self.device = torch.device(f"cuda:{local}" if use_cuda else "cpu")
            if use_cuda:
                torch.cuda.set_device(self.device)
        else:
            self.rank, self.world = 0, 1
            want = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
            self.device = torch.device(want)
        self.main = self.rank == 0
        self.amp = cfg.amp and self.device.type == "cuda"
        self.out = Path(cfg.out_dir)
        self.log = MetricsLog(self.out, enabled=self.main)

        torch.manual_seed(cfg.seed)
        if cfg.cpu_threads:
            torch.set_num_threads(cfg.cpu_threads)
        self.data: FaceSplits = load_face_splits(cfg) if self.main or not self.distributed else None
        if self.distributed:  # rank 0 cuts/caches the crops; the others read the cache it wrote
            dist.barrier()
            if not self.main:
                self.data = load_face_splits(cfg)
        self.train_x = to_tensor(self.data.train.crops).to(self.device)
        self.train_y = torch.from_numpy(self.data.train.labels).to(self.device)
        self.train_marks = torch.from_numpy(self.data.train.landmarks).to(self.device)
        self.val_marks = torch.from_numpy(self.data.val.landmarks).to(self.device)
        self.val_x = to_tensor(self.data.val.crops).to(self.device)
        self.val_y = torch.from_numpy(self.data.val.labels).to(self.device)
        labels = torch.from_numpy(self.data.train.labels)
        by_person = torch.argsort(labels, stable=True)  # crop indices grouped by person
        count = torch.bincount(labels, minlength=len(self.data.names))
        self.same_person = (by_person, torch.argsort(by_person), torch.cumsum(count, 0) - count, count.clamp_min(1))
        self.mask = torch.from_numpy(_soft_ellipse(cfg.crop_size)).to(self.device)
        self.lookalike = (Lookalike(self.data.train.crops, cfg.box_enlarge, cfg.m_input_size, labels=self.data.train.labels)
                          if cfg.l1_target == "lookalike" else None)

        self.m = build_anonymizer(cfg).to(self.device)
        self.d = build_discriminator(cfg, len(self.data.names)).to(self.device)
        self.opt_m = torch.optim.Adam(trainable_m_parameters(self.m, cfg), lr=cfg.lr_m, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(self.d.parameters(), lr=cfg.lr_d, betas=(0.9, 0.999), weight_decay=5e-4)
        self.r = build_realism(cfg).to(self.device)  # realism discriminator; steps only when lambda_realism > 0
        self.opt_r = torch.optim.Adam(self.r.parameters(), lr=cfg.lr_r, betas=(0.5, 0.999))
        self.face_detector = CenterFaceTorch().to(self.device)  # the detectability loss, and the face-found figure of every evaluation
        self.progress = {stage: 0 for stage in STAGES}
        self.action = None  # (model, optimiser, dataset) once the action detector is available

    # Models as the training steps call them (DDP-wrapped when distributed) and as saved (plain).
    def wrap(self):
        if self.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.m_train = DistributedDataParallel(self.m, device_ids=ids)
            self.d_train = DistributedDataParallel(self.d, device_ids=ids)
            self.r_train = DistributedDataParallel(self.r, device_ids=ids) if self.cfg.lambda_realism > 0 else self.r
            self.a_train = DistributedDataParallel(self.action[0], device_ids=ids) if self.action else None
        else:
            self.m_train, self.d_train, self.r_train = self.m, self.d, self.r
            self.a_train = self.action[0] if self.action else None

    def autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.amp else contextlib.nullcontext()

    def batch(self, stage: str, step: int):
        """The batch (faces, labels, landmarks) for (stage, step) on this rank, a pure function of the seed: resuming replays exactly.

        A share of the faces (LANDMARK_DROPOUT) lose their landmarks, as a
        face the robot's tracker holds between detections has none.
        """
        idx, g = self._draw(stage, step)
        return self._faces(idx.to(self.device), g)

    def partner_batch(self, stage: str, step: int):
        """For each face of batch(stage, step), another photo of the same person (itself for a person with one), augmented on its own."""
        idx, _ = self._draw(stage, step)
        g = step_generator(self.cfg.seed, self.rank, PARTNER_STREAM, step)
        by_person, place, first, count = self.same_person  # place: each crop's position in by_person
        label = torch.from_numpy(self.data.train.labels)[idx]  # on the CPU, beside the lookup tables (no copy)
        offset = 1 + (torch.rand(len(idx), generator=g) * (count[label] - 1)).long()
        return self._faces(by_person[first[label] + (place[idx] - first[label] + offset) % count[label]].to(self.device), g)

    def _draw(self, stage: str, step: int) -> tuple[torch.Tensor, torch.Generator]:
        """The batch's crop indices for (stage, step), and the generator that goes on to draw its augmentation."""
        g = step_generator(self.cfg.seed, self.rank, STAGES.index(stage), step)
        return torch.randint(len(self.train_y), (self.cfg.batch_size,), generator=g), g

    def _faces(self, idx: torch.Tensor, g: torch.Generator):
        x, y, marks = self.train_x[idx], self.train_y[idx], self.train_marks[idx]
        if self.cfg.augment:
            flip = (torch.rand(len(x), generator=g) < 0.5).to(self.device)
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            marks = torch.where(flip[:, None], flip_landmarks(marks), marks)
            gain = (1 + 0.2 * (torch.rand(len(x), 1, 1, 1, generator=g) - 0.5)).to(self.device)
            x = (x * gain).clamp(-1, 1)
        if self.cfg.m_landmarks:
            lost = (torch.rand(len(x), generator=g) < LANDMARK_DROPOUT).to(self.device)
            marks = torch.where(lost[:, None], torch.full_like(marks, -1.0), marks)
        return x, y, marks

    def pasted(self, modified: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
        """What the robot publishes: M's output blended over the crop with the runtime's soft elliptical mask."""
        return original + (modified - original) * self.mask

    def d_embed(self, faces: torch.Tensor, model=None) -> torch.Tensor:
        return (model or self.d_train)(to_discriminator_input(faces, self.cfg.d_input))

    # Checkpoints ------------------------------------------------------------
    def save(self):
        if not self.main:
            return
        state = {"config": self.cfg.to_dict(), "progress": dict(self.progress), "names": list(self.data.names),
                 "m": self.m.state_dict(), "d": self.d.state_dict(), "r": self.r.state_dict(),
                 "opt_m": self.opt_m.state_dict(), "opt_d": self.opt_d.state_dict(), "opt_r": self.opt_r.state_dict(),
                 "rng": checkpoint.rng_state()}
        if self.action is not None:
            state["a"], state["opt_a"] = self.action[0].state_dict(), self.action[1].state_dict()
        checkpoint.save(self.out, state)

    def restore(self) -> bool:
        if not (self.out / checkpoint.LAST).exists():
            return False
        state = checkpoint.load(self.out, map_location=self.device)
        if state["names"] != list(self.data.names):
            raise TrainConfigError(f"the checkpoint in {self.out} was trained on other identities; use --fresh or another out_dir.")
        self.m.load_state_dict(state["m"])
        self.d.load_state_dict(state["d"])
        self.opt_m.load_state_dict(state["opt_m"])
        self.opt_d.load_state_dict(state["opt_d"])
        if "r" in state:  # checkpoints from before the realism discriminator have none
            self.r.load_state_dict(state["r"])
            self.opt_r.load_state_dict(state["opt_r"])
        for optimizer, lr in ((self.opt_m, self.cfg.lr_m), (self.opt_d, self.cfg.lr_d), (self.opt_r, self.cfg.lr_r)):
            for group in optimizer.param_groups:  # the saved state carries the old run's rate; this run's settings win
                group["lr"] = lr
        self.progress.update(state["progress"])
        checkpoint.set_rng_state(state["rng"])
        self._saved_action = (state.get("a"), state.get("opt_a"))
        return True


TRACK_STREAM = -1  # step_generator's streams for the track moves and the partner photos (the stages use their index)
PARTNER_STREAM = -2


def step_generator(seed: int, rank: int, stream: int, step: int) -> torch.Generator:
    """Random numbers that are a pure function of (seed, rank, stream, step), so resuming replays exactly.

    Ints only: Python salts the hash of a str differently in every process.
    """
    return torch.Generator().manual_seed(hash((seed, rank, stream, step)) % 2**63)


@dataclasses.dataclass(frozen=True)
class TrackMoves:
    """How each face moves in the later frames of a track: one affine warp and one light gain per (frame, face).

    M runs on the moved faces so the track privacy term can average D's
    embedding over a track, as an attacker holding the whole track would.
    """

    theta: torch.Tensor  # [copies * N, 2, 3], for F.affine_grid
    gain: torch.Tensor  # [copies * N, 1, 1, 1]

    @classmethod
    def draw(cls, faces: int, views: int, generator: torch.Generator, device) -> "TrackMoves":
        """views-1 moves per face: shifted up to 3 px of 64 (5%), turned up to 4 degrees, scaled 0.93-1.07, lit 0.9-1.1.

        As the runtime's crop of one person varies from frame to frame.
        """
        u = lambda *shape: (2 * torch.rand((views - 1) * faces, *shape, generator=generator) - 1).to(device)
        angle, scale = u() * math.radians(4), 1 + 0.07 * u()
        shift, gain = u(2) * 6 / 64, 1 + 0.1 * u(1, 1, 1)  # affine_grid's coordinates span 2 across the crop
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
        return cls(theta, gain)

    def apply(self, faces: torch.Tensor) -> torch.Tensor:
        """Each face of `faces` [N, ...] moved as in every later frame, [copies * N, ...], float, in [-1, 1]."""
        moved = faces.float().repeat(len(self.theta) // len(faces), 1, 1, 1)
        grid = F.affine_grid(self.theta, list(moved.shape), align_corners=False)
        moved = F.grid_sample(moved, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        return (moved * self.gain).clamp(-1, 1)


def _soft_ellipse(size: int) -> np.ndarray:
    from ros_anonymizer.filters import soft_ellipse

    return soft_ellipse(size)[None, None, :, :, 0].astype(np.float32)


# ----------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(run: Run, stage: str, step: int) -> dict:
    """D's identity accuracy on held-back images of the trained people, original and after M."""
    run.m.eval(), run.d.eval()
    correct_orig = correct_mod = found = 0
    l1 = 0.0
    for start in range(0, len(run.val_y), 256):
        x, y = run.val_x[start:start + 256], run.val_y[start:start + 256]
        with run.autocast():
            modified = run.pasted(run.m(x, run.val_marks[start:start + 256]).float(), x)
            emb_o, emb_m = run.d_embed(x, run.d), run.d_embed(modified, run.d)
        correct_orig += (run.d.cosine(emb_o.float()).argmax(1) == y).sum().item()
        correct_mod += (run.d.cosine(emb_m.float()).argmax(1) == y).sum().item()
        found += (losses.face_scores(run.face_detector, modified) >= FACE_FOUND).sum().item()
        l1 += (modified - x).abs().mean().item() * len(y)
    n = max(len(run.val_y), 1)
    record = {"kind": "eval", "stage": stage, "step": step, "acc_original": correct_orig / n, "acc_modified": correct_mod / n,
              "face_found_modified": found / n, "l1": l1 / n}
    if getattr(run.m, "expressions", 0):  # the ResNet M has no expression branch
        record.update(expression_person_correlations(run))
    run.log.write(**record)
    run.m.train(), run.d.train()
    return record


def expression_person_correlations(run: Run) -> dict:
    """How much M's expression numbers say who it is: their correlation between two photos of each person, mean over the numbers.

    On the trained people (each one's validation photo and first training
    photo) and on the hold-out people (first two photos of each with 2+).
    """
    by_person, _, first, _ = run.same_person
    held = run.data.holdout
    order = np.argsort(held.labels, kind="stable")
    _, start, count = np.unique(held.labels[order], return_index=True, return_counts=True)
    two = start[count >= 2]
    sets = {"val": (run.val_x, run.train_x[by_person[first[run.val_y.cpu()]].to(run.device)]),
            "holdout": (to_tensor(held.crops[order[two]]).to(run.device), to_tensor(held.crops[order[two + 1]]).to(run.device))}
    figures = {}
    for name, (a, b) in sets.items():
        if len(a) >= 3:
            figures[f"expression_person_{name}"] = losses.person_correlation(run.m.expression(a)[:, :, 0, 0], run.m.expression(b)[:, :, 0, 0]).mean().item()
    return figures


# ----------------------------------------------------------------------------- stages
def pretrain_d(run: Run, steps: int):
    """D learns the identities on original faces; M meanwhile learns to reproduce its input.

    So the joint stage starts from a D that recognises the people and an M
    whose output D still recognises: any fall of D's accuracy on modified
    faces afterwards is the adversarial game's doing, not M's random start.
    An M started from `init_anonymizer` is left as it is: it already anonymizes.
    """
    train_m = not run.cfg.init_anonymizer
    for step in _steps(run, "pretrain-d", steps):
        x, y, marks = run.batch("pretrain-d", step)
        with run.autocast():
            loss_d = losses.identity_loss(run.d, run.d_embed(x).float(), y)
            record = {"loss_d_original": loss_d.item()}
            if train_m:
                raw = run.m_train(x, marks).float()
                modified = run.pasted(raw, x)
                realism_step(run, x, modified, record)
                loss_rec = losses.l1_loss(modified, x)
                loss_d = loss_d + loss_rec + m_content_loss(run, raw, modified, x, record, None, marks)
                record["loss_l1"] = loss_rec.item()
        run.opt_d.zero_grad(set_to_none=True)
        run.opt_m.zero_grad(set_to_none=True)
        loss_d.backward()
        run.opt_d.step()
        if train_m:
            run.opt_m.step()
        _after_step(run, "pretrain-d", step, steps, record)


def pretrain_a(run: Run, steps: int):
    """A learns person boxes and actions on frames whose faces M has not touched yet."""
    if run.action is None:
        return
    _, opt, data = run.action
    for step in _steps(run, "pretrain-a", steps):
        images, targets = data.batch(step, run.cfg.action_batch_size, run.device)
        with run.autocast():
            loss = data.loss(run.a_train(images), targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _after_step(run, "pretrain-a", step, steps, {"loss_a": loss.item()})


def joint(run: Run, steps: int):
    """The adversarial game, alternating: D learns original and modified faces, then M fools D while staying close to f.

    With lambda_det > 0, M also keeps A working on action frames with M(f)
    pasted over every face, and A takes a step on those same frames.
    """
    cfg = run.cfg
    d_params = list(run.d.parameters())
    with_det = cfg.lambda_det > 0 and run.action is not None
    for step in _steps(run, "joint", steps):
        x, y, marks = run.batch("joint", step)
        later = None  # M's pasted output on the track's later views, when training for privacy over tracks
        codes = None  # M's expression numbers on the faces (and on another photo of each one's person)
        with run.autocast():
            if with_det:
                out, frames, targets = m_on_faces_and_frames(run, x, marks, step)
            elif cfg.track_views > 1:
                moves = TrackMoves.draw(len(x), cfg.track_views, step_generator(cfg.seed, run.rank, TRACK_STREAM, step), x.device)
                views = moves.apply(x).to(x.dtype)
                # The moved views' landmarks are not known: M sees them as a held face's.
                out_views = run.m_train(torch.cat([x, views]), torch.cat([marks, torch.full_like(marks, -1.0).repeat(cfg.track_views - 1, 1)])).float()
                out, later = out_views[:len(x)], run.pasted(out_views[len(x):], views)
            elif max(cfg.lambda_expression_person, cfg.lambda_expression_mean) > 0:
                faces, face_marks = x, marks
                if cfg.lambda_expression_person > 0:
                    partner, _, partner_marks = run.partner_batch("joint", step)
                    faces, face_marks = torch.cat([x, partner]), torch.cat([marks, partner_marks])
                out = run.m_train(faces, face_marks)[:len(x)]
                codes = run.m.last_code.float().split(len(x))
                del run.m.last_code  # M keeps no graph: a copy of it (export's detail scale) must stay possible
            else:
                out = run.m_train(x, marks)
            raw = out.float()
            modified = run.pasted(raw, x)
        record = {}
        realism_step(run, x, modified, record)

        # D: identity loss on original and on modified faces (the attacker adapts to M).
        with run.autocast():
            emb = run.d_embed(torch.cat([x, modified.detach()])).float()
        loss_d_orig = losses.identity_loss(run.d, emb[:len(x)], y)
        loss_d_mod = losses.identity_loss(run.d, emb[len(x):], y)
        run.opt_d.zero_grad(set_to_none=True)
        (loss_d_orig + cfg.d_modified_weight * loss_d_mod).backward()
        run.opt_d.step()

        # M: bounded privacy loss against the updated D + L1 (+ A's detection loss on frames with M(f) pasted).
        for p in d_params:
            p.requires_grad_(False)
        with run.autocast():
            with torch.no_grad():
                emb_orig = run.d_embed(x, run.d).float()
            emb_mod = run.d_embed(modified if later is None else torch.cat([modified, later]), run.d).float()
        loss_priv = losses.privacy_loss(cfg.privacy_loss, run.d, emb_mod[:len(x)], emb_orig, y)
        record.update(loss_d_original=loss_d_orig.item(), loss_d_modified=loss_d_mod.item(), loss_privacy=loss_priv.item())
        target = losses.l1_target(x, cfg.l1_target, run.lookalike, y)
        loss_m = cfg.lambda_privacy * loss_priv + m_content_loss(run, raw, modified, x, record, target, marks)
        if cfg.lambda_expression_person > 0:  # the numbers say how a face looks now: two photos of one person no more alike in them than two people
            loss_person = losses.person_correlation(*codes).square().sum()
            record["loss_expression_person"] = loss_person.item()
            loss_m = loss_m + cfg.lambda_expression_person * loss_person
        if cfg.lambda_expression_mean > 0:  # no fixed change to the painting: a mean pattern shows the low-pass copy's mouth and identity alike
            loss_mean = codes[0].mean(0).square().sum()
            record["loss_expression_mean"] = loss_mean.item()
            loss_m = loss_m + cfg.lambda_expression_mean * loss_mean
        if later is not None:  # an attacker who averages D's embedding over the track must not find the person either
            track = F.normalize(emb_mod.view(cfg.track_views, len(x), -1).mean(0), dim=1)
            loss_track = losses.privacy_loss(cfg.privacy_loss, run.d, track, emb_orig, y)
            record["loss_track_privacy"] = loss_track.item()
            loss_m = loss_m + cfg.lambda_track_privacy * loss_track
        run.opt_m.zero_grad(set_to_none=True)
        if with_det:
            _, opt_a, data = run.action
            with run.autocast():
                loss_det = data.loss(run.a_train(frames), targets)
            loss_m = loss_m + cfg.lambda_det * loss_det
            record["loss_det"] = loss_det.item()
            opt_a.zero_grad(set_to_none=True)
        loss_m.backward()
        run.opt_m.step()
        if with_det:  # A got lambda_det * dL_det/dA from the same backward pass: undo the factor, then step A
            for p in run.action[0].parameters():
                if p.grad is not None:
                    p.grad.div_(cfg.lambda_det)
            opt_a.step()
        for p in d_params:
            p.requires_grad_(True)
        record["loss_m"] = loss_m.item()
        _after_step(run, "joint", step, steps, record)


def realism_step(run: Run, x: torch.Tensor, modified: torch.Tensor, record: dict):
    """One LSGAN step of the realism discriminator R: the batch's real faces against M's blended outputs."""
    if run.cfg.lambda_realism <= 0:
        return
    with run.autocast():
        real, fake = run.r_train(torch.cat([x, modified.detach()])).float().split(len(x))
    loss = losses.realism_d_loss(real, fake)
    run.opt_r.zero_grad(set_to_none=True)
    loss.backward()
    run.opt_r.step()
    record["loss_r"] = loss.item()


def m_content_loss(run: Run, raw: torch.Tensor, modified: torch.Tensor, x: torch.Tensor, record: dict,
                   l1_target: torch.Tensor | None, marks: torch.Tensor) -> torch.Tensor:
    """M's terms besides the privacy game, each weighted by its lambda and skipped at 0; values go into `record`.

    L1 to `l1_target` (losses.l1_target; None: no L1 term), the same at the eyes, nose and mouth (`marks`), L1 of low-pass copies (colour, lighting, pose), L1 on
    the blend ring (no seam), CenterFace's landmarks (pose, expression) and
    detectability, and R's realism score. R is frozen here: only M learns.
    """
    cfg = run.cfg
    terms = {
        "l1": (cfg.lambda_l1 if l1_target is not None else 0.0, lambda: losses.l1_loss(modified, l1_target)),
        "l1_features": (cfg.lambda_l1_features if l1_target is not None else 0.0, lambda: losses.feature_l1(modified, l1_target, marks)),
        "lowpass": (cfg.lambda_lowpass, lambda: losses.lowpass_l1(modified, x, cfg.lowpass_size)),
        "ring": (cfg.lambda_ring, lambda: losses.ring_l1(raw, x, run.mask)),
        "landmarks": (cfg.lambda_landmarks, lambda: losses.landmark_loss(run.face_detector, modified, x, cfg.landmark_faces)),
        "face": (cfg.lambda_face, lambda: losses.detectability_loss(run.face_detector, modified, cfg.face_score_target)),
        "realism": (cfg.lambda_realism, lambda: losses.realism_g_loss(run.r_train(modified))),
    }
    total = modified.new_zeros((), dtype=torch.float32)
    run.r.requires_grad_(False)
    for name, (weight, term) in terms.items():
        if weight > 0:
            value = term().float()
            total = total + weight * value
            record[f"loss_{name}"] = value.item()
    run.r.requires_grad_(True)
    return total


def m_on_faces_and_frames(run: Run, x: torch.Tensor, marks: torch.Tensor, step: int):
    """M on the identity batch and on every face of a batch of action frames in ONE forward pass (as DDP wants).

    Returns M's output for `x`, the frames with M's output pasted over their
    faces (normalised for A, differentiable w.r.t. M), and A's targets.
    """
    _, _, data = run.action
    held = {}

    def anonymize(crops):
        out = run.m_train(torch.cat([x, crops.to(x.dtype)]), torch.cat([marks, torch.full_like(marks[:1], -1.0).expand(len(crops), -1)]))
        held["faces"] = out[:len(x)]
        return out[len(x):]

    frames, targets = data.anonymized_batch(step, run.cfg.action_batch_size, run.device, anonymize, run.cfg)
    faces = held["faces"] if "faces" in held else run.m_train(x, marks)  # frames without faces never call M
    return faces, frames, targets


def export_stage(run: Run):
    """ONNX for M (anonymizer contract) and for A (its own exporter), each checked with ONNX Runtime."""
    if not run.main:
        return
    cfg = run.cfg
    trained_on = (f"{cfg.dataset_name}: {len(run.data.names)} identities, {len(run.data.train)} face crops; "
                  f"{run.progress['pretrain-d']} D pretraining + {run.progress['joint']} joint steps; "
                  f"{cfg.m_generator} generator" + (f" on {cfg.m_input_size}x{cfg.m_input_size} low-pass input" if cfg.m_generator == "lowpass" else "")
                  + (f" and CenterFace's 5 landmarks ({cfg.m_landmark_shape})" if cfg.m_landmarks else "")
                  + (f" and {cfg.m_expression} expression numbers it reads off the crop" if cfg.m_expression else "")
                  + (f" (only the {cfg.m_train} branch trained)" if cfg.m_train != "all" else "")
                  + f"; batch {cfg.batch_size}, lr_m={cfg.lr_m:g}, d_modified_weight={cfg.d_modified_weight:g}; "
                  f"privacy loss {cfg.privacy_loss}, lambda_privacy={cfg.lambda_privacy:g}, lambda_l1={cfg.lambda_l1} (to {cfg.l1_target}), lambda_det={cfg.lambda_det}, lambda_face={cfg.lambda_face}, "
                  f"lambda_realism={cfg.lambda_realism}, lambda_lowpass={cfg.lambda_lowpass}, lambda_ring={cfg.lambda_ring}, "
                  f"lambda_l1_features={cfg.lambda_l1_features}, lambda_landmarks={cfg.lambda_landmarks}; "
                  + (f"track privacy over {cfg.track_views} views, lambda_track_privacy={cfg.lambda_track_privacy:g}; " if cfg.track_views > 1 else "")
                  + (f"M fine-tuned from {Path(cfg.init_anonymizer).name}; " if cfg.init_anonymizer else "")
                  + (f"R carried over from {cfg.init_realism}; " if cfg.init_realism else "") + f"seed {cfg.seed}")
    model, name = run.m, f"anonymizer_{cfg.preset}.onnx"
    if cfg.export_detail_scale != 1.0 and cfg.m_generator == "lowpass":
        model, name = copy.deepcopy(run.m), f"anonymizer_{cfg.preset}_detail{cfg.export_detail_scale:g}.onnx"
        model.scale_detail(cfg.export_detail_scale)
        trained_on += f"; exported with detail scale {cfg.export_detail_scale:g}"
    result = export.export_anonymizer(model, run.out / name, crop_size=cfg.crop_size,
                                      box_enlarge=cfg.box_enlarge, preset=cfg.preset, trained_on=trained_on,
                                      trained_identities=run.data.names)
    run.log.write(kind="export", stage="export", step=0, **result)
    tqdm.write(f"exported {result['path']} ({result['bytes'] / 1e6:.1f} MB), ONNX Runtime vs torch max |diff| "
               f"{result['max_abs_diff']:.1e} (tolerance {result['tolerance']:.0e})")
    run.m.to(run.device)
    if run.action is not None:
        export_action_detector_stage(run)
    write_report(run)


def export_action_detector_stage(run: Run):
    from .models.action_detector import IMAGENET_NORMALIZATION, PRESETS, export_action_detector

    model, _, data = run.action
    preset = run.cfg.preset if run.cfg.preset in PRESETS else "edge"
    trained_on = (f"{len(data.dataset)} action frames (JHMDB/UCF101-24 clips in {run.cfg.jhmdb_root}, {run.cfg.ucf24_root}); "
                  f"{run.progress['pretrain-a']} pretraining + {run.progress['joint']} joint steps on frames anonymized by M")
    check = [data.batch(0, 1, run.device)[0].cpu().numpy()]
    worst = export_action_detector(model.eval().float().cpu(), run.out / f"action_detector_{run.cfg.preset}.onnx", PRESETS[preset]["input_size"],
                                   data.dataset.classes, IMAGENET_NORMALIZATION, trained_on, preset=preset, check_inputs=check)
    model.train().to(run.device)
    run.log.write(kind="export", stage="export-a", step=0, **{f"max_abs_diff_{k}": v for k, v in worst.items()})


def write_report(run: Run):
    """losses.png, d_accuracy.png and samples.png (hold-out people, never trained on) in out_dir."""
    plot_curves(run.log.read(), run.out)
    holdout = run.data.holdout if len(run.data.holdout) else run.data.val
    x = to_tensor(holdout.crops[:24]).to(run.device)
    marks = torch.from_numpy(holdout.landmarks[:24]).to(run.device)
    with torch.no_grad():
        modified = run.pasted(run.m.eval()(x, marks).float(), x)
    run.m.train()
    face_grid(holdout.crops[:24], to_uint8(modified), run.out / "samples.png")


# ----------------------------------------------------------------------------- loop helpers
def _steps(run: Run, stage: str, total: int):
    start = run.progress[stage]
    if start >= total:
        return range(0)
    return tqdm(range(start, total), desc=stage, initial=start, total=total, disable=not run.main, dynamic_ncols=True)


def _after_step(run: Run, stage: str, step: int, total: int, record: dict):
    done = step + 1
    run.progress[stage] = done
    cfg = run.cfg
    if done % cfg.log_every == 0 or done in (1, total):
        if run.distributed:
            values = torch.tensor(list(record.values()), device=run.device)
            dist.all_reduce(values)
            record = dict(zip(record, (values / run.world).tolist()))
        run.log.write(kind="train", stage=stage, step=done, time=round(time.time(), 1), **record)
    if stage != "pretrain-a" and (done % cfg.eval_every == 0 or done == total):
        ev = evaluate(run, stage, done)
        if run.main:
            tqdm.write(f"{stage} {done}/{total}: D accuracy original {ev['acc_original']:.2f}, modified {ev['acc_modified']:.2f}, "
                       f"face found in modified {ev['face_found_modified']:.2f}, L1 {ev['l1']:.3f}"
                       + (f"; expression numbers' person correlation {ev['expression_person_val']:.2f} trained, "
                          f"{ev['expression_person_holdout']:.2f} hold-out" if "expression_person_holdout" in ev else ""))
    if done % cfg.checkpoint_every == 0 or done == total:
        run.save()


def _load_action_detector(run: Run):
    """(model, optimiser, data) for A when the action detector code and data exist, else None."""
    needed = run.cfg.lambda_det > 0 or run.cfg.pretrain_a_steps > 0
    if not needed:
        return None
    try:
        from .data.actions import ActionTraining
    except ImportError as e:
        raise TrainConfigError(f"lambda_det and pretrain_a_steps need the action detector's training code ({e}); set both to 0.") from None
    model, opt, data = ActionTraining.build(run.cfg, run.device)
    return model, opt, data


# ----------------------------------------------------------------------------- command
def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m ros_anonymizer_training", description="Train the anonymizer M against the face discriminator D (and the action detector A).")
    parser.add_argument("stages", nargs="*", default=["all"], help=f"stages to run, in order: {', '.join(STAGES)} or all (default)")
    parser.add_argument("--config", default="edge", help="preset (tiny, edge, paper) or a YAML file")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value (repeatable)")
    parser.add_argument("--fresh", action="store_true", help="delete out_dir's checkpoint and metrics and start over")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        cfg = TrainConfig.load(args.config, args.set)
        stages = list(STAGES) if "all" in args.stages else args.stages
        unknown = [s for s in stages if s not in STAGES]
        if unknown:
            raise TrainConfigError(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)} or all.")
        train(cfg, stages, fresh=args.fresh)
    except (TrainConfigError, FileNotFoundError, ValueError, export.ExportError) as e:
        print(f"training: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("training: interrupted; run the same command again to resume from the last checkpoint.", file=sys.stderr)
        return 130
    return 0


def _realism_weights(path: str, expected: dict) -> dict:
    """R's weights from an earlier run's checkpoint: a trained critic, so a fine-tune need not wait for a fresh one."""
    saved = checkpoint.load(path).get("r")
    if saved is None or {k: tuple(v.shape) for k, v in saved.items()} != {k: tuple(v.shape) for k, v in expected.items()}:
        raise TrainConfigError(f"init_realism: {path} holds no realism discriminator of this preset's shape "
                               "(r_channels, r_layers); give the checkpoint of a run with the same settings.")
    return saved


def train(cfg: TrainConfig, stages: list[str], fresh: bool = False) -> Path:
    out = Path(cfg.out_dir)
    run = Run(cfg)
    if fresh and run.main:  # only what a run wrote; out_dir may hold a person's own files (or be ".")
        checkpoint.remove(out)
        run.log.clear()
    if run.distributed:  # nobody reads the checkpoint before rank 0 has removed it
        dist.barrier()
    if run.main:
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(out / "config.yaml")
    resumed = run.restore()
    if not resumed and cfg.init_anonymizer:
        run.m.load_state_dict(export.anonymizer_weights(cfg.init_anonymizer, run.m.state_dict(), "init_anonymizer"))
    if not resumed and cfg.init_realism:
        run.r.load_state_dict(_realism_weights(cfg.init_realism, run.r.state_dict()))
    run.action = _load_action_detector(run)
    if run.action is not None and resumed and run._saved_action[0] is not None:
        run.action[0].load_state_dict(run._saved_action[0])
        run.action[1].load_state_dict(run._saved_action[1])
    run.wrap()
    if run.main:
        tqdm.write(f"training {cfg.preset} on {run.device} (world {run.world}, amp {run.amp}): {len(run.data.names)} identities, "
                   f"{len(run.data.train)} train / {len(run.data.val)} val / {len(run.data.holdout)} hold-out faces"
                   + (f"; resuming {run.progress}" if resumed else ""))
    for stage in stages:
        if stage == "pretrain-d":
            pretrain_d(run, cfg.pretrain_d_steps)
        elif stage == "pretrain-a":
            pretrain_a(run, cfg.pretrain_a_steps)
        elif stage == "joint":
            joint(run, cfg.joint_steps)
        elif stage == "export":
            export_stage(run)
    if run.distributed:
        dist.barrier()
        dist.destroy_process_group()
    return out
