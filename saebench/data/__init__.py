"""saebench.data: synthetic worlds with planted ground truth (see :mod:`saebench.data.synthetic`)."""

from __future__ import annotations

from saebench.data.synthetic import HierarchyConfig, PlantedSample, PlantedWorld, PlantedWorldConfig

__all__ = ["HierarchyConfig", "PlantedSample", "PlantedWorld", "PlantedWorldConfig"]
