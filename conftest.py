"""Settings for the whole suite (``tests/`` and ``contract_tests/``), loaded first."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """In a pytest-xdist worker, leave coverage to the collector pytest-cov starts next.

    By now a worker has up to two coverage collectors running, stacked: the one
    ``[tool.coverage.run] patch = ["subprocess"]`` started with the interpreter (a worker
    is a subprocess of a measured run), and one pytest-cov starts while loading (it
    takes the worker for the controller, from the ``-n`` it was given). pytest-cov then
    starts the worker's own on top at session start, and when it pauses that one for a
    ``no_cover`` test, coverage resumes the one below: the fuzzers, the soak and
    schemathesis were traced after all, at 2-3x their CPU. Each is stopped here and
    its data so far (the conftest imports) saved, to be combined into the report.
    """
    if not hasattr(config, "workerinput"):
        return
    try:
        import coverage
    except ImportError:  # pragma: no cover - coverage comes with pytest-cov
        return
    while (running := coverage.Coverage.current()) is not None:
        running.stop()
        running.save()
