"""Errors a person can act on, through the real gateway and the reference coordinator."""

from __future__ import annotations

from .conftest import PREFIX, Stack


async def test_a_missing_dataset_names_the_field_and_the_users_own_path(two_slots: Stack) -> None:
    s = two_slots
    missing = s.root / "datasets" / "no-such-file.jsonl"
    body = s.body("missing", custom=False)
    body["data_config"]["sources"] = [{"path": str(s.corpus)}, {"path": str(missing)}]
    r = await s.http.post(f"{PREFIX}/jobs", json=body, headers=s.authorize("tenant-a"))
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "INVALID_ARGUMENT"
    [detail] = error["details"]
    assert detail["field"] == "data_config.sources[1].path"
    # Before: "the training coordinator rejected the request (INVALID_ARGUMENT)".
    assert str(missing) in detail["message"]
    assert error["message"] == f"{detail['field']}: {detail['message']}"
