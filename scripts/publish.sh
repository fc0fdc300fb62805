#!/usr/bin/env bash
# Builds the release archives of the `minnow` executable: native (NativeAOT) one-file builds for linux-x64 and
# linux-arm64, without llama.cpp (the comparisons with it are in the .NET tool), each as
# minnow-VERSION-RID.tar.gz with a SHA-256 checksum beside it (minnow-VERSION-RID.tar.gz.sha256), and the .NET tool
# package (Minnow.Cli.VERSION.nupkg, with llama.cpp) for `dotnet tool install`.
#
#   scripts/publish.sh [OUT] [RID...]     (default OUT: out/publish; default RIDs: linux-x64 linux-arm64)
#   ILC_INSTRUCTION_SET=x86-64-v3 scripts/publish.sh    (an x64 executable for AVX2 machines: 256-bit kernels)
#
# Needs clang (NativeAOT links with it); linux-arm64 from an x64 machine also needs lld and Debian's arm64 cross
# libraries: apt-get install clang lld binutils-aarch64-linux-gnu libc6-dev-arm64-cross libgcc-12-dev-arm64-cross
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$(mkdir -p "${1:-$root/out/publish}" && cd "${1:-$root/out/publish}" && pwd)"
shift || true
rids=("$@")
if [ ${#rids[@]} -eq 0 ]; then rids=(linux-x64 linux-arm64); fi
version="${VERSION:-$(sed -n 's:.*<Version>\(.*\)</Version>.*:\1:p' "$root/src/Minnow.Cli/Minnow.Cli.csproj" | head -n 1)}"
version="${version:-1.0.0}"

host="$(uname -m)"
for rid in "${rids[@]}"; do
    stage="$out/minnow-$version-$rid"
    rm -rf "$stage"
    args=(-c Release -r "$rid" -p:PublishAot=true -p:Version="$version" -o "$stage")
    # NativeAOT fixes the vector width at build time (x64 default: x86-64-v2, i.e. 128-bit SSE without FMA);
    # ILC_INSTRUCTION_SET (e.g. x86-64-v3) raises the baseline the executable then requires.
    if [ "$rid" = linux-x64 ] && [ -n "${ILC_INSTRUCTION_SET:-}" ]; then args+=(-p:IlcInstructionSet="$ILC_INSTRUCTION_SET"); fi
    if [ "$rid" = linux-arm64 ] && [ "$host" != aarch64 ]; then
        # Cross-compiling: clang (--target=aarch64-linux-gnu, added by the ILCompiler) finds Debian's cross gcc and
        # libc by itself; no SysRoot, whose libc.so linker script names absolute /usr/aarch64-linux-gnu paths that
        # lld would look for inside the sysroot. objcopy from binutils-aarch64-linux-gnu.
        args+=(-p:LinkerFlavor=lld -p:ObjCopyName=aarch64-linux-gnu-objcopy)
    fi
    echo "publishing $rid ..." >&2
    dotnet publish "$root/src/Minnow.Cli" "${args[@]}" >&2
    # One executable: the debug symbols (.dbg) stay out of the archive.
    mv "$stage/Minnow.Cli" "$stage/minnow"
    rm -f "$stage"/*.dbg "$stage"/*.pdb
    cp "$root/README.md" "$stage/"
    tar -C "$out" -czf "$out/minnow-$version-$rid.tar.gz" "minnow-$version-$rid"
    (cd "$out" && sha256sum "minnow-$version-$rid.tar.gz" > "minnow-$version-$rid.tar.gz.sha256")
    rm -rf "$stage"
    echo "$out/minnow-$version-$rid.tar.gz ($(du -h "$out/minnow-$version-$rid.tar.gz" | cut -f1))" >&2
done

dotnet pack "$root/src/Minnow.Cli" -c Release -p:Version="$version" -o "$out" >&2
(cd "$out" && sha256sum "Minnow.Cli.$version.nupkg" > "Minnow.Cli.$version.nupkg.sha256")
ls -l "$out" >&2
