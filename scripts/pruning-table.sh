#!/usr/bin/env bash
# Reproduces the README's pruning tables. Default model: every `minnow prune` method, calibrated on the first half of
# its held-out text and evaluated on the second half; each pruned model then quantized (INT4 groups of 128, GPTQ)
# and, separately, fine-tuned to recover (LoRA on every linear layer, 200 steps on the default model's own training
# text, the King James Version from Debian's bible-kjv, without the held-out part). stories260K: the same methods
# on token ids sampled from its F32 self. One JSON report per run in OUT (default out/pruning).
#
#   scripts/pruning-table.sh [OUT]      (NO_SPEED=1 skips the speed measurement of each prune)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$root/out/pruning}"
mkdir -p "$out"
minnow() { dotnet run --project "$root/src/Minnow.Cli" -c Release --no-build -- "$@"; }
dotnet build "$root/src/Minnow.Cli" -c Release >/dev/null
speed=()
if [ -n "${NO_SPEED:-}" ]; then speed=(--no-speed); fi

default="$root/models/default"
lines=$(wc -l < "$default/held-out.txt")
head -n "$((lines / 2))" "$default/held-out.txt" > "$out/calib.txt"
tail -n "+$((lines / 2 + 1))" "$default/held-out.txt" > "$out/eval.txt"

# The recovery text: the default model's training text, up to where its held-out part begins.
if ! command -v bible >/dev/null 2>&1; then
    echo "installing Debian's bible-kjv (the default model's training text)..." >&2
    apt-get install -y bible-kjv bible-kjv-text >&2
fi
bible -f "Gen1:1-Rev22:21" | sed -E 's/^[0-9]?[A-Za-z]+[0-9]+:[0-9]+ //' > "$out/kjv.txt"
start=$(grep -n -F -x -m1 "$(head -n1 "$default/held-out.txt")" "$out/kjv.txt" | cut -d: -f1)
head -n "$((start - 1))" "$out/kjv.txt" > "$out/recovery.txt"

methods=("magnitude-50:--method magnitude --sparsity 0.5" "wanda-50:--method wanda --sparsity 0.5" "2-4:--method 2:4"
    "structured-30:--method heads --keep-heads 0.7 --keep-ffn 0.7")
quantize() { # name model
    minnow quantize "$2" --scheme int4 --group 128 --method gptq --calib "$out/calib.txt" --eval "$out/eval.txt" --ctx 128 \
        --out "$out/$1-int4.gguf" --json > "$out/$1-int4.json"
}
recover() { # name model
    minnow finetune "$2" --data "$out/recovery.txt" --out "$out/$1-lora" --targets q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj \
        --steps 200 --held-out 0.02 --json > "$out/$1-lora.json"
    minnow perplexity "$2" --adapter "$out/$1-lora" --text "$out/eval.txt" --ctx 128 --json > "$out/$1-recovered.json"
}

echo "== default model, unpruned" >&2
minnow perplexity "$default" --text "$out/eval.txt" --ctx 128 --json > "$out/default-none.json"
quantize default-none "$default"
recover default-none "$default"
for spec in "${methods[@]}"; do
    name="${spec%%:*}"
    echo "== default model, $name" >&2
    # shellcheck disable=SC2086
    minnow prune "$default" --out "$out/default-$name" ${spec#*:} --calib "$out/calib.txt" --eval "$out/eval.txt" --ctx 128 \
        "${speed[@]}" --json > "$out/default-$name.json"
    quantize "default-$name" "$out/default-$name"
    recover "default-$name" "$out/default-$name"
done

# stories260K: no tokenizer here, so calibration and evaluation are token ids sampled from the model itself.
stories="${STORIES260K:-$root/../shared/reference/golden/stories260k-hf}"
if [ -d "$stories" ]; then
    "$root/scripts/sampled-ids.sh" "$stories" "$out"
    for spec in "${methods[@]}"; do
        name="${spec%%:*}"
        echo "== stories260K, $name" >&2
        # shellcheck disable=SC2086
        minnow prune "$stories" --out "$out/stories-$name" ${spec#*:} --calib-ids "$out/stories-calib.txt" \
            --eval-ids "$out/stories-eval.txt" --ctx 256 "${speed[@]}" --json > "$out/stories-$name.json"
    done
fi
echo "reports in $out" >&2
