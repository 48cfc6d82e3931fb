"""Shared test support: simulators, stubs, harnesses and the one poll helper (waiting.wait_for).

Import as `from tests.support.<module> import ...`; pyproject's pytest pythonpath (the repo root)
makes the package importable from every tier, the e2e tests and the benchmarks alike.
"""
