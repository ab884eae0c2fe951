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

    @abstractmethod
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one inference; returns every output by name. Raises on any failure."""

    def input(self, name: str) -> TensorSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise ModelError(f"model has no input named {name!r} (it has {', '.join(s.name for s in self.inputs)}).")
