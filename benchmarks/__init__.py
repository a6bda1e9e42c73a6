"""Benchmarks: ``python -m benchmarks`` (see :mod:`benchmarks.cli`) and single-purpose ones.

The suite runs every scenario of the "send as fast as the SMTP server accepts" issue on
PostgreSQL, Redis, real Celery workers and a counting SMTP sink (:mod:`benchmarks.sink`):
``env`` starts and stops that stack, ``population`` and ``content`` fill it, ``measure`` and
``procs`` time and meter it, ``scenarios/`` holds one module per scenario and ``report`` prints
the table. ``bench_*.py`` are separate, narrower benchmarks (DKIM, imports, rate limits).
"""
