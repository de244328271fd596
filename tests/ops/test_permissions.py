"""Permission matrix of the cluster, queue, evaluation and data routes; tenant from the token."""

from __future__ import annotations

from typing import Any

import pytest

from scaimind.gateway.security.auth import CLUSTER_ADMIN, EVALUATE, MANAGE, VIEW
from tests.conftest import auth
from tests.ops.conftest import PREFIX, Gateway

EVAL_BODY = {"job_id": "job_1", "model_uri": "m", "benchmarks": [{"name": "loss"}]}
DATA_BODY = {"sources": [{"path": "/d/train.jsonl"}]}

# (method, path, body, accepted permissions, rpc, success status)
ROUTES: list[tuple[str, str, Any, frozenset[str], str, int]] = [
    ("GET", "/cluster", None, frozenset({VIEW}), "GetClusterStatus", 200),
    ("GET", "/cluster/nodes", None, frozenset({VIEW}), "ListNodes", 200),
    ("GET", "/cluster/nodes/node-1", None, frozenset({VIEW}), "GetNode", 200),
    ("POST", "/cluster/nodes/node-1/drain", None, frozenset({CLUSTER_ADMIN}), "DrainNode", 200),
    ("POST", "/cluster/nodes/node-1/enable", None, frozenset({CLUSTER_ADMIN}), "EnableNode", 200),
    ("GET", "/queue", None, frozenset({VIEW}), "GetQueueStatus", 200),
    ("POST", "/evaluations", EVAL_BODY, frozenset({EVALUATE}), "SubmitEvaluation", 201),
    ("GET", "/evaluations", None, frozenset({VIEW, EVALUATE}), "ListEvaluations", 200),
    ("GET", "/evaluations/eval_1", None, frozenset({VIEW, EVALUATE}), "GetEvaluation", 200),
    ("POST", "/data/validate", DATA_BODY, frozenset({MANAGE}), "ValidateData", 200),
    ("GET", "/data/cache", None, frozenset({MANAGE}), "GetDataCache", 200),
]

# Callers: (token kwargs, permissions they hold)
CALLERS: dict[str, tuple[dict[str, str], frozenset[str]]] = {
    "view-scope": ({"role": "", "scope": VIEW}, frozenset({VIEW})),
    "manage-scope": ({"role": "", "scope": MANAGE}, frozenset({MANAGE})),
    "cluster-admin-scope": ({"role": "", "scope": CLUSTER_ADMIN}, frozenset({CLUSTER_ADMIN})),
    "evaluate-scope": ({"role": "", "scope": EVALUATE}, frozenset({EVALUATE})),
    "tenant_viewer": ({"role": "tenant_viewer"}, frozenset({VIEW})),
    "tenant_user": ({"role": "tenant_user"}, frozenset()),
    "tenant_admin": ({"role": "tenant_admin"}, frozenset({VIEW, MANAGE, CLUSTER_ADMIN, EVALUATE})),
}


@pytest.mark.parametrize(
    ("method", "path", "body", "accepted", "rpc", "ok"),
    ROUTES,
    ids=[f"{m} {p}" for m, p, *_ in ROUTES],
)
async def test_permission_matrix(
    gw: Gateway,
    method: str,
    path: str,
    body: Any,
    accepted: frozenset[str],
    rpc: str,
    ok: int,
) -> None:
    for name, (token_kwargs, held) in CALLERS.items():
        before = len(gw.coordinator.calls)
        r = await gw.http.request(
            method, f"{PREFIX}{path}", json=body, headers=auth(**token_kwargs)
        )
        if held & accepted:
            assert r.status_code == ok, (name, r.text)
            assert gw.rpcs()[before:] == [rpc], name
        else:
            assert r.status_code == 403, (name, r.text)
            error = r.json()["error"]
            assert error["code"] == "AUTHZ_PERMISSION_DENIED"
            assert all(p in error["message"] for p in accepted), error
            assert len(gw.coordinator.calls) == before, name
    r = await gw.http.request(method, f"{PREFIX}{path}", json=body)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "AUTH_TOKEN_MISSING"


async def test_evaluations_readable_with_evaluate_alone(gw: Gateway) -> None:
    headers = auth(role="", scope=EVALUATE)
    assert (await gw.http.get(f"{PREFIX}/evaluations", headers=headers)).status_code == 200
    assert (await gw.http.get(f"{PREFIX}/evaluations/e1", headers=headers)).status_code == 200
    # ... but evaluate alone does not open the job list or the cluster.
    assert (await gw.http.get(f"{PREFIX}/jobs", headers=headers)).status_code == 403
    assert (await gw.http.get(f"{PREFIX}/cluster", headers=headers)).status_code == 403


@pytest.mark.parametrize(
    ("method", "path", "body", "rpc"),
    [
        ("GET", "/queue?tenant_id=tenant-b", None, "GetQueueStatus"),
        ("GET", "/cluster/nodes?tenant_id=tenant-b", None, "ListNodes"),
        ("POST", "/cluster/nodes/n1/drain", None, "DrainNode"),
        ("GET", "/evaluations?tenant_id=tenant-b", None, "ListEvaluations"),
        ("POST", "/evaluations", EVAL_BODY, "SubmitEvaluation"),
        ("POST", "/data/validate", DATA_BODY, "ValidateData"),
        ("GET", "/data/cache?tenant_id=tenant-b", None, "GetDataCache"),
    ],
)
async def test_tenant_comes_from_the_token_only(
    gw: Gateway, method: str, path: str, body: Any, rpc: str
) -> None:
    headers = {**auth("tenant-a"), "X-Tenant-ID": "tenant-b", "X-User-ID": "someone-else"}
    r = await gw.http.request(method, f"{PREFIX}{path}", json=body, headers=headers)
    assert r.status_code in (200, 201), r.text
    md = gw.coordinator.last(rpc).metadata
    assert md["x-tenant-id"] == "tenant-a"
    assert md["x-user-id"] == "user-1"
