#!/usr/bin/env bash
# One prepared check on a GPU machine (issues 4 and 12). Run from anywhere:
#
#   bash bench/gpu_check.sh              # results also land in $OUT (or /tmp/panacea_gpu_check)
#   bash bench/gpu_check.sh --cpu-smoke  # no GPU: the Python parts on the CPU with tiny shapes
#
# 1. installs carried wheels from .whl/ (if any) into /tmp/site, with no index and no deps;
# 2. makes `panacea_patch` importable: `pip install -e . --no-deps`, else a symlink shim;
# 3. runs tests/test_kernels.py compiled (TRITON_INTERPRET=0) with PANACEA_KERNELS=triton;
# 4. runs bench/kernels_bench.py with the block sweep;
# 5. runs bench/scale_check.py (issue 12): the random method's throughput against a plain copy
#    on a 1B-shaped bf16 Llama; a bf16 Panacea run (2 steps) on it with the GPU peak next to the
#    --dry-run estimate, and again with --offload-w0; a real device-map split (layers on cuda:0
#    and the CPU) checked against a single-device run;
# 6. prints a summary against the targets: pgd_step_ and project_apply_ >= 80% of copy
#    bandwidth, the fused update >= 2x the eager sequence; the scale checks' figures.
#
# Every step runs even if an earlier one failed; the exit status is non-zero if any did. The
# whole run stays under 8 minutes: each step gets at most its cap and what is left of the budget.
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
RESULTS=${OUT:-/tmp/panacea_gpu_check}
mkdir -p "$RESULTS"
status=0
SMOKE=0
[ "${1:-}" = "--cpu-smoke" ] && SMOKE=1
BUDGET=${GPU_CHECK_BUDGET_S:-470}
log() { echo "[gpu_check] $*"; }
# Seconds for the next step: its cap, or what is left of the budget (at least 10).
left() {
    local rest=$((BUDGET - SECONDS))
    if [ "$rest" -lt "$1" ]; then echo $((rest > 10 ? rest : 10)); else echo "$1"; fi
}

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

if [ "$SMOKE" -eq 1 ]; then
    log "--cpu-smoke: scale checks only, on the CPU with tiny shapes"
    rm -f "$RESULTS/scale.jsonl"
    timeout "$(left 400)" $PY bench/scale_check.py all --cpu-smoke --json "$RESULTS/scale.jsonl" \
        2>&1 | grep -v -e "^Loading weights" -e "^Writing model" | tee "$RESULTS/scale.log"
    rc=${PIPESTATUS[0]}
    [ -f "$RESULTS/scale.jsonl" ] && $PY bench/scale_check.py summary "$RESULTS/scale.jsonl"
    log "results in $RESULTS; exit $rc"
    exit "$rc"
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
    timeout "$(left 150)" $PY -m pytest tests/test_kernels.py -q -p no:cacheprovider --noconftest \
    2>&1 | tee "$RESULTS/pytest.log" | tail -25
test_rc=${PIPESTATUS[0]}
[ "$test_rc" -eq 0 ] || status=1

# --- 4. benchmark -----------------------------------------------------------------------------
log "benchmark"
TRITON_INTERPRET=0 timeout "$(left 90)" $PY bench/kernels_bench.py --sweep --json "$RESULTS/bench.json" \
    2>&1 | tee "$RESULTS/bench.log"
bench_rc=${PIPESTATUS[0]}
[ "$bench_rc" -eq 0 ] || status=1

# --- 5. scale checks (issue 12) --------------------------------------------------------------
log "scale checks: random throughput, bf16 Panacea step (+ --offload-w0), device-map split"
rm -f "$RESULTS/scale.jsonl"
TRITON_INTERPRET=0 timeout "$(left 210)" $PY bench/scale_check.py all --json "$RESULTS/scale.jsonl" \
    2>&1 | grep -v -e "^Loading weights" -e "^Writing model" | tee "$RESULTS/scale.log"
scale_rc=${PIPESTATUS[0]}
[ "$scale_rc" -eq 0 ] || status=1

# --- 6. summary -------------------------------------------------------------------------------
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
[ -f "$RESULTS/scale.jsonl" ] && $PY bench/scale_check.py summary "$RESULTS/scale.jsonl" || status=1
log "results in $RESULTS; exit $status"
exit $status
