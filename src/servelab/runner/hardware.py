"""Which hardware a prediction or a run is about: a catalog name, the local GPU, or this CPU.

Owns resolving ``--hw`` / the spec's ``hardware:`` key. ``auto`` is the first local NVIDIA GPU
the catalog knows; for a run (``measure_cpu``) with no such GPU it is this machine's CPU,
measured on the spot (runner/hostbench.py); ``none`` is no hardware (no ceilings). Also
finds the hardware profile ``servelab calibrate`` stored for the resolved hardware.
"""

from __future__ import annotations

from servelab.models.arch_files import read_user_hardware
from servelab.runner.host import gpus
from servelab.theory.calibration import HardwareProfile
from servelab.theory.hardware import Hardware, find_hardware, match_gpu, parse_memory_mib


def resolve_hardware(name: str, *, measure_cpu: bool = False) -> Hardware | None:
    key = name.strip().lower()
    if key == "none":
        return None
    if key != "auto":
        return find_hardware(name, read_user_hardware())
    for gpu in gpus():
        found = match_gpu(gpu.get("name", ""), parse_memory_mib(gpu.get("memory", "")))
        if found is not None:
            return found
    if measure_cpu:
        from servelab.runner.hostbench import measure_host

        return measure_host()
    return None


def profile_for(hardware: Hardware | None) -> HardwareProfile | None:
    """The newest calibration of ``hardware`` (``runner.calibrate.load_profile``); None for no
    hardware or a machine never calibrated. For the manifest at run start."""
    if hardware is None:
        return None
    from servelab.runner.calibrate import load_profile

    return load_profile(hardware.name)
