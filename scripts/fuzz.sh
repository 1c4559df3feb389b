#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz, libFuzzer with AddressSanitizer) of what the lab parses
# from outside: PromQL queries (parsed and evaluated), scrape bodies, OTLP exports, scenario
# files. Builds every target of fuzz/ and runs each for SECONDS; fails as soon as one crashes,
# overflows its stack, hangs (an input over 30 s) or runs out of memory, and prints the input
# libFuzzer saved under fuzz/artifacts/TARGET/ (replay it with
# `RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET FILE`).
#
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]   (default 60 s each, every target)
#        scripts/fuzz.sh build                  (install cargo-fuzz if needed and build, no run)
# The corpus grows in fuzz/corpus/TARGET/ (not committed), seeded from fuzz/seeds/, the PromQL
# test scripts in ../shared/peer-tests/promql/ and the scenario library.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> %s\n' "$*"; }

build_only=0
if [ "${1:-}" = build ]; then
  build_only=1
  shift
fi
seconds="${1:-60}"
[ $# -gt 0 ] && shift
case "$seconds" in
  '' | *[!0-9]*) echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]" >&2; exit 2 ;;
esac
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(promql_parse_eval exposition otlp scenario)

# cargo-fuzz compiles with -Z flags (the sanitizer, libFuzzer's coverage instrumentation), which
# rustc accepts only from a nightly toolchain; RUSTC_BOOTSTRAP=1 lets the stable one take them,
# so the fuzzers build with the toolchain everything else builds with.
export RUSTC_BOOTSTRAP=1
if ! command -v cargo-fuzz >/dev/null; then
  say "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
target_dir="${CARGO_TARGET_DIR:-fuzz/target}"

# --- Seed corpora.
mkdir -p fuzz/corpus fuzz/logs
for t in "${targets[@]}"; do mkdir -p "fuzz/corpus/$t"; done
peer=../shared/peer-tests/promql
if [ -d "$peer" ] && [ -d fuzz/corpus/promql_parse_eval ] && ! ls fuzz/corpus/promql_parse_eval/peer-* >/dev/null 2>&1; then
  # One file per query of Prometheus's test scripts (`eval instant at 5m QUERY`,
  # `eval range from 0 to 5m step 1m QUERY`).
  sed -nE 's/^eval(_fail|_ordered|_warn|_info)? +(instant +at +[^ ]+|range +from +[^ ]+ +to +[^ ]+ +step +[^ ]+) +//p' \
    "$peer"/*.test | sort -u | awk '{ f = sprintf("fuzz/corpus/promql_parse_eval/peer-%04d", NR); printf "%s", $0 > f; close(f) }'
fi
if [ -d fuzz/corpus/scenario ]; then
  cp -n scenarios/*.yaml fuzz/corpus/scenario/ 2>/dev/null || true
fi

say "building the fuzz targets"
cargo fuzz build --target-dir "$target_dir"
if [ "$build_only" = 1 ]; then
  say "fuzz targets built"
  exit 0
fi

failed=()
for t in "${targets[@]}"; do
  say "fuzzing $t for ${seconds}s"
  extra=()
  [ -d "fuzz/seeds/$t" ] && extra+=("fuzz/seeds/$t")
  opts=(-max_total_time="$seconds" -timeout=30 -rss_limit_mb=2048 -print_final_stats=1)
  case "$t" in
    promql_parse_eval) opts+=(-dict=fuzz/dicts/promql.dict -max_len=8192) ;;
    scenario) opts+=(-max_len=16384) ;;
  esac
  log="fuzz/logs/$t.log"
  if cargo fuzz run --target-dir "$target_dir" "$t" "fuzz/corpus/$t" "${extra[@]}" -- "${opts[@]}" >"$log" 2>&1; then
    runs=$(sed -nE 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
    cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[0-9]+[a-zA-Z]*' "$log" | tail -n1)
    echo "$t: ${runs:-?} executions in ${seconds}s, $cov"
  else
    echo "$t: FAILED; the end of $log:" >&2
    tail -n 40 "$log" >&2
    ls -t "fuzz/artifacts/$t"/* 2>/dev/null | head -n1 | sed 's/^/input: /' >&2
    failed+=("$t")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "error: fuzz targets failed: ${failed[*]}" >&2
  exit 1
fi
say "every fuzz target ran ${seconds}s without a crash"
