"""Training records a person can read: metrics as JSON lines, PNG plots, a grid of faces."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


class MetricsLog:
    """Appends one JSON object per line to metrics.jsonl (survives resumes; plots read it back)."""

    def __init__(self, out_dir: str | Path, enabled: bool = True):
        self.path = Path(out_dir) / "metrics.jsonl"
        self.enabled = enabled

    def write(self, **record) -> None:
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.write(json.dumps({k: (round(v, 6) if isinstance(v, float) else v) for k, v in record.items()}) + "\n")

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


def plot_curves(records: list[dict], out_dir: str | Path) -> list[Path]:
    """losses.png (every loss per stage) and d_accuracy.png (D on original vs modified faces)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    written = []
    train = [r for r in records if r.get("kind") == "train"]
    loss_keys = sorted({k for r in train for k in r if k.startswith("loss_")})
    if train and loss_keys:
        stages = list(dict.fromkeys(r["stage"] for r in train))
        fig, axes = plt.subplots(1, len(stages), figsize=(5 * len(stages), 3.5), squeeze=False)
        for ax, stage in zip(axes[0], stages):
            rows = [r for r in train if r["stage"] == stage]
            for key in loss_keys:
                pts = [(r["step"], r[key]) for r in rows if key in r]
                if pts:
                    ax.plot(*zip(*pts), label=key[5:])
            ax.set_title(stage)
            ax.set_xlabel("step")
            ax.legend(fontsize=7)
        fig.tight_layout()
        written.append(out_dir / "losses.png")
        fig.savefig(written[-1], dpi=90)
        plt.close(fig)
    evals = [r for r in records if r.get("kind") == "eval"]
    if evals:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        x = np.arange(len(evals))
        for key, label in (("acc_original", "D on original faces"), ("acc_modified", "D on modified faces (M)"),
                           ("face_found_modified", "CenterFace finds a face in M's output")):
            ax.plot(x, [r.get(key, np.nan) for r in evals], marker="o", label=label, linestyle="--" if key.startswith("face") else "-")
        ax.set_xticks(x, [f"{r['stage'][:5]}\n{r['step']}" for r in evals], fontsize=6)
        ax.set_ylabel("share of validation faces")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=8)
        fig.tight_layout()
        written.append(out_dir / "d_accuracy.png")
        fig.savefig(written[-1], dpi=90)
        plt.close(fig)
    return written


def face_grid(original: np.ndarray, anonymized: np.ndarray, path: str | Path, columns: int = 8) -> Path:
    """Pairs of rows: originals above, anonymized below (uint8 [N,S,S,3] each)."""
    import cv2

    n = min(len(original), columns * 3)
    if n == 0:
        return Path(path)
    size = original.shape[1]
    rows = -(-n // columns)
    grid = np.full((rows * 2 * (size + 2), columns * (size + 2), 3), 255, np.uint8)
    for i in range(n):
        r, c = divmod(i, columns)
        for k, img in enumerate((original[i], anonymized[i])):
            y, x = (2 * r + k) * (size + 2), c * (size + 2)
            grid[y:y + size, x:x + size] = img
    cv2.imwrite(str(path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    return Path(path)
