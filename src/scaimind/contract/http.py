"""The module's HTTP surface as clients see it (the CLI, the console, hosts)."""

from typing import Final

# Where ScaiGrid mounts the module; the standalone gateway serves it at the same path.
API_PREFIX: Final = "/v1/modules/scaimind"
