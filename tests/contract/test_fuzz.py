"""Schemathesis against the app's own OpenAPI on a real `scaimind serve`, as a tenant admin.

Every operation, positive and negative data, with the checks not_a_server_error,
status_code_conformance, content_type_conformance and response_schema_conformance; then a
stateful run that follows the OpenAPI links from submit to get, pause, cancel, resume and retry.
Derandomized (a fixed seed per test, no example database), so a failure reproduces. The
longer run is bench/fuzz.py.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from scaimind.gateway.app import create_app
from scaimind.settings import Settings

from .conftest import Served
from .steering import steer_submit

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Per operation and generation mode; bench/fuzz.py runs many more.
EXAMPLES = int(os.environ.get("SCAIMIND_FUZZ_EXAMPLES", "15"))


def own_openapi() -> dict[str, Any]:
    """The app's OpenAPI, built in-process (no resources: create_app opens nothing).

    Built at collection time because the operations become test parameters before any server
    runs (schemathesis' fixture-based loading does not work with this pytest); the first test
    checks that the served document is this one.
    """
    with tempfile.TemporaryDirectory() as tmp:
        spec: dict[str, Any] = create_app(Settings(data_dir=Path(tmp))).openapi()
    return spec


SPEC = own_openapi()
schema = schemathesis.openapi.from_dict(SPEC)
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
    max_examples=EXAMPLES,
    # The bearer header is ours (a tenant admin's), not generated.
    with_security_parameters=False,
)


def test_the_served_openapi_is_the_one_fuzzed(served: Served) -> None:
    assert httpx.get(f"{served.url}/openapi.json", timeout=10).json() == SPEC


@schema.parametrize()
@hypothesis.settings(deadline=None, derandomize=True, database=None, max_examples=EXAMPLES)
def test_every_operation(case: Any, served: Served) -> None:
    case.call_and_validate(base_url=served.url, headers=served.headers, checks=CHECKS, timeout=30)


def test_stateful_submit_then_get_pause_cancel_retry(served: Served) -> None:
    seen: Counter[tuple[str, int]] = Counter()
    # The job operations only, with valid data: the flows are the point here (negative data
    # for every operation is the stateless test's).
    jobs = schemathesis.openapi.from_dict(SPEC).include(path_regex=r"/jobs")
    jobs.config.update(base_url=served.url)
    jobs.config.generation.update(modes=[GenerationMode.POSITIVE], with_security_parameters=False)
    base = jobs.as_state_machine()

    class Jobs(base):  # type: ignore[misc, valid-type]
        def before_call(self, case: Any) -> None:
            if case.method == "POST" and case.path.endswith("/jobs"):
                steer_submit(case.body, str(served.corpus))

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"headers": served.headers, "timeout": 30}

        def after_call(self, response: Any, case: Any) -> None:
            super().after_call(response, case)
            seen[
                (
                    f"{case.method} {case.path.removeprefix('/v1/modules/scaimind')}",
                    response.status_code,
                )
            ] += 1

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            case.validate_response(response, checks=CHECKS, transport_kwargs=kwargs or None)

    Jobs.run(
        settings=hypothesis.settings(
            deadline=None,
            derandomize=True,
            database=None,
            max_examples=EXAMPLES,
            stateful_step_count=6,
            suppress_health_check=list(hypothesis.HealthCheck),
        )
    )
    # The links were followed with real jobs, not only 404s for made-up ids.
    assert seen[("POST /jobs", 201)] > 0, seen
    assert seen[("GET /jobs/{job_id}", 200)] > 0, seen
    followed = {op for (op, status) in seen if status < 300 and "{job_id}/" in op}
    assert followed & {"POST /jobs/{job_id}/cancel", "POST /jobs/{job_id}/pause"}, seen


def test_the_server_logged_no_unhandled_error(served: Served) -> None:
    # Runs after the fuzzing above (tests run in file order): nothing reached the catch-all.
    log = served.log.read_text()
    assert "unhandled error" not in log
    assert "Traceback" not in log
