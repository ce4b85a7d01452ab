"""``caex demo``: the whole pipeline on the embedded synthetic data, staged, resumable and budgeted."""

from caex.demo.pipeline import DemoResult, run_demo
from caex.demo.profiles import PROFILES, DemoProfile, get_profile

__all__ = ["PROFILES", "DemoProfile", "DemoResult", "get_profile", "run_demo"]
