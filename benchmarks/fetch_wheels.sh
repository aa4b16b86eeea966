#!/usr/bin/env bash
# Fill benchmarks/wheels/ (git-ignored) with what the GPU machine's image lacks for benchmarks/gpu.sh: diffusers
# and pydantic (with its own needs), for CPython 3.12 on x86-64 Linux, at the versions of this checkout's .venv.
# The image already has torch, transformers, tokenizers, huggingface-hub, safetensors, numpy, pillow, regex,
# requests, filelock, pyyaml, typer, rich (see /work/.library/device/KINDS.md); importlib_metadata is only
# needed by diffusers on Python < 3.8. typing-extensions is carried because pydantic needs >= 4.16.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV_PY="${VENV_PY:-.venv/bin/python}"
version() { "$VENV_PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
pins=()
for dist in diffusers pydantic pydantic-core annotated-types typing-inspection typing-extensions; do
  pins+=("$dist==$(version "$dist")")
done
rm -rf benchmarks/wheels
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d benchmarks/wheels "${pins[@]}"
ls -la benchmarks/wheels
