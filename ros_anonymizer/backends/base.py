"""The contract every inference backend fulfils."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


class ModelError(RuntimeError):
    """A model that cannot be loaded or run; the message says which file and what to do."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple  # ints for fixed dimensions, strings (or None) for dynamic ones
    dtype: np.dtype


class Backend(ABC):
    """A loaded model. `metadata` carries the model's self-description (ONNX metadata_props)."""

    name: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    metadata: dict[str, str]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one inference; returns every output by name. Raises on any failure.

        NaN or Inf in any floating-point output is a failure (ModelError), never
        a result: a corrupted engine or a bad calibration must not read as "no faces".
        """
        outputs = self._run(feeds)
        for name, value in outputs.items():
            if value.dtype.kind in "fc" and not np.isfinite(value).all():
                raise ModelError(f"{self.name} model output {name!r} contains NaN or Inf; the frame cannot be trusted.")
        return outputs

    @abstractmethod
    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The backend's own inference, before the output check."""

    def input(self, name: str) -> TensorSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise ModelError(f"model has no input named {name!r} (it has {', '.join(s.name for s in self.inputs)}).")
