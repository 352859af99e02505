#!/usr/bin/env bash
# One prepared check of the fused kernels on a GPU machine (issue 4). Run from anywhere:
#
#   bash bench/gpu_check.sh            # results also land in $OUT (or /tmp/panacea_gpu_check)
#
# 1. installs carried wheels from .whl/ (if any) into /tmp/site, with no index and no deps;
# 2. makes `panacea_patch` importable: `pip install -e . --no-deps`, else a symlink shim;
# 3. runs tests/test_kernels.py compiled (TRITON_INTERPRET=0) with PANACEA_KERNELS=triton;
# 4. runs bench/kernels_bench.py with the block sweep;
# 5. prints a summary against the targets: pgd_step_ and project_apply_ >= 80% of copy
#    bandwidth, the fused update >= 2x the eager sequence.
#
# Every step runs even if an earlier one failed; the exit status is non-zero if any did.
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
RESULTS=${OUT:-/tmp/panacea_gpu_check}
mkdir -p "$RESULTS"
status=0
log() { echo "[gpu_check] $*"; }

# --- 1. carried wheels ------------------------------------------------------------------------
if compgen -G ".whl/*.whl" >/dev/null; then
    log "installing carried wheels: $(ls .whl | tr '\n' ' ')"
    $PY -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl || status=1
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi

# --- 2. the package ---------------------------------------------------------------------------
if ! $PY -c "import panacea_patch.kernels" 2>/dev/null; then
    if ! $PY -m pip install -q --no-deps --no-build-isolation -e . 2>"$RESULTS/pip_install.log"; then
        # kernels/ and cli/ ship as panacea_patch.kernels / panacea_patch.cli (package-dir
        # mapping), so the repo root on PYTHONPATH is not enough: mirror the mapping in links.
        log "editable install failed (see pip_install.log); using a symlink shim"
        shim=/tmp/panacea_shim/panacea_patch
        rm -rf /tmp/panacea_shim && mkdir -p "$shim"
        for entry in panacea_patch/*; do ln -s "$PWD/$entry" "$shim/"; done
        ln -s "$PWD/kernels" "$shim/kernels"
        ln -s "$PWD/cli" "$shim/cli"
        export PYTHONPATH="/tmp/panacea_shim${PYTHONPATH:+:$PYTHONPATH}"
    fi
fi

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
$PY - <<'EOF' || status=1
import torch, triton
from panacea_patch.kernels import ops
print(f"torch {torch.__version__}  triton {triton.__version__}  cuda {torch.cuda.is_available()}")
print(f"dispatch picks: {ops.backend()}")
assert torch.cuda.is_available(), "no CUDA device visible to torch"
assert ops.backend() == "triton", "the dispatch does not pick Triton on this GPU"
EOF

# --- 3. kernel tests, compiled ----------------------------------------------------------------
# TRITON_INTERPRET=0 explicitly: the test files only set it when it is unset. --noconftest keeps
# the suite's shared fixtures (transformers, tokenizers) out of this check.
log "kernel tests (compiled Triton, PANACEA_KERNELS=triton)"
TRITON_INTERPRET=0 PANACEA_KERNELS=triton \
    timeout 420 $PY -m pytest tests/test_kernels.py -q -p no:cacheprovider --noconftest \
    2>&1 | tee "$RESULTS/pytest.log" | tail -25
test_rc=${PIPESTATUS[0]}
[ "$test_rc" -eq 0 ] || status=1

# --- 4. benchmark -----------------------------------------------------------------------------
log "benchmark"
TRITON_INTERPRET=0 timeout 420 $PY bench/kernels_bench.py --sweep --json "$RESULTS/bench.json" \
    2>&1 | tee "$RESULTS/bench.log"
bench_rc=${PIPESTATUS[0]}
[ "$bench_rc" -eq 0 ] || status=1

# --- 5. summary -------------------------------------------------------------------------------
log "summary"
echo "tests: $(grep -E '(passed|failed|error)' "$RESULTS/pytest.log" | tail -1) (exit $test_rc)"
[ -f "$RESULTS/bench.json" ] && $PY - "$RESULTS/bench.json" <<'EOF' || status=1
import json, sys

data = json.load(open(sys.argv[1]))
rows = [r for r in data["rows"] if r["impl"] == "fused"]
if not rows:
    sys.exit("no fused rows in the benchmark output")
n = max(r["n"] for r in rows)
at = {r["op"]: r for r in rows if r["n"] == n}
print(f"device {data['env']['device_name']}  backend {data['env']['backend']}  largest N {n:.3g}")
ok = True
for op in ("pgd_step_", "project_apply_"):
    frac = at[op]["vs_copy"]
    ok &= frac >= 0.8
    print(f"  {op:<16} {at[op]['gbps']:8.1f} GB/s = {frac:6.1%} of copy  (target >= 80%)")
upd = at["update (step+apply)"]["vs_eager"]
ok &= upd >= 2.0
print(f"  update           {upd:8.2f}x eager               (target >= 2x)")
sweep = [r for r in data["rows"] if r["impl"].startswith("triton block=")]
for op in ("pgd_step_", "project_apply_"):
    best = max((r for r in sweep if r["op"] == op), key=lambda r: r["gbps"], default=None)
    if best:
        print(f"  best {op:<16} {best['impl']}: {best['gbps']:.1f} GB/s")
print("targets:", "MET" if ok else "NOT MET")
EOF
log "results in $RESULTS; exit $status"
exit $status
