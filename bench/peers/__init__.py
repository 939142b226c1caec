"""Peers the benchmarks compare the service with (README.md here); their own venv: .venv-peers."""
