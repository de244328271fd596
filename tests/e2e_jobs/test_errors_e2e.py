"""Errors a person can act on, through the real gateway and the reference coordinator."""

from __future__ import annotations

import base64
import json

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


async def test_any_page_token_is_a_400_naming_it(two_slots: Stack) -> None:
    s = two_slots
    # A token that decodes to a JSON object where a column value belongs was a 500.
    token = base64.urlsafe_b64encode(
        json.dumps({"o": "created_at desc", "v": {"a": 1}, "id": "x"}).encode()
    ).decode()
    for page_token in (token.rstrip("="), "not-a-token", "e30"):
        r = await s.http.get(
            f"{PREFIX}/jobs", params={"page_token": page_token}, headers=s.authorize("tenant-a")
        )
        assert r.status_code == 400, r.text
        assert r.json()["error"]["details"] == [{"field": "page_token", "message": "invalid"}]
