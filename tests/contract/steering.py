"""Steering generated requests so that stateful runs get past submission.

A generated POST /jobs body names data that does not exist, so every submit would fail and no
link (submit → get → pause/cancel/retry) would ever be followed. `steer_submit` keeps the
generated body but points its data at a real corpus and bounds the run, so jobs are created,
run briefly on this machine and end by themselves. Shared by the stateful test and the hooks
of the longer run (bench/fuzz.py).
"""

from __future__ import annotations

from typing import Any


def steer_submit(body: Any, corpus: str) -> None:
    """Make a generated POST /jobs body one the reference coordinator accepts and ends soon."""
    if not isinstance(body, dict):
        return
    body["data_config"] = {"sources": [{"path": corpus}]}
    body["resource_config"] = {"gpu_count": 1, "max_runtime_seconds": 60}
    training = body.get("training_config")
    if isinstance(training, dict):
        # The built-in trainer, a few steps: no script to find, nothing that runs for long.
        training["framework"] = {"type": "HF_TRAINER"}
        training["hyperparameters"] = {"max_steps": "30"}
        training["environment"] = {}
        training.pop("resume_from_checkpoint", None)
    # Placement fields that name nodes or queues of an inventory the generator cannot know.
    body.pop("scheduling_config", None)
    body.pop("output_config", None)
