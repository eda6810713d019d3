#!/usr/bin/env bash
# The GPU benchmark in one command, for a single-GPU machine with PyTorch and no network.
#
#   bash benchmarks/gpu.sh [OUT_DIR] [gpu.py options...]
#
# 1. If benchmarks/wheels/ exists, installs every wheel in it offline (pip --no-index), e.g.
#    transformers, tokenizers, gymnasium, trl, vllm and their dependencies fetched beforehand
#    with `pip download -d benchmarks/wheels ...` on a machine with network.
# 2. Runs benchmarks/gpu.py (random-init Qwen2.5-0.5B configuration, bf16): OPD steps/s ours
#    vs TRL, rollout tokens/s of our HF and vLLM backends vs transformers' generate, peak GPU
#    memory; writes OUT_DIR/report.md and OUT_DIR/records.jsonl. Missing TRL or vLLM: those
#    contenders are skipped with the reason. The whole run is capped at 10 minutes.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
out="${1:-$root/bench-gpu}"
[ $# -gt 0 ] && shift
py="${PYTHON:-python3}"

if ! "$py" -c "import torch" 2>/dev/null; then
    echo "gpu.sh: $py cannot import torch; set PYTHON to the interpreter that has PyTorch" >&2
    exit 2
fi

shopt -s nullglob
wheels=("$here"/wheels/*.whl)
if [ ${#wheels[@]} -gt 0 ]; then
    echo "gpu.sh: installing ${#wheels[@]} wheel(s) from $here/wheels (offline)" >&2
    # Packages already present at a satisfying version are kept (torch in particular).
    "$py" -m pip install --no-index --find-links "$here/wheels" "${wheels[@]}" \
        || echo "gpu.sh: some wheels did not install; the contenders needing them will be skipped" >&2
fi

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export OPD_CACHE_DIR="${OPD_CACHE_DIR:-$out/cache}"
export TRL_EXPERIMENTAL_SILENCE=1
mkdir -p "$out"
cd "$root"
"$py" -c "import torch; print('gpu.sh: torch', torch.__version__, 'cuda', torch.cuda.is_available())" >&2
# The script stops adding rounds after --budget-s (540 s); `timeout` is the hard cap.
exec timeout --kill-after=10 600 "$py" "$here/gpu.py" --out "$out" "$@"
