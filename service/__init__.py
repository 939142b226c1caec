"""The HTTP API, and `commons-users`, the command every role runs (cli.py)."""
