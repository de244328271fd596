"""The executor's settings, a coordinator that cannot reach Ray, and databases of coordinators
from before the executor interface. No Ray head needed."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from scaimind.coordinator.config import RayConfig
from scaimind.coordinator.persistence import store as store_module
from scaimind.coordinator.persistence.store import Store
from scaimind.settings import SettingsError, load_settings
from tests.conftest import closed_port
from tests.e2e_jobs.conftest import clean_env


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"executor": "ray"}, "SCAIMIND_RAY_ADDRESS: required with SCAIMIND_EXECUTOR=ray"),
        ({"executor": "ray", "ray_address": "127.0.0.1:8265"}, "SCAIMIND_RAY_ADDRESS: not an"),
        ({"executor": "kubernetes"}, "SCAIMIND_EXECUTOR"),
        ({"shared_root": "relative/dir"}, "SCAIMIND_SHARED_ROOT"),
        ({"ray_python": "python3"}, "SCAIMIND_RAY_PYTHON"),
        ({"ray_pending_timeout_s": "-1"}, "SCAIMIND_RAY_PENDING_TIMEOUT_S"),
    ],
)
def test_bad_executor_settings_name_the_variable(
    tmp_path: Path, env: dict[str, str], named: str
) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(data_dir=tmp_path, **env)
    assert named in str(info.value)


def test_ray_settings_become_the_coordinators_configuration(tmp_path: Path) -> None:
    settings = load_settings(
        data_dir=tmp_path,
        executor="ray",
        ray_address="http://10.0.0.5:8265/",
        ray_auth_token="tok",
        ray_pending_timeout_s="30",
        shared_root=str(tmp_path / "nfs"),
    )
    config = settings.coordinator_config(data_dir=tmp_path / "c", api_secret="s")
    assert config.executor == "ray"
    assert config.ray == RayConfig(
        address="http://10.0.0.5:8265", auth_token="tok", pending_timeout_seconds=30
    )
    assert config.shared == tmp_path / "nfs"
    # The shared root is the service's like the data dir: no tenant may name it.
    assert tmp_path / "nfs" in config.service_dirs
    local = load_settings(data_dir=tmp_path).coordinator_config(data_dir=tmp_path, api_secret="s")
    assert (local.executor, local.ray, local.shared) == ("local", None, tmp_path)


def test_coordinator_without_its_ray_cluster_refuses_to_start(tmp_path: Path) -> None:
    address = f"http://127.0.0.1:{closed_port()}"
    result = subprocess.run(
        [sys.executable, "-m", "scaimind.cli", "coordinator", "--port", "0"],
        env=clean_env(
            SCAIMIND_DATA_DIR=str(tmp_path),
            SCAIMIND_API_SECRET="s",
            SCAIMIND_EXECUTOR="ray",
            SCAIMIND_RAY_ADDRESS=address,
        ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result
    assert f"cannot reach the Ray job server at {address}: no connection" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_inventory_file_with_the_ray_executor_is_a_usage_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "scaimind.cli", "coordinator", "--inventory", "nodes.json"],
        env=clean_env(
            SCAIMIND_DATA_DIR=str(tmp_path),
            SCAIMIND_API_SECRET="s",
            SCAIMIND_EXECUTOR="ray",
            SCAIMIND_RAY_ADDRESS="http://127.0.0.1:8265",
        ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result
    assert "reads its nodes from the Ray cluster" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_database_from_before_the_executors_keeps_its_running_process(tmp_path: Path) -> None:
    path = tmp_path / "coordinator.db"
    # The schema of the coordinator before the run columns, with a job that was running.
    schema = store_module._SCHEMA.replace("    run_id TEXT NOT NULL DEFAULT '',\n", "")
    schema = schema.replace("    run_delivered INTEGER NOT NULL DEFAULT 0,\n", "")
    assert "run_" not in schema
    old = sqlite3.connect(path)
    old.executescript(schema)
    columns = "job_id, tenant_id, name, status, request, priority, queue_name, pid, pid_start"
    old.execute(
        f"INSERT INTO jobs ({columns}, created_at, updated_at) "
        "VALUES ('job_1', 't', 'n', 5, x'', 5, 'q', 4242, '98765', 0, 0)"
    )
    old.execute(
        f"INSERT INTO jobs ({columns}, created_at, updated_at) "
        "VALUES ('job_2', 't', 'n', 7, x'', 5, 'q', 0, '', 0, 0)"
    )
    old.commit()
    old.close()
    store = Store(path)
    try:
        one, two = store.get_job("job_1"), store.get_job("job_2")
        assert one is not None
        assert two is not None
        # Found at recovery like any run of the local executor (and killed if still there).
        assert (one.run_id, one.run_delivered) == ("local:4242:98765", 0)
        assert two.run_id == ""
    finally:
        store.close()
    Store(path).close()  # a second start changes nothing
