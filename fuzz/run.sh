#!/usr/bin/env bash
# Runs one fuzz target, single process, on its working corpus fuzz/corpus/TARGET (ignored by
# git; new inputs land there) seeded from the committed fuzz/seeds/TARGET.
#
#   fuzz/run.sh TARGET [RUNS] [more libFuzzer flags...]     (RUNS defaults to 10000000)
#
# Built without a sanitizer unless SANITIZER is set (e.g. SANITIZER=address): the engine and
# the game contain no `unsafe` code, so what these targets look for is panics (with debug
# assertions and overflow checks on, cargo-fuzz's default) and failed properties, and
# AddressSanitizer would cost about half the executions per second.
#
# -max_len per target: 4096 for frames and keys; 16384 for command packs (a pack is at most
# 8 KiB of commands) ; 40000 for redirect tokens (at most 33,174 characters); 65536 for manifests.
set -euo pipefail
cd "$(dirname "$0")/.."
target=$1
runs=${2:-10000000}
shift $(($# >= 2 ? 2 : 1))
case $target in
  manifest) max_len=65536 ;;
  redirect_token) max_len=40000 ;;
  command_pack) max_len=16384 ;;
  *) max_len=4096 ;;
esac
mkdir -p "fuzz/corpus/$target"
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1}
exec cargo +nightly fuzz run --sanitizer "${SANITIZER:-none}" "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
  -runs="$runs" -max_len="$max_len" -print_final_stats=1 "$@"
