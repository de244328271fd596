"""The request caps of contract.limits as test cases, for the gateway and the coordinator alike.

Each case sets one field of a valid request to n entries or characters; the tests try n = the
cap (accepted) and n = cap + 1 (refused, naming the field) on both sides, so the two sides can
only agree by using the same numbers.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from scaimind.contract import limits

Body = dict[str, Any]


def submit_body() -> Body:
    """A valid POST /jobs body."""
    return {
        "name": "caps",
        "training_config": {
            "training_type": "SFT",
            "base_model": {"model_id": "meta-llama/Llama-3-8B"},
            "hyperparameters": {"max_steps": "5"},
        },
        "data_config": {"sources": [{"path": "/data/train.jsonl"}]},
        "resource_config": {"gpu_count": 1},
    }


def evaluation_body() -> Body:
    """A valid POST /evaluations body."""
    return {"job_id": "job_1", "model_uri": "/models/m", "benchmarks": [{"name": "loss"}]}


@dataclass(frozen=True)
class CapCase:
    """One cap: which request, how to give a field n items/characters, which field is named."""

    id: str
    kind: str  # "submit", "evaluation", "cancel" or "drain"
    cap: int
    apply: Callable[[Body, int], None]
    gateway_field: str
    coordinator_field: str

    def body(self, n: int) -> Body:
        """The request body with the field at size n."""
        body = {
            "submit": submit_body,
            "evaluation": evaluation_body,
            "cancel": dict,
            "drain": dict,
        }[self.kind]()
        self.apply(body, n)
        return copy.deepcopy(body)


def _tc(body: Body) -> Body:
    return body["training_config"]  # type: ignore[no-any-return]


def _src(body: Body) -> Body:
    return body["data_config"]["sources"][0]  # type: ignore[no-any-return]


CAP_CASES = [
    CapCase(
        "labels",
        "submit",
        limits.LABELS,
        lambda b, n: b.update(labels={f"k{i}": "v" for i in range(n)}),
        "labels",
        "labels",
    ),
    CapCase(
        "label key",
        "submit",
        limits.LABEL_KEY_CHARS,
        lambda b, n: b.update(labels={"k" * n: "v"}),
        "labels",
        "labels",
    ),
    CapCase(
        "label value",
        "submit",
        limits.LABEL_VALUE_CHARS,
        lambda b, n: b.update(labels={"k": "v" * n}),
        "labels",
        "labels",
    ),
    CapCase(
        "environment",
        "submit",
        limits.ENVIRONMENT,
        lambda b, n: _tc(b).update(environment={f"E{i}": "v" for i in range(n)}),
        "training_config.environment",
        "training_config.environment",
    ),
    CapCase(
        "environment value",
        "submit",
        limits.VALUE_CHARS,
        lambda b, n: _tc(b).update(environment={"E": "v" * n}),
        "training_config.environment",
        "training_config.environment",
    ),
    CapCase(
        "hyperparameters",
        "submit",
        limits.HYPERPARAMETERS,
        lambda b, n: _tc(b).update(hyperparameters={f"h{i}": "1" for i in range(n)}),
        "training_config.hyperparameters",
        "training_config.hyperparameters",
    ),
    CapCase(
        "hyperparameter value",
        "submit",
        limits.VALUE_CHARS,
        lambda b, n: _tc(b).update(hyperparameters={"h": "1" * n}),
        "training_config.hyperparameters",
        "training_config.hyperparameters",
    ),
    CapCase(
        "model_kwargs",
        "submit",
        limits.OPTIONS,
        lambda b, n: _tc(b)["base_model"].update(model_kwargs={f"k{i}": "v" for i in range(n)}),
        "training_config.base_model.model_kwargs",
        "training_config.base_model.model_kwargs",
    ),
    CapCase(
        "model_id",
        "submit",
        limits.MODEL_ID_CHARS,
        lambda b, n: _tc(b)["base_model"].update(model_id="m" * n),
        "training_config.base_model.model_id",
        "training_config.base_model.model_id",
    ),
    CapCase(
        "sources",
        "submit",
        limits.SOURCES,
        lambda b, n: b["data_config"].update(sources=[{"path": f"/d/{i}"} for i in range(n)]),
        "data_config.sources",
        "data_config.sources",
    ),
    CapCase(
        "source path",
        "submit",
        limits.PATH_CHARS,
        lambda b, n: _src(b).update(path="/" + "p" * (n - 1)),
        "data_config.sources.0.path",
        "data_config.sources[0].path",
    ),
    CapCase(
        "columns",
        "submit",
        limits.COLUMNS,
        lambda b, n: _src(b).update(columns=[f"c{i}" for i in range(n)]),
        "data_config.sources.0.columns",
        "data_config.sources[0].columns",
    ),
    CapCase(
        "chat_template",
        "submit",
        limits.TEMPLATE_CHARS,
        lambda b, n: b["data_config"].update(preprocess={"chat_template": "t" * n}),
        "data_config.preprocess.chat_template",
        "data_config.preprocess.chat_template",
    ),
    CapCase(
        "node_selector",
        "submit",
        limits.NODE_SELECTOR,
        lambda b, n: b["resource_config"].update(node_selector={f"k{i}": "v" for i in range(n)}),
        "resource_config.node_selector",
        "resource_config.node_selector",
    ),
    CapCase(
        "node_affinity",
        "submit",
        limits.NODE_AFFINITY,
        lambda b, n: b.update(scheduling_config={"node_affinity": [f"n{i}" for i in range(n)]}),
        "scheduling_config.node_affinity",
        "scheduling_config.node_affinity",
    ),
    CapCase(
        "name",
        "submit",
        limits.NAME_CHARS,
        lambda b, n: b.update(name="n" * n),
        "name",
        "name",
    ),
    CapCase(
        "benchmarks",
        "evaluation",
        limits.BENCHMARKS,
        lambda b, n: b.update(benchmarks=[{"name": "loss"}] * n),
        "benchmarks",
        "benchmarks",
    ),
    CapCase(
        "cancel reason",
        "cancel",
        limits.REASON_CHARS,
        lambda b, n: b.update(reason="r" * n),
        "reason",
        "reason",
    ),
    CapCase(
        "drain reason",
        "drain",
        limits.REASON_CHARS,
        lambda b, n: b.update(reason="r" * n),
        "reason",
        "reason",
    ),
]


def names_field(field: str, expected: str) -> bool:
    """Whether an error's field is `expected` or lies inside it."""
    return field == expected or field.startswith((f"{expected}.", f"{expected}["))
