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

import torch
import torch.nn.functional as F


def identity_loss(discriminator, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """D's cosine-margin cross-entropy."""
    cosine = discriminator.cosine(embeddings)
    return F.cross_entropy(discriminator.margin_logits(cosine, labels).float(), labels)


def true_class_probability(discriminator, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logits = discriminator.scale * discriminator.cosine(embeddings).float()
    return logits.softmax(1).gather(1, labels[:, None])[:, 0]


def privacy_loss(kind: str, discriminator, modified_emb, original_emb, labels) -> torch.Tensor:
    """How much D still links M(f) to f's identity; bounded below by zero (see module docstring)."""
    loss = modified_emb.new_zeros((), dtype=torch.float32)
    if kind in ("true_class", "both"):
        p_true = true_class_probability(discriminator, modified_emb, labels).clamp(max=1 - 1e-4)
        loss = loss - torch.log1p(-p_true).mean()
    if kind in ("cosine", "both"):
        similarity = (modified_emb.float() * original_emb.detach().float()).sum(1)
        loss = loss + similarity.clamp(min=0).mean()
    return loss


def l1_loss(modified: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """Keeps M's output close to the input so it still looks like a face (and the rest of the frame like itself)."""
    return (modified.float() - original.float()).abs().mean()


def accuracy(discriminator, embeddings: torch.Tensor, labels: torch.Tensor) -> float:
    return (discriminator.cosine(embeddings).argmax(1) == labels).float().mean().item()
