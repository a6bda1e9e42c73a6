"""Hostile input: header injection, CVE-2023-27043 addresses, API fuzzing, parser fuzzing, XSS.

CI runs the quick mode; ``MAILER_TEST_FULL=1 .venv/bin/pytest tests/hostile`` runs the full one,
and ``python -m benchmarks.reliability_hostile [--full]`` prints the counts as a table.
"""
