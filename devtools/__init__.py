"""Tools for developing commons-users: what `make run` runs, and the local broker that it and the
tests start. Not part of the package."""
