"""Generated from protos/scaimind/v1 by scripts/gen_protos.py. Do not edit."""
