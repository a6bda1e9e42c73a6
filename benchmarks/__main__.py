"""``python -m benchmarks``: see :mod:`benchmarks.cli`.

Imports stay under the guard: the benchmark's client processes are spawned, and a spawned
process imports the main module again, which must not drag the whole service along.
"""

if __name__ == "__main__":
    import sys

    from benchmarks.cli import main

    sys.exit(main())
