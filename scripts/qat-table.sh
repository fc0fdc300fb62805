#!/usr/bin/env bash
# Reproduces the README's QAT table on the default model: the first half of its held-out text (to a line start) is
# the training / calibration text, the second half the evaluation text. Round to nearest and GPTQ from
# `minnow quantize`, then `minnow qat` (200 steps of 8 x 128 tokens, lr 1e-4) with the plain next-token loss, with
# distillation from the float model, and with activations fake-quantized too; every file is scored by
# `minnow perplexity --kl-base` on the evaluation text. Files and JSON reports go to OUT (default out/qat).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$root/out/qat}"
mkdir -p "$out"
minnow() { dotnet run --project "$root/src/Minnow.Cli" -c Release --no-build -- "$@"; }
dotnet build "$root/src/Minnow.Cli" -c Release >/dev/null

model="$root/models/default"
python3 - "$model/held-out.txt" "$out" <<'PY'
import sys
text = open(sys.argv[1], encoding="utf-8").read()
cut = text.index("\n", len(text) // 2) + 1
open(sys.argv[2] + "/calib.txt", "w", encoding="utf-8").write(text[:cut])
open(sys.argv[2] + "/eval.txt", "w", encoding="utf-8").write(text[cut:])
PY

quantize() { local name="$1"; shift; echo "== $name" >&2; minnow quantize "$model" --calib "$out/calib.txt" --out "$out/$name.gguf" "$@" >/dev/null; }
qat() { local name="$1"; shift; echo "== $name" >&2
    minnow qat "$model" --data "$out/calib.txt" --held-out 0 --steps 200 --batch 8 --ctx 128 --lr 1e-4 --out "$out/$name.gguf" "$@" >/dev/null; }

quantize q4_0-rtn --scheme q4_0 --method rtn
quantize q4_0-gptq --scheme q4_0 --method gptq
quantize int4-g128-rtn --scheme int4 --group 128 --method rtn
quantize int4-g128-gptq --scheme int4 --group 128 --method gptq
quantize int3-g128-rtn --scheme int3 --group 128 --method rtn
quantize int3-g128-gptq --scheme int3 --group 128 --method gptq
qat qat-q4_0 --scheme q4_0
qat qat-q4_0-distill --scheme q4_0 --distill
qat qat-q4_0-distill-activations --scheme q4_0 --distill --activations
qat qat-int4-g128-distill-activations --scheme int4 --group 128 --distill --activations
qat qat-int3-g128-distill-activations --scheme int3 --group 128 --distill --activations

for name in q4_0-rtn q4_0-gptq int4-g128-rtn int4-g128-gptq qat-q4_0 qat-q4_0-distill qat-q4_0-distill-activations qat-int4-g128-distill-activations \
    int3-g128-rtn int3-g128-gptq qat-int3-g128-distill-activations; do
    minnow perplexity "$out/$name.gguf" --text "$out/eval.txt" --ctx 128 --kl-base "$model" --json > "$out/$name.json"
    echo "$name: $(cat "$out/$name.json")"
done

# stories260K: token ids sampled from its F32 self (its tokenizer is not available); Q8_0, the scheme whose loss on
# this model is over 0.5 %.
stories="${STORIES260K:-$root/../shared/reference/golden/stories260k-hf}"
if [ -d "$stories" ]; then
    "$root/scripts/sampled-ids.sh" "$stories" "$out"
    minnow quantize "$stories" --scheme q8_0 --method rtn --ids --calib "$out/stories-calib.txt" --eval "$out/stories-eval.txt" \
        --bos 1 --ctx 256 --calib-seq 128 --out "$out/stories-q8_0-rtn.gguf" >/dev/null
    minnow qat "$stories" --ids "$out/stories-calib.txt" --held-out 0 --steps 200 --batch 8 --ctx 256 --lr 1e-4 \
        --scheme q8_0 --distill --activations --out "$out/stories-qat-q8_0-distill-activations.gguf" >/dev/null
    for name in stories-q8_0-rtn stories-qat-q8_0-distill-activations; do
        minnow perplexity "$out/$name.gguf" --ids "$out/stories-eval.txt" --bos 1 --ctx 256 --kl-base "$stories" --json > "$out/$name.json"
        echo "$name: $(cat "$out/$name.json")"
    done
fi
