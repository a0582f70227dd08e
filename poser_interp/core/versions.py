"""Versions of the software that computed a result, recorded in testbed and results manifests."""

from __future__ import annotations

import platform

import torch


def versions() -> dict[str, str]:
    import peft
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__}
