"""samaudio benchmarks: speed, memory and overhead, measured side by side in one run (`python -m bench`).

One module per measurement (`dit`, `memory`, `transport`, `overhead`, `rtf`), shared helpers in `common`,
benchmark servers in child processes in `serve`, the machine description in `machine`. Figures are never
asserted in tests; `tests/test_bench.py` only checks that each measurement still runs and reports its keys.
"""
