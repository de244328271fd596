"""What the processes share: names and rules both sides of a boundary must agree on.

Nothing here imports the gateway, the coordinator or the CLI.
"""
