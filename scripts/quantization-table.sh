#!/usr/bin/env bash
# Reproduces the README's quantization tables: every scheme of `minnow quantize` and llama.cpp's own quantizer
# (through LLamaSharp) on the default model (calibrated on the first 32K tokens of its held-out text, evaluated on
# the rest) and on stories260K (token ids sampled from its F32 self). One JSON report per run in OUT (default
# out/quantization). ONLY=REGEX runs only the schemes matching it (e.g. ONLY=int3).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$root/out/quantization}"
mkdir -p "$out"
minnow() { dotnet run --project "$root/src/Minnow.Cli" -c Release --no-build -- "$@"; }
dotnet build "$root/src/Minnow.Cli" -c Release >/dev/null

default="$root/models/default"
run() { # name model args...
    local name="$1"; shift
    echo "== $name" >&2
    minnow quantize "$@" --out "$out/$name.gguf" --json > "$out/$name.json" || { echo "$name failed" >&2; rm -f "$out/$name.json"; }
}
schemes=("q8_0 rtn" "q4_0 rtn" "q4_0 gptq" "q4_0 awq" "mixed gptq" "int4 rtn 32" "int4 gptq 32" "int4 rtn 128" "int4 gptq 128"
    "int3 rtn 32" "int3 gptq 32" "int3 rtn 64" "int3 gptq 64" "int3 rtn 128" "int3 gptq 128" "int3 awq 128"
    "q8_0 llamacpp" "q4_0 llamacpp" "q4_k_m llamacpp")
if [ -n "${ONLY:-}" ]; then
    selected=()
    for spec in "${schemes[@]}"; do [[ "$spec" =~ $ONLY ]] && selected+=("$spec"); done
    schemes=("${selected[@]}")
fi
for spec in "${schemes[@]}"; do
    set -- $spec
    run "default-$1${3:+-g$3}-$2" "$default" --scheme "$1" --method "$2" ${3:+--group "$3"}
done

# stories260K: no tokenizer here, so calibration and evaluation are token ids sampled from the model itself.
stories="${STORIES260K:-$root/../shared/reference/golden/stories260k-hf}"
if [ -d "$stories" ]; then
    "$root/scripts/sampled-ids.sh" "$stories" "$out"
    for spec in "${schemes[@]}"; do
        set -- $spec
        run "stories-$1${3:+-g$3}-$2" "$stories" --scheme "$1" --method "$2" ${3:+--group "$3"} --ids --calib "$out/stories-calib.txt" --eval "$out/stories-eval.txt" \
            --bos 1 --ctx 256 --calib-seq 128
    done
fi
