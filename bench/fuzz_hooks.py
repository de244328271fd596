"""Schemathesis hooks of bench/fuzz.py (loaded through SCHEMATHESIS_HOOKS).

In the stateful phase, valid POST /jobs bodies are steered onto a real corpus (see
tests/contract/steering.py), so submissions succeed and the links to get, pause, cancel, resume
and retry are followed with real jobs. Every other case goes out as generated.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import schemathesis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.contract.steering import steer_submit


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    """Steer valid stateful submissions onto the corpus in SCAIMIND_FUZZ_CORPUS."""
    meta = case.meta
    if (
        case.method == "POST"
        and case.path.endswith("/jobs")
        and meta is not None
        and meta.phase.name == "stateful"
        and meta.generation.mode == "positive"
    ):
        steer_submit(case.body, os.environ["SCAIMIND_FUZZ_CORPUS"])
