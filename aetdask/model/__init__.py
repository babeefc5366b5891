"""From volume to atomic model: tracing, classification, coordinate refinement."""

from aetdask.model.bound import orientation_bound
from aetdask.model.classify import classify
from aetdask.model.refine import refine_atoms
from aetdask.model.trace import merge_distance, trace

__all__ = ["trace", "classify", "refine_atoms", "merge_distance", "orientation_bound"]
