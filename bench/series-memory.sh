#!/usr/bin/env bash
# ObservaStack benchmark: memory per active series of the embedded metrics store
# (`observastack telemetry`) against Prometheus 2.x, both scraping the same synthetic target
# (crates/telemetry/examples/synth_target.rs) with exactly N series every second, for N = a
# small baseline and each size of BENCH_SERIES; then the store's exact heap cost per series and
# per sample, in process (crates/telemetry/examples/tsdb_heap.rs, dhat). Prints figures;
# asserts nothing. See bench/README.md ("Memory per series"). Usage: bench/series-memory.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
BIN="$ROOT/target/release/observastack"
EXAMPLES="$ROOT/target/release/examples"
PROMETHEUS="${BENCH_PROMETHEUS:-prometheus}"

SIZES="${BENCH_SERIES:-1000 10000 50000}"   # series of the synthetic target, one run each
BASELINE="${BENCH_BASELINE:-100}"           # the small run every figure is taken against
HOLD_S="${BENCH_HOLD_S:-60}"                # both scrape this long once every series is in
EARLY_S="${BENCH_EARLY_S:-10}"              # first snapshot, seconds after every series is in
HEAP="${BENCH_HEAP:-1}"                     # 0: skip the in-process (dhat) measurement
[ "$HOLD_S" -gt "$EARLY_S" ] || die "BENCH_HOLD_S must be more than BENCH_EARLY_S ($EARLY_S)"

unset OTEL_EXPORTER_OTLP_ENDPOINT OBSERVASTACK_LOG

# --- tools -------------------------------------------------------------------------------------
need_apt curl curl
need_apt jq jq
[ "$PROMETHEUS" = prometheus ] && need_apt prometheus prometheus
command -v "$PROMETHEUS" >/dev/null 2>&1 || die "$PROMETHEUS not found (set BENCH_PROMETHEUS)"
command -v cargo >/dev/null 2>&1 || die "cargo is missing (https://rustup.rs)"

# --- clean-up ----------------------------------------------------------------------------------
WORK="$(mktemp -d -t observastack-series-memory.XXXXXX)"
SYNTH_PID=""
OURS_PID=""
PROM_PID=""
stop_all() {
    [ -n "$PROM_PID" ] && stop_pid "$PROM_PID"
    [ -n "$OURS_PID" ] && stop_pid "$OURS_PID"
    [ -n "$SYNTH_PID" ] && stop_pid "$SYNTH_PID"
    PROM_PID="" OURS_PID="" SYNTH_PID=""
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_all
    finish_work "$rc"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- ports -------------------------------------------------------------------------------------
# Four ports (synthetic target, ours, ours' OTLP listener, Prometheus), from 20000: clear of the
# lab's defaults, bench/run.sh (18000…) and bench/telemetry.sh (19000…).
BASE=$(free_block 20000 4) || die "no block of 4 free ports between 20000 and 20990"
SYNTH_ADDR="127.0.0.1:$BASE"
OURS="http://127.0.0.1:$((BASE + 1))"
PROM="http://127.0.0.1:$((BASE + 3))"

# --- build -------------------------------------------------------------------------------------
section "Build (release)"
(cd "$ROOT" && cargo build --release -p observastack \
    && cargo build --release -p observastack-telemetry --example synth_target --example tsdb_heap)
say "Machine: $(nproc) cores, $(uname -srm); ports $BASE..$((BASE + 3)); work dir $WORK"
say "Prometheus: $("$PROMETHEUS" --version 2>&1 | head -1)"
say "Load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"

# --- helpers -----------------------------------------------------------------------------------
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
# scraped_metric URL NAME: the sum of every sample of NAME in a /metrics page (0 when absent).
scraped_metric() {
    curl -fsS "$1" 2>/dev/null | awk -v n="$2" '$1 == n || index($1, n "{") == 1 { s += $2 } END { printf "%.0f", s }'
}
# instant BASE QUERY: the first value of an instant query's result ("" when empty).
instant() {
    curl -fsS -G "$1/api/v1/query" --data-urlencode "query=$2" 2>/dev/null | jq -r '.data.result[0].value[1] // empty'
}
mib() { calc "$1 / 1048576" %.1f; }

# snapshot KEY: both processes' memory and store counters into S[KEY_*].
declare -A S
snapshot() {
    local k=$1
    S[${k}_ours_rss]=$(($(rss_kb "$OURS_PID") * 1024))
    S[${k}_ours_series]=$(scraped_metric "$OURS/metrics" telemetry_tsdb_series)
    S[${k}_ours_samples]=$(scraped_metric "$OURS/metrics" telemetry_tsdb_samples)
    S[${k}_prom_rss]=$(($(rss_kb "$PROM_PID") * 1024))
    local page="$WORK/prom-metrics.txt"
    curl -fsS "$PROM/metrics" >"$page"
    # The sum over every label set (2.42 has prometheus_tsdb_head_samples_appended_total{type=…}).
    pm() { awk -v n="$1" '$1 == n || index($1, n "{") == 1 { s += $2 } END { printf "%.0f", s }' "$page"; }
    S[${k}_prom_rss_self]=$(pm process_resident_memory_bytes)
    S[${k}_prom_heap]=$(pm go_memstats_heap_inuse_bytes)
    S[${k}_prom_series]=$(pm prometheus_tsdb_head_series)
    S[${k}_prom_samples]=$(pm prometheus_tsdb_head_samples_appended_total)
    S[${k}_prom_chunks]=$(pm prometheus_tsdb_head_chunks)
}

# run_size N: synthetic target with N series, ours and Prometheus scraping it every second;
# snapshots N_A (EARLY_S after every series is in) and N_B (HOLD_S after).
run_size() {
    local n=$1 deadline
    "$EXAMPLES/synth_target" "$SYNTH_ADDR" "$n" 2>"$WORK/synth-$n.log" &
    SYNTH_PID=$!
    deadline=$(($(date +%s) + 30))
    until curl -fsS -o /dev/null "http://$SYNTH_ADDR/metrics" 2>/dev/null; do
        kill -0 "$SYNTH_PID" 2>/dev/null || { cat "$WORK/synth-$n.log" >&2; die "synth_target exited"; }
        [ "$(date +%s)" -le "$deadline" ] || die "synth_target not answering after 30 s"
        sleep 0.1
    done
    OBSERVASTACK_LOG=warn "$BIN" telemetry --listen "127.0.0.1:$((BASE + 1))" \
        --otlp-listen "127.0.0.1:$((BASE + 2))" --scrape-interval-ms 1000 \
        --target "synth=http://$SYNTH_ADDR/metrics" >"$WORK/ours-$n.log" 2>&1 &
    OURS_PID=$!
    printf 'global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: synth\n    static_configs:\n      - targets: ["%s"]\n' \
        "$SYNTH_ADDR" >"$WORK/prometheus.yml"
    "$PROMETHEUS" --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/prometheus-$n" \
        --web.listen-address="127.0.0.1:$((BASE + 3))" >"$WORK/prometheus-$n.log" 2>&1 &
    PROM_PID=$!
    # Every series in both stores (ours also holds its own ~100 series: it scrapes itself).
    deadline=$(($(date +%s) + 120))
    until [ "$(scraped_metric "$OURS/metrics" telemetry_tsdb_series)" -ge "$n" ] \
        && [ "$(scraped_metric "$PROM/metrics" prometheus_tsdb_head_series)" -ge "$n" ]; do
        kill -0 "$OURS_PID" 2>/dev/null || { cat "$WORK/ours-$n.log" >&2; die "observastack telemetry exited"; }
        kill -0 "$PROM_PID" 2>/dev/null || { cat "$WORK/prometheus-$n.log" >&2; die "prometheus exited"; }
        [ "$(date +%s)" -le "$deadline" ] || die "the $n series were not in both stores after 120 s"
        sleep 0.2
    done
    sleep "$EARLY_S"
    snapshot "${n}_A"
    sleep $((HOLD_S - EARLY_S))
    snapshot "${n}_B"
    S[${n}_ours_scrape_s]=$(instant "$OURS" 'scrape_duration_seconds{job="synth"}')
    S[${n}_prom_scrape_s]=$(instant "$PROM" 'scrape_duration_seconds{job="synth"}')
    S[${n}_ours_up]=$(instant "$OURS" 'up{job="synth"}')
    S[${n}_prom_up]=$(instant "$PROM" 'up{job="synth"}')
    S[${n}_ours_peak]=$(($(awk '/^VmHWM:/ { print $2 }' "/proc/$OURS_PID/status") * 1024))
    stop_all
}

# =============================================================================================
ALL_SIZES="$BASELINE $SIZES"
section "1. Side by side: synthetic target with N series, both scraping every 1 s, ${HOLD_S} s each (N = $ALL_SIZES)"
say "  Each N is a fresh synthetic target, a fresh \`observastack telemetry\` (defaults: retention"
say "  3600 s, --max-samples 8000000) and a fresh Prometheus; snapshots ${EARLY_S} s (A) and ${HOLD_S} s (B)"
say "  after both stores hold every series."
for n in $ALL_SIZES; do
    t0=$(now)
    run_size "$n"
    say "  N = $n done in $(calc "$(now) - $t0" %.0f) s"
done

row() { printf '  %-8s %9s %9s %10s %10s %10s %10s %10s %8s %8s\n' "$@"; }
say ""
say "  Held at B, and memory (MiB). ours: series/samples from telemetry_tsdb_*; Prometheus:"
say "  prometheus_tsdb_head_series, head samples appended, VmRSS and go_memstats_heap_inuse_bytes."
row N "ours ser" "prom ser" "ours smpl" "ours RSS A" "ours RSS B" "prom RSS B" "prom heap" "scrape o" "scrape p"
for n in $ALL_SIZES; do
    row "$n" "${S[${n}_B_ours_series]}" "${S[${n}_B_prom_series]}" "${S[${n}_B_ours_samples]}" \
        "$(mib "${S[${n}_A_ours_rss]}")" "$(mib "${S[${n}_B_ours_rss]}")" \
        "$(mib "${S[${n}_B_prom_rss]}")" "$(mib "${S[${n}_B_prom_heap]}")" \
        "$(calc "${S[${n}_ours_scrape_s]:-0} * 1000" %.0f)ms" "$(calc "${S[${n}_prom_scrape_s]:-0} * 1000" %.0f)ms"
done
for n in $ALL_SIZES; do
    if [ "${S[${n}_ours_up]}" != 1 ] || [ "${S[${n}_prom_up]}" != 1 ]; then
        say "  WARNING: N = $n: up{job=\"synth\"} is ${S[${n}_ours_up]:-?} on ours, ${S[${n}_prom_up]:-?} on Prometheus (a scrape failed or timed out)"
    fi
done

section "2. Bytes per active series: (memory at N − memory at N = $BASELINE) / Δseries"
say "  Δseries is the growth of each store's own series count. At A each series holds about"
say "  ${EARLY_S} samples, at B about ${HOLD_S}; ours grows about 2 bytes a sample (compressed chunks) (see 3), so the B figure"
say "  includes ~$(calc "$HOLD_S * 16" %.0f) bytes of samples a series."
prow() { printf '  %-8s %14s %14s %14s %14s %16s\n' "$@"; }
prow N "ours RSS A" "ours RSS B" "prom RSS A" "prom RSS B" "prom heap B"
per() { # per N KEY_SUFFIX SERIES_KEY: bytes per series against the baseline
    local n=$1 m=$2 s=$3
    calc "(${S[${n}_${m}]} - ${S[${BASELINE}_${m}]}) / (${S[${n}_${s}]} - ${S[${BASELINE}_${s}]})" %.0f
}
for n in $SIZES; do
    prow "$n" "$(per "$n" A_ours_rss A_ours_series)" "$(per "$n" B_ours_rss B_ours_series)" \
        "$(per "$n" A_prom_rss A_prom_series)" "$(per "$n" B_prom_rss B_prom_series)" \
        "$(per "$n" B_prom_heap B_prom_series)"
done
say ""
say "  Peak RSS of ours (VmHWM) per N: $(for n in $ALL_SIZES; do printf '%s: %s MiB  ' "$n" "$(mib "${S[${n}_ours_peak]}")"; done)"

section "3. Bytes per sample: RSS growth from A to B / samples appended from A to B"
for n in $SIZES; do
    o=$(calc "(${S[${n}_B_ours_rss]} - ${S[${n}_A_ours_rss]}) / (${S[${n}_B_ours_samples]} - ${S[${n}_A_ours_samples]})" %.1f)
    p=$(calc "(${S[${n}_B_prom_rss]} - ${S[${n}_A_prom_rss]}) / (${S[${n}_B_prom_samples]} - ${S[${n}_A_prom_samples]})" %.1f)
    ph=$(calc "(${S[${n}_B_prom_heap]} - ${S[${n}_A_prom_heap]}) / (${S[${n}_B_prom_samples]} - ${S[${n}_A_prom_samples]})" %.1f)
    say "  N = $n: ours $o bytes/sample (RSS); Prometheus $p (RSS), $ph (Go heap in use); head chunks at B: ${S[${n}_B_prom_chunks]}"
done
say "  Noisy at small N (allocator, page granularity, Go GC). Ours is about 2 bytes a sample in"
say "  compressed chunks of 120: see the exact figures in 4."

# =============================================================================================
if [ "$HEAP" != 0 ]; then
    section "4. The store's exact heap (dhat, in process): $EXAMPLES/tsdb_heap SERIES SAMPLES"
    say "  (dhat records every allocation: ~30 s for 10,000 series x 60 samples, ~25 s for 100 x 3600)"
    "$EXAMPLES/tsdb_heap" "${BENCH_HEAP_SERIES:-10000}" "$HOLD_S" | grep -v '^RESULT' | sed 's/^/  /'
    say "  One series at the default 1 h retention (3600 samples at 1 s, a 4096-sample ring buffer):"
    "$EXAMPLES/tsdb_heap" 100 3600 | grep -v '^RESULT' | sed 's/^/  /'
fi

say ""
say "  load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
