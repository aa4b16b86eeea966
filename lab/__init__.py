"""Lab code, not installed with the package: random architectures for tests and benchmarks, benchmark internals,
and the bundled shapes models' world, training, evaluation, oracle and export. Run from a checkout
(`python -m lab.bench`, `python -m lab.shapes.train`, ...)."""
