#!/usr/bin/env bash
# The GPU measurements of docs/gpu.md as one sequence that shares one llama.cpp build: install
# from a packed source, write the synthetic models, calibrate on this machine, run the three
# experiments, bundle the results. Every step logs to WORK/logs/<step>.log; a failed step is
# recorded and the sequence goes on with the steps that do not need it.
#
#   benchmarks/gpu/pipeline.sh SOURCE.tar.xz WORK [--small]
#
# SOURCE.tar.xz: `servelab engines pack llamacpp --out SOURCE.tar.xz` (made on a connected
# machine). WORK: a folder outside the repository with room for the models (about 45 GB at full
# size). --small: the same sequence with 2-layer targets on a CPU, to rehearse it in minutes.
# `servelab` must be importable (pip install, or PYTHONPATH=src with its dependencies).
#
# Environment (all optional):
#   PARTS=dense|moe|all       which model's steps to run (default all; a device call has 10
#                             minutes, and one part with its install fits in one)
#   PROMPT_TOKENS, SERVER_TOKENS
#                             the llama-server timing's request lengths for calibrate
#                             (--prompt-tokens, --server-tokens): the experiments' own
#                             (structured workload: 419 tokens in on average, 256 out)
#   DENSE_VARIANTS=none       time the dense target alone, with the bandwidth of a profile
#                             already in the cache (SEED_PROFILE) instead of two variants
#   SEED_PROFILE=FILE         a profile of this machine and build to start from (filed in the
#                             cache as calibrate would file it, before the first calibration)
#   SKIP_KV=1                 no KV-type experiment
set -uo pipefail
SOURCE=$(realpath "$1"); WORK=$2; SMALL=${3:-}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$WORK/logs" "$WORK/synth" "$WORK/runs"
WORK=$(realpath "$WORK")
cd "$WORK" || exit 1
SL=(python3 -m servelab)
STATUS="$WORK/logs/status.txt"

step() {  # step NAME CMD...: run, log, record rc and seconds
    local name=$1; shift
    local t0=$SECONDS
    echo "[$(date -u +%T)] start $name: $*" | tee -a "$STATUS"
    "$@" >"$WORK/logs/$name.log" 2>&1
    local rc=$?
    echo "[$(date -u +%T)] end $name rc=$rc $((SECONDS - t0))s" | tee -a "$STATUS"
    return $rc
}

SPECS="$REPO/examples/gpu"
if [ "$SMALL" = "--small" ]; then  # a rehearsal: 2-layer targets, 2 blocks of 1 short request
    DENSE_LAYERS=(--layers 2); MOE_LAYERS=(--layers 2); BACKEND=(); VARIANTS=Q8_0; KMAX=4
    SPECS="$WORK/specs"; mkdir -p "$SPECS"
    for f in "$REPO"/examples/gpu/*.yaml; do
        sed -e 's/^blocks: .*/blocks: 2/; s/^requests_per_block: .*/requests_per_block: 1/' \
            -e 's/max_tokens: .*/max_tokens: 8/; s/ctx_per_slot: .*/ctx_per_slot: 2048/' \
            "$f" >"$SPECS/$(basename "$f")"
    done
else
    DENSE_LAYERS=(); MOE_LAYERS=(); BACKEND=(--cuda); VARIANTS=Q8_0,F16; KMAX=16
fi

PARTS=${PARTS:-all}
SERVER_LENGTHS=()
[ -n "${PROMPT_TOKENS:-}" ] && SERVER_LENGTHS+=(--prompt-tokens "$PROMPT_TOKENS")
[ -n "${SERVER_TOKENS:-}" ] && SERVER_LENGTHS+=(--server-tokens "$SERVER_TOKENS")
[ -n "${DENSE_VARIANTS:-}" ] && VARIANTS=$DENSE_VARIANTS
if [ -n "${SEED_PROFILE:-}" ]; then
    PROFILES="${SERVELAB_CACHE_DIR:-$HOME/.cache/servelab}/profiles"
    SEED_AS=$(python3 -c 'import json, sys
from servelab.runner.calibrate import profile_path
d = json.load(open(sys.argv[1]))
print(profile_path(d["hardware"], d["engine"]))' "$SEED_PROFILE") || exit 1
    mkdir -p "$PROFILES" && cp "$SEED_PROFILE" "$SEED_AS" || exit 1
fi

{ nvidia-smi 2>&1 || true; nproc; free -g; df -h "$WORK"; python3 --version; } >"$WORK/logs/machine.log" 2>&1
step install "${SL[@]}" engines install llamacpp "${BACKEND[@]}" --source "$SOURCE" \
    || { echo "no engine: stopping" | tee -a "$STATUS"; exit 1; }
"${SL[@]}" engines list >"$WORK/logs/engines.log" 2>&1

if [ "$PARTS" != moe ]; then
    # dense: the 8B-shaped target and its drafter, calibration, the spec-decode and KV runs
    step synth-dense "${SL[@]}" models synth --like llama3-8b --out synth/llama3-8b.gguf "${DENSE_LAYERS[@]}" --force
    step synth-dense-draft "${SL[@]}" models synth --like llama3-draft --out synth/llama3-draft.gguf --force
    step calibrate-dense "${SL[@]}" calibrate synth/llama3-8b.gguf --draft synth/llama3-draft.gguf \
        --variants "$VARIANTS" --k-max "$KMAX" "${SERVER_LENGTHS[@]}" --json
    step run-spec-dense "${SL[@]}" run "$SPECS/spec-dense.yaml" --out runs/spec-dense --force --quiet
fi

if [ "$PARTS" != dense ]; then
    # MoE: the 30B-A3B-shaped target and its drafter (its bandwidth: the profile's)
    step synth-moe "${SL[@]}" models synth --like qwen3-30b-a3b --out synth/qwen3-30b-a3b.gguf "${MOE_LAYERS[@]}" --force
    step synth-moe-draft "${SL[@]}" models synth --like qwen3-draft --out synth/qwen3-draft.gguf --force
    step calibrate-moe "${SL[@]}" calibrate synth/qwen3-30b-a3b.gguf --draft synth/qwen3-draft.gguf \
        --variants none --k-max "$KMAX" "${SERVER_LENGTHS[@]}" --json
    step run-spec-moe "${SL[@]}" run "$SPECS/spec-moe.yaml" --out runs/spec-moe --force --quiet
fi

if [ -z "${SKIP_KV:-}" ] && [ "$PARTS" != moe ]; then
    step run-kv-dense "${SL[@]}" run "$SPECS/kv-dense.yaml" --out runs/kv-dense --force --quiet
fi

[ "$PARTS" != moe ] && step predict-dense "${SL[@]}" predict synth/llama3-8b.gguf --flags "-c 4096 -np 1" --profile auto --json
[ "$PARTS" != dense ] && step predict-moe "${SL[@]}" predict synth/qwen3-30b-a3b.gguf --flags "-c 4096 -np 1" --profile auto --json
cp -r "${SERVELAB_CACHE_DIR:-$HOME/.cache/servelab}/profiles" "$WORK/profiles" 2>/dev/null
echo "[$(date -u +%T)] done" | tee -a "$STATUS"
touch "$WORK/DONE"
