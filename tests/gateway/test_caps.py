"""Request caps and character rules at the gateway: 422 naming the field, nothing sent upstream."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from scaimind.contract import limits
from tests.conftest import auth
from tests.gateway.conftest import PREFIX, Gateway
from tests.gateway.test_validation import validation_fields
from tests.limits_cases import CAP_CASES, CapCase, names_field, submit_body

pytestmark = pytest.mark.asyncio(loop_scope="module")

_PATHS = {
    "submit": "/jobs",
    "evaluation": "/evaluations",
    "cancel": "/jobs/job_1/cancel",
    "drain": "/cluster/nodes/node-a/drain",
}
_RPCS = {"submit": "SubmitJob", "cancel": "CancelJob"}


async def _post(client: httpx.AsyncClient, path: str, body: Any) -> httpx.Response:
    # json.dumps escapes lone surrogates and control characters, as any JSON client may send.
    return await client.post(
        f"{PREFIX}{path}",
        content=json.dumps(body),
        headers={**auth(), "Content-Type": "application/json"},
    )


@pytest.mark.parametrize("case", CAP_CASES, ids=lambda c: c.id)
async def test_a_cap_is_accepted_and_one_more_is_refused(
    shared_gateway: Gateway, case: CapCase
) -> None:
    client, servicer = shared_gateway
    r = await _post(client, _PATHS[case.kind], case.body(case.cap + 1))
    [field] = validation_fields(r)
    assert names_field(field, case.gateway_field), field
    assert servicer.calls == []

    r = await _post(client, _PATHS[case.kind], case.body(case.cap))
    assert r.status_code != 422, r.text
    if case.kind in _RPCS:
        assert r.status_code < 300, r.text
        assert servicer.last(_RPCS[case.kind])


# Stands for an integer of 5,000 digits (more than Python converts to text by default).
_HUGE = "<huge integer>"


def _short(value: Any) -> str:
    try:
        return ascii(value)[:24]
    except ValueError:  # an int too long to print
        return "huge int"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", "a\x00b"),
        ("name", "two\nlines"),
        ("name", "\ud800"),
        ("labels", {"team": "\x1b[31mred"}),
        ("labels", {"\ud800": "v"}),
        ("training_config.hyperparameters", {"lr": "\x00"}),
        ("training_config.hyperparameters", {"lr": 1e400}),
        ("training_config.hyperparameters", {"lr": _HUGE}),
        ("training_config.max_retries", _HUGE),
        ("data_config.sources", [{"path": "/data/x\x00.jsonl"}]),
        ("resource_config.memory_gb", 1e999),
        ("resource_config.gpu_count", 2**40),
        ("training_config.priority", "high"),
        ("labels", ["not", "a", "map"]),
    ],
    ids=lambda v: _short(v),
)
async def test_bad_characters_numbers_and_types_are_422(
    shared_gateway: Gateway, field: str, value: Any
) -> None:
    client, servicer = shared_gateway
    body = submit_body()
    *parents, last = field.split(".")
    node: Any = body
    for part in parents:
        node = node[part]
    node[last] = value
    text = json.dumps(body).replace("Infinity", "1e999").replace(f'"{_HUGE}"', "9" * 5000)
    r = await client.post(
        f"{PREFIX}/jobs", content=text, headers={**auth(), "Content-Type": "application/json"}
    )
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "VALIDATION_ERROR"
    assert servicer.calls == []


async def test_free_text_may_span_lines(shared_gateway: Gateway) -> None:
    client, servicer = shared_gateway
    r = await _post(client, "/jobs/job_1/cancel", {"reason": "first line\nsecond\tline"})
    assert r.status_code == 200, r.text
    assert servicer.last("CancelJob").request.reason == "first line\nsecond\tline"  # type: ignore[attr-defined]


async def test_list_filters_are_capped(shared_gateway: Gateway) -> None:
    client, servicer = shared_gateway
    labels = [("label", f"k{i}=v") for i in range(limits.LABELS + 1)]
    r = await client.get(f"{PREFIX}/jobs", params=labels, headers=auth())
    assert validation_fields(r) == ["label"]
    r = await client.get(f"{PREFIX}/jobs", params={"label": "k" * 64 + "=v"}, headers=auth())
    assert validation_fields(r) == ["label.0"]
    assert servicer.calls == []
