"""bench/overhead.py starts (its help says how to get wrk) and reads wrk's report right.

The bench itself is not run here (it needs wrk and a quiet machine); its output parser is.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "overhead.py"

WRK_OUTPUT = """Running 5s test @ http://127.0.0.1:8080/v1/modules/scaimind/jobs/job_1/cancel
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    24.35ms   10.02ms  68.30ms   70.00%
    Req/Sec     1.23k   100.00     1.40k    70.00%
  Latency Distribution
     50%  950.00us
     75%   30.00ms
     90%   40.00ms
     99%    1.20s
  6120 requests in 5.00s, 2.00MB read
  Non-2xx or 3xx responses: 6118
Requests/sec:   1224.00
Transfer/sec:    400.00KB
"""


def _bench() -> ModuleType:
    # As `python bench/overhead.py` runs it: its folder (bench/servers.py) is on the path.
    if str(BENCH.parent) not in sys.path:
        sys.path.insert(0, str(BENCH.parent))
    spec = importlib.util.spec_from_file_location("bench_overhead", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Dataclasses look their module up while the class is made.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_help_names_wrk_and_the_options() -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH), "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    for word in ("wrk", "--profile", "--workers", "--concurrency", "apt-get install wrk"):
        assert word in result.stdout, word


def test_wrk_report_is_parsed_with_units_and_unexpected_answers() -> None:
    bench = _bench()
    figures = bench.parse_wrk(WRK_OUTPUT, expect_non_2xx=True)
    assert figures.p50 == pytest.approx(0.95)  # µs → ms
    assert figures.p99 == 1200.0  # s → ms
    assert figures.rps == 1224.0
    assert figures.requests == 6120
    # Every answer should have been the 409: two were not.
    assert figures.unexpected == 2
    assert bench.parse_wrk(WRK_OUTPUT, expect_non_2xx=False).unexpected == 6118
