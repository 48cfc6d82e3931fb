"""pytest plugin for mutation runs (pyproject [tool.mutmut]): every mutant sees the same
Hypothesis examples, and no example database carries a failure from one mutant to the next."""

from hypothesis import settings

settings.register_profile("mutation", derandomize=True, database=None)
settings.load_profile("mutation")
