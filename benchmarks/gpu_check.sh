#!/usr/bin/env bash
# The GPU check of issue 16: on a machine with one CUDA GPU and the engine's dependencies already installed
# (this script installs nothing), run every test that needs CUDA, then print the GPU-vs-CPU table of
# benchmarks/bench_gpu.py (format: benchmarks/README.md, "GPU check"). Extra arguments go to bench_gpu.py
# (e.g. --json gpu.json, --device cuda:1, --skip-sampler). Exits non-zero if a test or the benchmark failed.
#
#   bash benchmarks/gpu_check.sh [--json gpu.json]
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}"

if ! python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no CUDA device: torch sees no GPU on this machine; nothing was run" >&2
    exit 2
fi

echo "== tests that need CUDA (every gpu-marked test, and every test skipped without CUDA) =="
python -m pytest -p bench_gpu -m "gpu or not gpu" -q -rs tests   # slow ones too
tests=$?

echo
echo "== GPU vs CPU, same engine paths =="
python benchmarks/bench_gpu.py "$@"
bench=$?

if [ "$tests" -ne 0 ] || [ "$bench" -ne 0 ]; then
    echo "gpu_check: FAILED (tests exit $tests, benchmark exit $bench)" >&2
    exit 1
fi
echo "gpu_check: all CUDA tests passed; table above"
