"""Request examples shown in the OpenAPI documentation (a test validates each one)."""

from __future__ import annotations

from typing import Any, Final

SUBMIT_JOB_EXAMPLES: Final[dict[str, dict[str, Any]]] = {
    "quick-start": {
        "summary": "The README's Quick start",
        "description": "SFT on a local JSON-lines file with the built-in trainer, 50 steps.",
        "value": {
            "name": "first-run",
            "training_config": {
                "training_type": "SFT",
                "base_model": {"model_id": "meta-llama/Llama-3-8B"},
                "hyperparameters": {"max_steps": 50, "learning_rate": 0.01},
            },
            "data_config": {"sources": [{"path": "/tmp/train.jsonl"}]},
            "resource_config": {"gpu_count": 1},
        },
    },
    "lora-scheduled": {
        "summary": "LoRA from ScaiDrive, labelled, queued and checkpointed",
        "description": (
            "Data from the tenant's ScaiDrive, 10% held out for validation, a checkpoint every "
            "100 steps (the last 3 kept), in the `nightly` queue, preemptible, retried twice."
        ),
        "value": {
            "name": "support-bot-lora",
            "training_config": {
                "training_type": "LORA",
                "base_model": {"model_id": "meta-llama/Llama-3-8B", "dtype": "bfloat16"},
                "hyperparameters": {"max_steps": 1000, "learning_rate": 0.0002, "seed": 7},
                "max_retries": 2,
                "priority": 3,
            },
            "data_config": {
                "sources": [{"path": "scaidrive://acme/datasets/support.jsonl", "format": "jsonl"}],
                "validation_split": 0.1,
            },
            "resource_config": {"gpu_count": 1},
            "output_config": {"checkpoint_interval_steps": 100, "keep_last_checkpoints": 3},
            "scheduling_config": {"queue_name": "nightly", "preemptible": True},
            "labels": {"team": "support", "experiment": "lora-r16"},
        },
    },
    "custom-script": {
        "summary": "Your own training script",
        "description": (
            "A CUSTOM job runs the script with SCAIMIND_* variables for the spec, checkpoints "
            "and metrics (see the README)."
        ),
        "value": {
            "name": "custom",
            "training_config": {
                "training_type": "FULL_FINETUNE",
                "base_model": {"model_id": "my-org/base"},
                "framework": {"type": "CUSTOM", "custom_script_path": "/opt/train/train.py"},
                "environment": {"EPOCHS": "3"},
            },
            "data_config": {"sources": [{"path": "/data/corpus.txt", "format": "text"}]},
            "resource_config": {"gpu_count": 2},
        },
    },
}

SUBMIT_EVALUATION_EXAMPLES: Final[dict[str, dict[str, Any]]] = {
    "final-model": {
        "summary": "Score a job's final model",
        "value": {
            "job_id": "job_0123456789abcdef",
            "model_uri": "file:///srv/models/job_0123456789abcdef",
            "benchmarks": [{"name": "perplexity"}, {"name": "token_accuracy", "num_samples": 200}],
        },
    },
}
