"""The machine a latency was measured on: latencies (and the INT8 knob's worth) depend on it."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def cpu_model() -> str:
    """The CPU's model name as /proc/cpuinfo gives it, else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware_id() -> str:
    """CPU model, core count, torch version and threads: what latency depends on besides the model."""
    return f"{cpu_model()}|cores={os.cpu_count()}|torch={torch.__version__}|threads={torch.get_num_threads()}"
