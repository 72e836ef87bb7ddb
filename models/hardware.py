"""The machine a latency was measured on: latencies (and the INT8 knob's worth) depend on it."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def hardware_id() -> str:
    """CPU model, core count, torch version and threads: what latency depends on besides the model."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}|cores={os.cpu_count()}|torch={torch.__version__}|threads={torch.get_num_threads()}"
