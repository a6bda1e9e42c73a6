"""The scenarios of ``python -m benchmarks``: each returns rows for the table."""
