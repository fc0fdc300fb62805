#!/usr/bin/env bash
# Writes OUT/stories-calib.txt and OUT/stories-eval.txt: 64 sequences each of 255 token ids sampled from a model's
# F32 self at temperature 1, one sequence per line after BOS (id 1). The quantization and pruning tables use them for
# stories260K (read in place from ../shared), whose tokenizer is not available here. Seeds are fixed, so the files
# are the same on every run. Expects the CLI to be built (Release).
#
#   scripts/sampled-ids.sh MODEL_FOLDER OUT
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
stories="$1"
out="$2"
minnow() { dotnet run --project "$root/src/Minnow.Cli" -c Release --no-build -- "$@"; }
for set in calib:1:64 eval:2:64; do
    IFS=: read -r kind seed count <<< "$set"
    : > "$out/stories-$kind.txt"
    for i in $(seq 1 "$count"); do
        minnow generate "$stories" --prompt-ids 1 -n 255 --temperature 1 --top-k 0 --top-p 1 --min-p 0 --ignore-eos \
            --seed "$((seed * 1000 + i))" --json | sed -n 's/.*"token_ids":\[\([0-9,]*\)\].*/1,\1/p' >> "$out/stories-$kind.txt"
    done
done
