"""Small shared helpers: seeding, devices, atomic files, progress bars."""

from caex.utils.device import autocast_context, module_device, resolve_device
from caex.utils.io import atomic_write_bytes, atomic_write_text, read_json, write_json
from caex.utils.progress import progress
from caex.utils.seed import global_rng_kept, seed_weights, torch_generator
from caex.utils.versions import software_versions

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "autocast_context",
    "global_rng_kept",
    "module_device",
    "progress",
    "read_json",
    "resolve_device",
    "seed_weights",
    "software_versions",
    "torch_generator",
    "write_json",
]
