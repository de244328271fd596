"""`python -m scaimind.coordinator --data-dir DIR [--port P] [--inventory FILE]`.

The shared secret comes from SCAIMIND_API_SECRET.
"""

import os
import sys

# Job processes never use gRPC: no fork handlers (and no "skipping fork() handlers" log line).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

from scaimind.coordinator.server import _main

sys.exit(_main())
