"""`python -m scaimind.coordinator --data-dir DIR [--port P] [--inventory FILE]`.

The shared secret comes from SCAIMIND_API_SECRET.
"""

import sys

from scaimind.coordinator.server import _main

sys.exit(_main())
