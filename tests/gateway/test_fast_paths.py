"""The gateway's fast paths answer exactly what the slow ones did (issue 13).

- success bodies rendered once with orjson equal what FastAPI's response-model validation and
  serialisation made of the same dict, for every view, NaN and infinity included;
- verified JWTs are remembered per token digest until their exp, bounded, and a token that does
  not verify (bad signature, expired) still fails every time.
"""

from __future__ import annotations

import math
from pathlib import Path

import orjson
import pytest
from google.protobuf.message import Message
from pydantic import BaseModel

from scaimind.gateway.backend.convert import message_to_dict
from scaimind.gateway.errors import AuthTokenInvalid
from scaimind.gateway.security.auth import TokenVerifier
from scaimind.gateway.web.responses import DataResponse
from scaimind.gateway.web.schemas.views import Data, Job
from scaimind.v1 import common_pb2
from tests.conftest import make_token, settings_for
from tests.gateway.test_openapi import VIEWS, _fill


@pytest.mark.parametrize(("model", "message"), VIEWS, ids=lambda v: getattr(v, "__name__", ""))
def test_orjson_body_equals_the_response_model_rendering(
    model: type[BaseModel], message: type[Message]
) -> None:
    payload = message_to_dict(_fill(message()))
    body = DataResponse(payload).body
    assert body == orjson.dumps({"data": payload})
    typed = Data[model].model_validate({"data": payload})  # type: ignore[valid-type]
    assert orjson.loads(body) == orjson.loads(typed.model_dump_json())


def test_non_finite_measures_are_null_as_before() -> None:
    job = _fill(common_pb2.Job())
    job.latest_metrics["loss"] = math.nan
    job.latest_metrics["grad_norm"] = math.inf
    job.checkpoints[0].metrics["loss"] = -math.inf
    payload = message_to_dict(job)
    rendered = orjson.loads(DataResponse(payload).body)["data"]
    typed = orjson.loads(Data[Job].model_validate({"data": payload}).model_dump_json())
    assert rendered["latest_metrics"]["loss"] is None
    assert rendered["latest_metrics"]["grad_norm"] is None
    assert rendered["checkpoints"][0]["metrics"]["loss"] is None
    assert rendered == typed["data"]


class Clock:
    def __init__(self) -> None:
        import time

        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class CountingVerifier(TokenVerifier):
    """Counts the full checks (signature and claims) it makes."""

    checks = 0

    async def _verify(self, token: str) -> tuple[object, float]:  # type: ignore[override]
        self.checks += 1
        return await super()._verify(token)


async def test_verified_tokens_are_remembered_until_exp(tmp_path: Path) -> None:
    clock = Clock()
    verifier = CountingVerifier(settings_for(tmp_path), clock=clock)
    token = make_token(ttl_s=120)
    first = await verifier.verify(token)
    again = await verifier.verify(token)
    assert again == first
    assert verifier.checks == 1
    # Past the token's exp the memory is not used: the token is checked in full again.
    clock.now += 121
    await verifier.verify(token)
    assert verifier.checks == 2


async def test_entries_last_at_most_five_minutes(tmp_path: Path) -> None:
    clock = Clock()
    verifier = CountingVerifier(settings_for(tmp_path), clock=clock)
    token = make_token(ttl_s=3600)
    await verifier.verify(token)
    clock.now += 299
    await verifier.verify(token)
    assert verifier.checks == 1
    clock.now += 2
    await verifier.verify(token)
    assert verifier.checks == 2


async def test_failures_are_never_remembered(tmp_path: Path) -> None:
    verifier = CountingVerifier(settings_for(tmp_path))
    good = make_token()
    await verifier.verify(good)
    expired = make_token(ttl_s=-3600)
    forged = make_token(secret="another-secret-0123456789abcdef-0123456789")
    for _ in range(3):
        with pytest.raises(AuthTokenInvalid, match="expired"):
            await verifier.verify(expired)
        with pytest.raises(AuthTokenInvalid, match="signature"):
            await verifier.verify(forged)
    assert verifier.checks == 1 + 6
    assert verifier.remembered == 1


async def test_the_memory_is_bounded(tmp_path: Path) -> None:
    verifier = CountingVerifier(settings_for(tmp_path), kept=3)
    tokens = [make_token(user=f"user-{i}") for i in range(5)]
    for token in tokens:
        await verifier.verify(token)
    assert verifier.remembered == 3
    # The oldest were dropped (checked again), the newest are remembered.
    await verifier.verify(tokens[-1])
    assert verifier.checks == 5
    await verifier.verify(tokens[0])
    assert verifier.checks == 6
