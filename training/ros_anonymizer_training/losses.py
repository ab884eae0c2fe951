"""Losses of the adversarial game between the anonymizer M and the face discriminator D.

M's privacy loss is bounded on purpose. The paper's `-L_D(M(f))` (negative
cross-entropy) has no minimum: M can keep lowering it by pushing D's logit
for the true identity to minus infinity, which drowns the L1 and detection
terms and blows up training. We use instead
- `true_class`: -log(1 - p_true), zero once D gives the true identity no
  probability, and large only while D still recognises the face;
- `cosine`: max(0, cos(D(M(f)), D(f))), zero once the modified face's
  embedding is orthogonal to the original's. This also moves the face away
  from identities D never saw as classes, which helps against other
  recognisers (the shipped model is judged by dlib's, not by D);
- `both`: their sum (the default).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .data.faces import to_tensor, to_uint8
from .models.anonymizer import point_maps


def identity_loss(discriminator, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """D's cosine-margin cross-entropy."""
    cosine = discriminator.cosine(embeddings)
    return F.cross_entropy(discriminator.margin_logits(cosine, labels).float(), labels)


def log_not_true_class(discriminator, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log(1 - p_true) per face, computed as logsumexp over the other classes minus logsumexp over all.

    Stable where D is certain (p_true ~ 1), which is exactly where M needs a
    gradient; clamping p_true instead would zero it there.
    """
    logits = discriminator.scale * discriminator.cosine(embeddings).float()
    others = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), float("-inf"))
    return others.logsumexp(1) - logits.logsumexp(1)


def privacy_loss(kind: str, discriminator, modified_emb, original_emb, labels) -> torch.Tensor:
    """How much D still links M(f) to f's identity; bounded below by zero (see module docstring)."""
    loss = modified_emb.new_zeros((), dtype=torch.float32)
    if kind in ("true_class", "both"):
        loss = loss - log_not_true_class(discriminator, modified_emb, labels).mean()
    if kind in ("cosine", "both"):
        similarity = (modified_emb.float() * original_emb.detach().float()).sum(1)
        loss = loss + similarity.clamp(min=0).mean()
    return loss


def l1_loss(modified: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """Keeps M's output close to the input so it still looks like a face (and the rest of the frame like itself)."""
    return (modified.float() - original.float()).abs().mean()


def l1_target(x: torch.Tensor, target: str, lookalike=None, labels: torch.Tensor | None = None) -> torch.Tensor:
    """What the L1 term pulls M's output toward: the input itself ("self"), the batch's next face ("other"),
    or its lookalike ("lookalike": the input's own low-pass copy with a trained stranger's detail, lookalike.py).

    With "other", M is never rewarded for guessing a person's features from
    its low-pass copy: the best it can paint is a face anyone could have.
    The batch is drawn at random from hundreds of people, so the next face
    is almost always someone else's. With "lookalike" the face it is pulled
    toward is a real one, of another identity (`labels`), in the same pose
    and lighting layout: sharp detail that fits the copy and is not the person's.
    """
    if target == "self":
        return x
    if target == "other":
        return x.roll(1, 0)
    return to_tensor(lookalike.faces(to_uint8(x), labels.cpu().numpy())).to(x.device, x.dtype)


def centerface_maps(detector, faces: torch.Tensor) -> list[torch.Tensor]:
    """CenterFace's outputs (heatmap, scale, offset, landmarks) on crops in [-1, 1], cut to the central half.

    The crop is enlarged 1.5x (to a multiple of 32) so the face is the size
    CenterFace finds best; only the central half of each map counts, so M
    cannot satisfy the detector with a face-like blob in a corner.
    """
    size = -(-int(faces.shape[-1] * 1.5) // 32) * 32
    rgb = F.interpolate((faces.float() + 1) * 127.5, size=(size, size), mode="bilinear", align_corners=False)
    maps = detector(rgb)
    h, w = maps[0].shape[-2:]
    return [m[:, :, h // 4:h - h // 4, w // 4:w - w // 4] for m in maps]


def face_scores(detector, faces: torch.Tensor) -> torch.Tensor:
    """CenterFace's strongest face-centre score in the middle of each crop (faces in [-1, 1], as M sees them)."""
    return centerface_maps(detector, faces)[0][:, 0].amax((1, 2))


def landmark_loss(detector, modified: torch.Tensor, original: torch.Tensor, faces: int = 0) -> torch.Tensor:
    """Pose and expression kept: CenterFace's 5 landmarks and box size on M's output match the original's.

    Read at the original's face centre (its heatmap peak), where CenterFace
    regresses the landmarks relative to the box and the box size in log
    units; both are compared with L1. CenterFace is the training detector, so
    its figures are not independent; the evaluation judges landmarks with
    dlib's 68-point predictor, which training never sees. Both crops are
    seen at half resolution (2x2 average). `faces` > 0 uses
    only the batch's first `faces` faces (CenterFace is M's costliest critic).
    """
    if faces:
        modified, original = modified[:faces], original[:faces]
    # Half resolution: M cannot satisfy CenterFace with pixel-level texture (an adversarial stipple), only with the face's shape.
    modified, original = F.avg_pool2d(modified.float(), 2), F.avg_pool2d(original.float(), 2)
    with torch.no_grad():
        heat, scale, _, marks = centerface_maps(detector, original)
        flat = heat[:, 0].flatten(1).argmax(1)
    heat_m, scale_m, _, marks_m = centerface_maps(detector, modified)
    pick = lambda m: m.flatten(2).gather(2, flat[:, None, None].expand(-1, m.shape[1], 1))[..., 0]
    return (pick(marks_m) - pick(marks)).abs().mean() + (pick(scale_m) - pick(scale)).abs().mean()


def lowpass_l1(modified: torch.Tensor, original: torch.Tensor, size: int) -> torch.Tensor:
    """L1 between `size` x `size` area-downsampled copies: keeps colour, lighting and pose, frees the detail that carries identity."""
    pool = modified.shape[-1] // size
    return (F.avg_pool2d(modified.float(), pool) - F.avg_pool2d(original.float(), pool)).abs().mean()


def feature_l1(modified: torch.Tensor, target: torch.Tensor, marks: torch.Tensor, sigma: float = 0.08) -> torch.Tensor:
    """L1 in Gaussian windows (sigma in crop units) at the detector's five points, eyes, nose and mouth corners
    (unknown points, -1, weigh nothing): where expression shows, which the whole-face L1 weighs like cheek and forehead."""
    marks = marks.float()
    weight = point_maps(marks[:, 0::2], marks[:, 1::2], (marks[:, 0::2] >= 0).float(), modified.shape[-1], sigma).sum(1, keepdim=True)
    diff = (modified.float() - target.float()).abs()
    return (diff * weight).sum() / (weight.sum() * modified.shape[1]).clamp_min(1e-6)


def person_correlation(code: torch.Tensor, partner: torch.Tensor) -> torch.Tensor:
    """[K]: each number's correlation, over the batch, between each face ([N,K] `code`) and another photo of the same person.

    It estimates the share of the number's spread that lies between people
    (its intraclass correlation): 0 when the numbers say how a face looks
    now and nothing of whose it is. The training term is its square summed,
    so a batch's chance correlation pushes neither way on average.
    """
    a, b = code.float() - code.float().mean(0), partner.float() - partner.float().mean(0)
    return (a * b).sum(0) / ((a * a).sum(0) * (b * b).sum(0) + 1e-8).sqrt()


def ring_l1(raw: torch.Tensor, original: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L1 where the blend mask fades (weight 4m(1-m), 1 at its middle): M's raw output must meet the frame without a seam."""
    ring = 4 * mask * (1 - mask)
    return ((raw.float() - original.float()).abs() * ring).sum() / (ring.sum() * raw.shape[0] * raw.shape[1]).clamp_min(1)


def realism_d_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """LSGAN (Mao et al. 2017) for the realism discriminator: real faces to 1, M's outputs to 0."""
    return 0.5 * ((real_scores.float() - 1) ** 2).mean() + 0.5 * (fake_scores.float() ** 2).mean()


def realism_g_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """LSGAN for M: its blended outputs scored as real."""
    return ((fake_scores.float() - 1) ** 2).mean()


def detectability_loss(detector, faces: torch.Tensor, target: float) -> torch.Tensor:
    """How far below `target` CenterFace's score on M's output is, in log terms; zero once it is above.

    The issue's naturalness target is that CenterFace still finds a face in
    the anonymized output; bounded like the privacy loss, so it stops pulling
    once the face is found and cannot undo privacy for nothing.
    """
    return F.relu(math.log(target) - face_scores(detector, faces).clamp_min(1e-6).log()).mean()


def accuracy(discriminator, embeddings: torch.Tensor, labels: torch.Tensor) -> float:
    return (discriminator.cosine(embeddings).argmax(1) == labels).float().mean().item()
