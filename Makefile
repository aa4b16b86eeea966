# `make demo` and `make test` work on a fresh clone: the venv is made on first use (see DEVELOPERS.md).
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0
DEMO_RECIPES := $(wildcard recipes/shapes-*.yaml)

.PHONY: help dev demo test test-rest test-slow bench clean-outputs

help:
	@echo "make demo        edit the bundled shapes scenes into outputs/"
	@echo "make test        the default test suite (CPU only)"
	@echo "make test-rest   what make test leaves out: the family matrix on every family, lab tests, long checks"
	@echo "make test-slow   all of it, with many more property-test examples"
	@echo "make dev         only make $(VENV)"

# The stamp is remade when pyproject.toml changes (new dependencies).
$(VENV)/.stamp: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(VENV)/bin/pip install $(TORCH)
	$(VENV)/bin/pip install -e '.[test,ui]'
	touch $@

dev: $(VENV)/.stamp

# Runs on the bundled shapes model (p2p_cli/shapes/weights/) with the recipes/shapes-*.yaml recipes;
# both come from the shapes work and this target says so until they are there.
demo: $(VENV)/.stamp
	@if [ -z "$(DEMO_RECIPES)" ]; then \
		echo "make demo: no recipes/shapes-*.yaml yet (they come with the bundled shapes model)" >&2; exit 1; fi
	$(VENV)/bin/p2p edit $(DEMO_RECIPES) --overwrite

# pytest exits 5 when it collects no tests: that fails here too, with a word about it. Two pytest-xdist workers
# (one torch thread each, tests/conftest.py); TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2
XDIST = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadscope)
test: $(VENV)/.stamp
	@OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -m "not slow" $(XDIST) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; exit $$rc

# What `make test` leaves out (the tests marked slow, and the family matrix beyond its representative families:
# tests/conftest.py). CI runs make test, then this.
test-rest: $(VENV)/.stamp
	@OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -m slow $(XDIST) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test-rest: pytest collected no tests" >&2; fi; exit $$rc

# P2P_HYPOTHESIS_PROFILE=slow: the property-based tests draw 3000 examples each instead of 150.
test-slow: $(VENV)/.stamp
	@OMP_WAIT_POLICY=PASSIVE P2P_HYPOTHESIS_PROFILE=slow $(PY) -m pytest $(XDIST) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test-slow: pytest collected no tests" >&2; fi; exit $$rc

clean-outputs:
	find outputs -mindepth 1 -maxdepth 1 ! -name .gitkeep -exec rm -rf {} +

# Speed and memory against diffusers' own pipelines (lab/bench.py; benchmarks/README.md). BENCH_ARGS="--arch sd3".
bench: $(VENV)/.stamp
	OMP_WAIT_POLICY=PASSIVE $(PY) -m lab.bench $(BENCH_ARGS)
