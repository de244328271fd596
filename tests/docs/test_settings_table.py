"""The README's Configuration table names every setting, and nothing that is not one."""

from __future__ import annotations

import re

from scaimind.settings import ENV_PREFIX, Settings
from tests.docs import readme


def _table_names() -> set[str]:
    """The variables named in the first column of the Configuration table."""
    lines = [line for line in readme.section("Configuration").splitlines() if line.startswith("|")]
    names: set[str] = set()
    for line in lines[2:]:  # the header and its rule
        first = line.split(" | ")[0]
        names.update(re.findall(r"`([A-Z][A-Z0-9_]*)`", first))
    return names


def test_every_setting_is_in_the_configuration_table() -> None:
    fields = {name.upper() for name in Settings.model_fields}
    names = _table_names()
    assert sorted(fields - names) == [], "settings missing from the README's table"
    assert sorted(names - fields) == [], "README rows that are not settings"


def test_the_table_uses_the_prefix_the_settings_read() -> None:
    section = readme.section("Configuration")
    assert f"prefix `{ENV_PREFIX}`" in section
