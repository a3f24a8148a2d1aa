#!/usr/bin/env bash
# The client's GPU figures (docs/client-accuracy.md): build llama.cpp for CUDA, write a small
# synthetic llama, start llama-server with 64 slots, then measure servelab's client against it:
#   single stream: client decode rate / engine's own (timings.predicted_per_second), per request
#   64 streams: client CPU per token (getrusage), and the same for a minimal aiohttp client and
#   for the previous reader (servelab as committed before issue 13, in $BUNDLE/old/src).
# Runs from the repo root on a bare machine with no network. $BUNDLE holds what it needs:
#   whl/ (cp312 wheels), llama.cpp.tar.gz (packed source), m/ggml-vocab-llama-bpe.gguf, old/src.
# Results: $OUT/results.json (one object per measurement), $OUT/build.log, $OUT/server.log.
# Making the bundle here (build/ is git-ignored; name build/gpu13 in the device call's carry):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux2014_x86_64 -d build/gpu13/whl pydantic pydantic-core annotated-types \
#     typing-inspection typing-extensions jsonschema jsonschema-specifications referencing rpds-py \
#     gguf opencc typer==0.29.2
#   tar -xzf ~/.cache/servelab/downloads/llama_cpp_python-0.3.36.tar.gz; cd .../vendor;
#   tar --exclude=llama.cpp/{docs,tests,examples,benches,media,gguf-py,pocs,tools/server/tests} \
#     --exclude='llama.cpp/ggml/src/ggml-<every backend but cpu and cuda>' \
#     --exclude='llama.cpp/models/*' -czf build/gpu13/llama.cpp.tar.gz llama.cpp   (8 MB)
#   cp llama.cpp/models/ggml-vocab-llama-bpe.gguf build/gpu13/m/
#   git archive <commit before issue 13> src/servelab | tar -x -C build/gpu13/old
set -uo pipefail
BUNDLE=${BUNDLE:-build/gpu13}
OUT=${OUT:-/tmp/out}
RES=/tmp/gpu-client-results
mkdir -p "$OUT" "$RES"
PY=${PY:-python3}  # a dry run here: PY=.venv/bin/python LLAMA_SERVER=... MODEL=... N=16
[ -n "${LLAMA_SERVER:-}" ] || python3 -m pip install -q --no-index --no-deps --no-compile \
  --no-cache-dir --upgrade --target /tmp/site "$BUNDLE"/whl/*.whl || exit 1
NEW="/tmp/site:$PWD/src"
OLD="/tmp/site:$PWD/$BUNDLE/old/src"
export NCCL_NVLS_ENABLE=0 PYTHONUNBUFFERED=1

t0=$(date +%s)
SERVER=${LLAMA_SERVER:-/tmp/llama/llama.cpp/build/bin/llama-server}  # given: no build (a dry run)
MODEL=${MODEL:-/tmp/syn.gguf}
N=${N:-1}  # scales the request counts down for a dry run (N=4: a quarter)
if [ -z "${LLAMA_SERVER:-}" ]; then
mkdir -p /tmp/llama && tar -xzf "$BUNDLE/llama.cpp.tar.gz" -C /tmp/llama
(cd /tmp/llama/llama.cpp && cmake -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
  -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
  -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_NUMBER=0 -DLLAMA_BUILD_COMMIT=0c1e57098 \
  -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a \
  && cmake --build build -j"$(nproc)" --target llama-server) > "$OUT/build.log" 2>&1 || exit 2
echo "build: $(( $(date +%s) - t0 )) s"
fi
[ -f "$MODEL" ] || PYTHONPATH=$NEW $PY benchmarks/synthetic_gguf.py \
  "$BUNDLE/m/ggml-vocab-llama-bpe.gguf" "$MODEL"

"$SERVER" -m "$MODEL" -ngl 99 -np 64 -c 49152 --host 127.0.0.1 --port 8091 \
  > "$OUT/server.log" 2>&1 &
SERVER_PID=$!
trap 'kill $SERVER_PID' EXIT
$PY - <<'EOF'
import time, urllib.request
for _ in range(240):
    try:
        urllib.request.urlopen("http://127.0.0.1:8091/health", timeout=2)
        break
    except OSError:
        time.sleep(0.5)
EOF
URL=http://127.0.0.1:8091/v1/chat/completions
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > "$RES/gpu.txt" 2>&1
nproc > "$RES/nproc.txt"

merge() {  # every result so far into $OUT/results.json (kept if a later step runs out of time)
$PY - "$RES" "$OUT/results.json" <<'EOF'
import json, pathlib, sys
res = pathlib.Path(sys.argv[1])
out = {p.stem: json.loads(p.read_text() or "null") for p in sorted(res.glob("*.json"))
       if p.stat().st_size}
for name in ("gpu", "nproc"):
    out[name] = (res / f"{name}.txt").read_text().strip()
pathlib.Path(sys.argv[2]).write_text(json.dumps(out, indent=2))
EOF
}
measure() {  # name pythonpath args... (--url "$URL" is added unless the args say --mock)
  local name=$1 path=$2 target=(--url "$URL")
  shift 2
  if [ "${1:-}" = --mock ]; then target=(); shift; fi
  echo "== $name"
  PYTHONPATH=$path timeout 120 $PY benchmarks/client_overhead.py load "${target[@]}" "$@" \
    > "$RES/$name.json" 2> "$RES/$name.err" || echo "$name failed: $(tail -3 "$RES/$name.err")"
  grep -E '"(cpu_ms_per_token|client_over_engine_decode_median|client_decode_tps_median)"' "$RES/$name.json"
  merge
}
PYTHONPATH=$NEW $PY benchmarks/client_overhead.py load --url "$URL" --streams 4 --requests 8 \
  --max-tokens 64 > /dev/null 2>&1  # warm-up
measure single_fresh "$NEW" --streams 1 --requests $((30 / N)) --max-tokens $((512 / N))
measure single_keepalive "$NEW" --streams 1 --requests $((30 / N)) --max-tokens $((512 / N)) --keepalive
measure c64_fresh "$NEW" --streams 64 --requests $((128 / N)) --max-tokens $((256 / N))
measure c64_keepalive "$NEW" --streams 64 --requests $((128 / N)) --max-tokens $((256 / N)) --keepalive
measure c64_aiohttp "$NEW" --streams 64 --requests $((128 / N)) --max-tokens $((256 / N)) --reader aiohttp
measure c64_old_fresh "$OLD" --streams 64 --requests $((128 / N)) --max-tokens $((256 / N))
measure c64_old_keepalive "$OLD" --streams 64 --requests $((128 / N)) --max-tokens $((256 / N)) --keepalive
measure c1000_mock "$NEW" --mock --streams 1000 --requests 1000 --max-tokens 64 --rate 10
measure single_old_fresh "$OLD" --streams 1 --requests $((30 / N)) --max-tokens $((512 / N))
echo "total: $(( $(date +%s) - t0 )) s"
