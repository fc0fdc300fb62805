#!/usr/bin/env bash
# Coverage-guided fuzzing of one input kind with AFL++ and SharpFuzz.
#
#   scripts/fuzz.sh TARGET SECONDS        # e.g. scripts/fuzz.sh safetensors 600
#   scripts/fuzz.sh list                  # the targets
#
# Targets: safetensors gguf config tokenizer-json tokenizer-config peft-config peft-safetensors llama2c
# llama2c-tokenizer optimize-cache (see fuzz/Minnow.Fuzz/FuzzTargets.cs for what each runs).
#
# Needs the Debian package afl++ (installed here when missing and running as root) and the SharpFuzz.CommandLine
# dotnet tool (pinned in dotnet-tools.json; `dotnet tool restore`). Builds fuzz/Minnow.Fuzz into
# out/fuzz/bin, instruments Minnow.dll, writes the seed corpus (out/fuzz/seeds, made by the project itself), and
# runs afl-fuzz under nice. Findings land in out/fuzz/findings/TARGET/default/{crashes,hangs}; each new crash is
# copied to tests/fuzz-regressions/TARGET/ (replayed by every `dotnet test`) once fixed. The closing line gives
# executions, executions/s and crashes. Extra env: FUZZ_TIMEOUT_MS (per input, default 5000), FUZZ_NICE (15).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
targets="safetensors gguf config tokenizer-json tokenizer-config peft-config peft-safetensors llama2c llama2c-tokenizer optimize-cache"

if [ "${1:-}" = "list" ]; then
    echo "$targets"
    exit 0
fi

if [ $# -ne 2 ] || ! [[ " $targets " == *" $1 "* ]] || ! [[ "$2" =~ ^[0-9]+$ ]]; then
    echo "usage: scripts/fuzz.sh TARGET SECONDS   (targets: $targets)" >&2
    exit 2
fi

target="$1"
seconds="$2"
out="$root/out/fuzz"
bin="$out/bin"

if ! command -v afl-fuzz >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ]; then
        echo "installing afl++ (Debian package)..." >&2
        { apt-get install -y --no-install-recommends afl++ || { apt-get update && apt-get install -y --no-install-recommends afl++; }; } >&2
    else
        echo "error: afl-fuzz not found; install the Debian package afl++." >&2
        exit 1
    fi
fi

export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
dotnet tool restore >/dev/null

# Build once per source change into out/fuzz/bin (plain: seeds, replay) and out/fuzz/afl (Minnow.dll instrumented;
# instrumented code only runs under afl-fuzz, whose shared memory it writes).
afl="$out/afl"
stamp="$afl/.instrumented"
if [ ! -f "$stamp" ] || [ -n "$(find src/Minnow fuzz/Minnow.Fuzz -name '*.cs' -newer "$stamp" -print -quit)" ]; then
    rm -rf "$bin" "$afl" "$out/seeds"
    nice -n "${FUZZ_NICE:-15}" dotnet build fuzz/Minnow.Fuzz/Minnow.Fuzz.csproj -c Release -o "$bin" -v q -nologo >&2
    cp -r "$bin" "$afl"
    dotnet sharpfuzz "$afl/Minnow.dll" >&2
    touch "$stamp"
fi

if [ ! -d "$out/seeds/$target" ]; then
    dotnet "$bin/Minnow.Fuzz.dll" seeds "$out/seeds" >&2
fi

findings="$out/findings/$target"
mkdir -p "$findings"
input="$out/seeds/$target"
if [ -d "$findings/default/queue" ]; then
    input="-" # resume the earlier campaign
fi

export AFL_SKIP_BIN_CHECK=1 AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_AFFINITY=1
export AFL_AUTORESUME=1
# The .NET runtime maps far more than AFL's default memory limit; allocations are bounded by the harness instead.
nice -n "${FUZZ_NICE:-15}" afl-fuzz -i "$input" -o "$findings" -t "${FUZZ_TIMEOUT_MS:-5000}" -m none -V "$seconds" \
    -- dotnet "$afl/Minnow.Fuzz.dll" afl "$target" >"$out/afl-$target.log" 2>&1 || true

stats="$findings/default/fuzzer_stats"
if [ ! -f "$stats" ]; then
    echo "error: afl-fuzz did not start; see $out/afl-$target.log" >&2
    tail -n 20 "$out/afl-$target.log" >&2
    exit 1
fi

get() { sed -n "s/^$1 *: *//p" "$stats"; }
crashes=$(find "$findings/default/crashes" -type f -name 'id:*' 2>/dev/null | wc -l)
hangs=$(find "$findings/default/hangs" -type f -name 'id:*' 2>/dev/null | wc -l)
run=$(( $(get last_update) - $(get start_time) ))
echo "fuzz $target: $(get execs_done) executions in ${run} s ($(get execs_per_sec)/s), corpus $(get corpus_count), $crashes crashes, $hangs hangs (findings: $findings/default)"
if [ "$crashes" -gt 0 ]; then
    mkdir -p "tests/fuzz-regressions/$target"
    for f in "$findings"/default/crashes/id:*; do
        cp "$f" "tests/fuzz-regressions/$target/afl-$(sha256sum "$f" | cut -c1-16)"
    done
    echo "copied the crashes to tests/fuzz-regressions/$target/ (replay: dotnet $bin/Minnow.Fuzz.dll replay $target FILE...)"
fi
