#!/usr/bin/env bash
# ObservaStack benchmark: the embedded observability backend (`observastack telemetry`, started
# by `up`) side by side with Prometheus 2.x, both scraping the same lab targets every second:
# active series, samples ingested per second, resident memory (and per series), CPU, and the
# latency of representative queries. Prints figures; asserts nothing.
# See bench/README.md ("Telemetry backend against Prometheus"). Usage: bench/telemetry.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
BIN="$ROOT/target/release/observastack"
PROMETHEUS="${BENCH_PROMETHEUS:-prometheus}"

# The database is created when missing (never dropped). Override with BENCH_PG_ADMIN_URL /
# BENCH_DB_NAME.
PG_ADMIN_URL="${BENCH_PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
DB_NAME="${BENCH_DB_NAME:-observastack_bench}"
DB_URL="${PG_ADMIN_URL%/*}/$DB_NAME"
RATE="${BENCH_RATE:-50}"            # load generator, simulated user requests per second
SIDE_BY_SIDE_S="${BENCH_SIDE_BY_SIDE_S:-60}"  # both running and scraped before measuring
EARLY_S=10                          # first memory snapshot, seconds after both scraped everything
RUNS="${BENCH_QUERY_RUNS:-50}"      # timed requests per query and backend (after 5 warm-ups)
ROUND=10                            # of those, sent in alternating rounds of ROUND per backend
# BENCH_TRACES=0: the lab's services export their traces nowhere (a closed port), so the
# backend's memory is that of metrics and logs only: the fair comparison with Prometheus,
# which stores no traces.
TRACES="${BENCH_TRACES:-1}"
CORES="$(nproc)"

# Settings from the caller's environment that would change what is measured.
unset OTEL_EXPORTER_OTLP_ENDPOINT OBSERVASTACK_LOG OBSERVASTACK_ADMIN_TOKEN OBSERVASTACK_DATA_DIR DATABASE_URL


# --- tools -------------------------------------------------------------------------------------
need_apt jq jq
need_apt psql postgresql-client
need_apt curl curl
[ "$PROMETHEUS" = prometheus ] && need_apt prometheus prometheus
command -v "$PROMETHEUS" >/dev/null 2>&1 || die "$PROMETHEUS not found (set BENCH_PROMETHEUS)"
command -v cargo >/dev/null 2>&1 || die "cargo is missing (https://rustup.rs)"

# --- clean-up ----------------------------------------------------------------------------------
WORK="$(mktemp -d -t observastack-telemetry-bench.XXXXXX)"
DATA="$WORK/data"
UP_PID=""
PROM_PID=""

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    [ -n "$PROM_PID" ] && stop_pid "$PROM_PID"
    [ -n "$UP_PID" ] && stop_pid "$UP_PID"
    finish_work "$rc"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- ports -------------------------------------------------------------------------------------
# Ten ports: the nine of `up` (never the defaults, so a running lab is left alone) and
# Prometheus's. From 19000, so bench/run.sh (18000…) can run at the same time.
BASE=$(free_block 19000 10) || die "no block of 10 free ports between 19000 and 19999"
UP_ARGS=(--data-dir "$DATA"
    --gateway-port "$BASE" --orders-port $((BASE + 1))
    --gateway-admin-port $((BASE + 2)) --orders-admin-port $((BASE + 3))
    --worker-admin-port $((BASE + 4)) --agent-port $((BASE + 5)) --loadgen-port $((BASE + 6))
    --prometheus-port $((BASE + 7)) --otlp-port $((BASE + 8)))
if [ "$TRACES" = 0 ]; then UP_ARGS+=(--otlp-endpoint "http://127.0.0.1:9"); fi
OURS="http://127.0.0.1:$((BASE + 7))"
PROM_PORT=$((BASE + 9))
PROM="http://127.0.0.1:$PROM_PORT"
LOADGEN="http://127.0.0.1:$((BASE + 6))"

# --- build -------------------------------------------------------------------------------------
section "Build (release)"
(cd "$ROOT" && cargo build --release -p observastack)
say "Machine: $CORES cores, $(uname -srm); ports $BASE..$((BASE + 9)); database $DB_URL; work dir $WORK"
say "Prometheus: $("$PROMETHEUS" --version 2>&1 | head -1)"
say "Load average before the run: $(cut -d' ' -f1-3 /proc/loadavg) (anything else using the CPU changes the figures below)"

# --- database ----------------------------------------------------------------------------------
export PGOPTIONS="--client-min-messages=warning"
if [ "$(psql "$PG_ADMIN_URL" -Atc "SELECT count(*) FROM pg_database WHERE datname = '$DB_NAME'")" = 0 ]; then
    say "Creating database $DB_NAME (the first start-up seeds it, which takes a while)"
    psql "$PG_ADMIN_URL" -v ON_ERROR_STOP=1 -qc "CREATE DATABASE \"$DB_NAME\"" >/dev/null
fi

# --- helpers -----------------------------------------------------------------------------------
status_json() { "$BIN" status --json --data-dir "$DATA" 2>/dev/null; }
lab_healthy() {
    status_json | jq -e '(.components | length) > 0 and all(.components[]; .healthy)' >/dev/null 2>&1
}
uri() { jq -rn --arg v "$1" '$v | @uri'; }
# instant BASE QUERY [TIME]: the first value of an instant query's result ("" when empty).
instant() {
    local args=(--data-urlencode "query=$2")
    [ -n "${3:-}" ] && args+=(--data-urlencode "time=$3")
    curl -fsS -G "$1/api/v1/query" "${args[@]}" | jq -r '.data.result[0].value[1] // empty'
}
# scraped_metric URL NAME: the sum of every sample of NAME in a /metrics page.
scraped_metric() {
    curl -fsS "$1" | awk -v n="$2" '$1 == n || index($1, n "{") == 1 { s += $2 } END { printf "%.0f", s }'
}
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
mib() { calc "$1 / 1024" %.1f; }

# =============================================================================================
section "1. The lab: \`observastack up\` (embedded backend on $OURS), load generator at $RATE requests/s"
t0=$(now)
DATABASE_URL="$DB_URL" "$BIN" up "${UP_ARGS[@]}" >"$WORK/up.log" 2>&1 &
UP_PID=$!
deadline=$(($(date +%s) + 300))
until lab_healthy; do
    kill -0 "$UP_PID" 2>/dev/null || { cat "$WORK/up.log" >&2; die "observastack up exited before the lab was healthy"; }
    [ "$(date +%s)" -le "$deadline" ] || { cat "$WORK/up.log" >&2; die "the lab was not healthy after 300 s"; }
    sleep 0.1
done
say "  healthy after $(calc "$(now) - $t0" %.1f) s"
curl -fsS -X PATCH "$LOADGEN/load" -H 'content-type: application/json' -d "{\"rate\":$RATE}" >/dev/null
STATUS="$(status_json)"
TELEMETRY_PID=$(jq -r '.components[] | select(.name == "telemetry") | .pid // empty' <<<"$STATUS")
[ -n "$TELEMETRY_PID" ] || die "status --json reports no pid for the telemetry component"
mapfile -t TARGETS < <(jq -r '.components[] | select(.endpoints.metrics) | "\(.name) \(.endpoints.metrics)"' <<<"$STATUS")
N_TARGETS=${#TARGETS[@]}
say "  telemetry pid $TELEMETRY_PID; $N_TARGETS scrape targets (each component's endpoints.metrics):"
for t in "${TARGETS[@]}"; do say "    $t"; done

# =============================================================================================
section "2. Prometheus on $PROM scraping the same $N_TARGETS targets every 1 s"
{
    printf 'global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n'
    for t in "${TARGETS[@]}"; do
        job=${t%% *}
        rest=${t#* http://}
        printf "  - job_name: %s\n    metrics_path: /%s\n    static_configs:\n      - targets: ['%s']\n" \
            "$job" "${rest#*/}" "${rest%%/*}"
    done
} >"$WORK/prometheus.yml"
"$PROMETHEUS" --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/prometheus-data" \
    --web.listen-address="127.0.0.1:$PROM_PORT" >"$WORK/prometheus.log" 2>&1 &
PROM_PID=$!
deadline=$(($(date +%s) + 90))
for base in "$PROM" "$OURS"; do
    until [ "$(instant "$base" 'sum(up)' 2>/dev/null || true)" = "$N_TARGETS" ]; do
        kill -0 "$PROM_PID" 2>/dev/null || { cat "$WORK/prometheus.log" >&2; die "prometheus exited"; }
        [ "$(date +%s)" -le "$deadline" ] || die "sum(up) is not $N_TARGETS on $base after 90 s"
        sleep 0.2
    done
done
say "  prometheus pid $PROM_PID; sum(up) = $N_TARGETS on both. Running side by side for $SIDE_BY_SIDE_S s…"

# snapshot NAME: RSS, CPU ticks, series held and samples appended so far, of both backends.
snapshot() {
    local k=$1
    eval "${k}_T=$(now)"
    eval "${k}_OURS_RSS=$(rss_kb "$TELEMETRY_PID")"
    eval "${k}_PROM_RSS=$(rss_kb "$PROM_PID")"
    eval "${k}_OURS_CPU=$(cpu_ticks "$TELEMETRY_PID")"
    eval "${k}_PROM_CPU=$(cpu_ticks "$PROM_PID")"
    # Ours: telemetry_tsdb_samples is the samples held; nothing is trimmed within the 1 h
    # retention, so it is also every sample appended (staleness markers included).
    eval "${k}_OURS_SERIES=$(scraped_metric "$OURS/metrics" telemetry_tsdb_series)"
    eval "${k}_OURS_SAMPLES=$(scraped_metric "$OURS/metrics" telemetry_tsdb_samples)"
    eval "${k}_PROM_SERIES=$(scraped_metric "$PROM/metrics" prometheus_tsdb_head_series)"
    eval "${k}_PROM_SAMPLES=$(scraped_metric "$PROM/metrics" prometheus_tsdb_head_samples_appended_total)"
}
sleep "$EARLY_S"
snapshot A
sleep $((SIDE_BY_SIDE_S - EARLY_S))
snapshot B
T=$(calc "$B_T - 1" %.3f)   # the evaluation time of every query below, the same for both

# =============================================================================================
section "3. Series, ingestion, memory, CPU (after $SIDE_BY_SIDE_S s side by side; window ${EARLY_S}–${SIDE_BY_SIDE_S} s)"
ACTIVE='count({__name__=~".+"})'
OURS_ACTIVE=$(instant "$OURS" "$ACTIVE" "$T")
PROM_ACTIVE=$(instant "$PROM" "$ACTIVE" "$T")
OURS_SCRAPED=$(instant "$OURS" 'sum(scrape_samples_scraped)' "$T")
PROM_SCRAPED=$(instant "$PROM" 'sum(scrape_samples_scraped)' "$T")
WIN=$(calc "$B_T - $A_T" %.3f)
OURS_APPENDED=$(calc "($B_OURS_SAMPLES - $A_OURS_SAMPLES) / $WIN" %.0f)
PROM_APPENDED=$(calc "($B_PROM_SAMPLES - $A_PROM_SAMPLES) / $WIN" %.0f)
OURS_CPU_PCT=$(calc "($B_OURS_CPU - $A_OURS_CPU) * 100 / $CLK_TCK / $WIN" %.1f)
PROM_CPU_PCT=$(calc "($B_PROM_CPU - $A_PROM_CPU) * 100 / $CLK_TCK / $WIN" %.1f)
OURS_CPU_US=$(calc "($B_OURS_CPU - $A_OURS_CPU) * 1000000 / $CLK_TCK / ($B_OURS_SAMPLES - $A_OURS_SAMPLES)" %.2f)
PROM_CPU_US=$(calc "($B_PROM_CPU - $A_PROM_CPU) * 1000000 / $CLK_TCK / ($B_PROM_SAMPLES - $A_PROM_SAMPLES)" %.2f)
OURS_PER_SERIES=$(calc "$B_OURS_RSS * 1024 / $OURS_ACTIVE / 1024" %.1f)
PROM_PER_SERIES=$(calc "$B_PROM_RSS * 1024 / $PROM_ACTIVE / 1024" %.1f)
OURS_GROWTH=$(calc "($B_OURS_RSS - $A_OURS_RSS) * 1024 / ($B_OURS_SAMPLES - $A_OURS_SAMPLES)" %.1f)
PROM_GROWTH=$(calc "($B_PROM_RSS - $A_PROM_RSS) * 1024 / ($B_PROM_SAMPLES - $A_PROM_SAMPLES)" %.1f)

row() { printf '  %-46s %16s %16s\n' "$@"; }
row "" ours Prometheus
row "active series: $ACTIVE" "$OURS_ACTIVE" "$PROM_ACTIVE"
row "series in the store (A → B)" "$A_OURS_SERIES → $B_OURS_SERIES" "$A_PROM_SERIES → $B_PROM_SERIES"
row "sum(scrape_samples_scraped) = samples/s at 1 s" "$OURS_SCRAPED" "$PROM_SCRAPED"
row "samples appended/s (store counter, A → B)" "$OURS_APPENDED" "$PROM_APPENDED"
row "RSS at ${EARLY_S} s (MiB)" "$(mib "$A_OURS_RSS")" "$(mib "$A_PROM_RSS")"
row "RSS at ${SIDE_BY_SIDE_S} s (MiB)" "$(mib "$B_OURS_RSS")" "$(mib "$B_PROM_RSS")"
row "RSS / active series (KiB)" "$OURS_PER_SERIES" "$PROM_PER_SERIES"
row "RSS growth A → B / samples appended (bytes)" "$OURS_GROWTH" "$PROM_GROWTH"
row "CPU A → B (% of one core)" "$OURS_CPU_PCT" "$PROM_CPU_PCT"
row "CPU per sample appended (µs)" "$OURS_CPU_US" "$PROM_CPU_US"
say ""
say "  Samples appended: ours = delta of telemetry_tsdb_samples (staleness markers included, + up,"
say "  scrape_duration_seconds, scrape_samples_scraped per target); Prometheus = delta of"
say "  prometheus_tsdb_head_samples_appended_total (+ 5 synthetic series per target). Both read from"
say "  each one's own /metrics ($WIN s apart). These are the lab's ingestion rate, not a capacity."
say "  RSS / series includes each process's fixed overhead (runtime, HTTP server, and for ours the"
say "  trace and log stores, which receive the lab's OTLP spans and forwarded log lines)."
say "  RSS growth / sample: what holding one more sample costs (ours: Gorilla-compressed chunks;"
say "  Prometheus: compressed head chunks); noisy, allocator and GC dependent. For ours it also"
say "  counts the spans and log lines received in the window (trace store bounded at 32 MiB, log"
say "  store at 16 MiB by default), so it overstates the metrics store's share."
say "  Ours scraped from the lab's start, some seconds before Prometheus: range queries below see"
say "  a few more points on ours."
if [ "$B_OURS_SERIES" -gt 0 ]; then
    # Ours keeps every sample for --retention-s (3600 s) in memory (bounded by --max-samples).
    say "  At this rate ours would hold $(calc "$OURS_APPENDED * 3600 / 1000000" %.1f) M samples after 1 h (its retention):"
    say "  $(calc "$OURS_APPENDED * 3600 * 2 / 1048576" %.0f) MiB of sample data alone at about 2 bytes each in compressed chunks (bound: --max-samples 8 M)."
fi

# =============================================================================================
section "4. Query latency: $RUNS sequential requests per query and backend (after 5 warm-ups), in alternating rounds of $ROUND on one keep-alive connection, time=$T"
# curl_times URL N: N requests on one keep-alive connection, "CODE SECONDS" a line; fails on
# any non-200.
curl_times() {
    local i args=() out
    for i in $(seq "$2"); do args+=(-o /dev/null "$1"); done
    out=$(curl -s -w '%{http_code} %{time_total}\n' "${args[@]}")
    if awk '$1 != 200 { bad = 1 } END { exit !bad }' <<<"$out"; then
        die "non-200 answer from $1"
    fi
    printf '%s\n' "$out"
}
# stats: "mean p50 p95 max" in ms of the "CODE SECONDS" lines on standard input.
stats() {
    awk 'NF == 2 { print $2 * 1000 }' | sort -n | awk '
        { v[NR] = $1; s += $1 }
        END {
            p50 = v[int(NR * 0.50 + 0.999)]; p95 = v[int(NR * 0.95 + 0.999)]
            printf "%.2f %.2f %.2f %.2f", s / NR, p50, p95, v[NR] }'
}
# time_both PATH_AND_PARAMS: "mean p50 p95 max" of ours, then of Prometheus (8 fields), over
# RUNS requests each after 5 warm-ups. The requests go in alternating rounds of ROUND (ours,
# then Prometheus), so a load that comes and goes on the machine falls on both alike.
time_both() {
    local r ours="" prom=""
    curl_times "$OURS$1" 5 >/dev/null
    curl_times "$PROM$1" 5 >/dev/null
    for r in $(seq $(((RUNS + ROUND - 1) / ROUND))); do
        ours+=$(curl_times "$OURS$1" "$ROUND")$'\n'
        prom+=$(curl_times "$PROM$1" "$ROUND")$'\n'
    done
    printf '%s %s' "$(stats <<<"$ours")" "$(stats <<<"$prom")"
}
# result_size BASE PATH_AND_PARAMS: "N series" (and points for a matrix), or the error.
result_size() {
    curl -sS "$1$2" | jq -r 'if .status != "success" then "ERROR: \(.error)"
        elif .data.resultType == "matrix" then "\(.data.result | length) series, \([.data.result[].values | length] | add // 0) points"
        elif .data.resultType == "vector" then "\(.data.result | length) series"
        else .data.resultType end'
}

RANGE_Q='sum by (service) (rate(http_server_requests_total[1m]))'
RANGE_H='histogram_quantile(0.99, sum by (le, service) (rate(http_server_request_duration_seconds_bucket[1m])))'
QUERIES=(
    "up"
    "sum by (job) (rate(http_server_requests_total[1m]))"
    "sum by (service, route, status) (rate(http_server_requests_total[1m]))"
    "histogram_quantile(0.99, sum by (le, service) (rate(http_server_request_duration_seconds_bucket[1m])))"
    "sum by (service) (rate(http_server_requests_total{status=~\"5..\"}[1m])) / sum by (service) (rate(http_server_requests_total[1m]))"
    "sum(rate(http_server_request_duration_seconds_sum[1m])) / sum(rate(http_server_request_duration_seconds_count[1m]))"
    "max_over_time(scrape_duration_seconds[1m])"
    "$ACTIVE"
)
START=$(calc "$T - 300" %.3f)
declare -a Q_NAME Q_PATH
for q in "${QUERIES[@]}"; do
    Q_NAME+=("$q")
    Q_PATH+=("/api/v1/query?query=$(uri "$q")&time=$T")
done
for q in "$RANGE_Q" "$RANGE_H"; do
    Q_NAME+=("range 5m step 1s: $q")
    Q_PATH+=("/api/v1/query_range?query=$(uri "$q")&start=$START&end=$T&step=1")
done

declare -a OURS_LAT PROM_LAT
for i in "${!Q_NAME[@]}"; do
    say ""
    say "  [$((i + 1))] ${Q_NAME[$i]}"
    ours_size=$(result_size "$OURS" "${Q_PATH[$i]}")
    prom_size=$(result_size "$PROM" "${Q_PATH[$i]}")
    case "$ours_size $prom_size" in *ERROR*) r="- - - - - - - -" ;; *) r=$(time_both "${Q_PATH[$i]}") ;; esac
    read -r om o50 op omax pm p50 pp pmax <<<"$r"
    printf '    ours       mean %8s ms   p50 %8s ms   p95 %8s ms   max %8s ms   (%s)\n' "$om" "$o50" "$op" "$omax" "$ours_size"
    printf '    Prometheus mean %8s ms   p50 %8s ms   p95 %8s ms   max %8s ms   (%s)\n' "$pm" "$p50" "$pp" "$pmax" "$prom_size"
    OURS_LAT[i]="$om $op"
    PROM_LAT[i]="$pm $pp"
done
say "  Times are curl's time_total (request sent to last byte received), client on the same machine."

# =============================================================================================
section "Summary (ratio = ours / Prometheus; below 1 means ours uses less / answers faster)"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.2f", a / b }'; }
srow() { printf '  %-58s %12s %12s %8s\n' "$1" "$2" "$3" "$(ratio "$2" "$3")"; }
printf '  %-58s %12s %12s %8s\n' metric ours Prometheus ratio
srow "active series" "$OURS_ACTIVE" "$PROM_ACTIVE"
srow "samples ingested/s (sum(scrape_samples_scraped), 1 s)" "$OURS_SCRAPED" "$PROM_SCRAPED"
srow "samples appended/s (store counters)" "$OURS_APPENDED" "$PROM_APPENDED"
srow "RSS at ${SIDE_BY_SIDE_S} s (MiB)" "$(mib "$B_OURS_RSS")" "$(mib "$B_PROM_RSS")"
srow "RSS / active series (KiB, fixed overhead included)" "$OURS_PER_SERIES" "$PROM_PER_SERIES"
srow "RSS growth per sample appended, ${EARLY_S}–${SIDE_BY_SIDE_S} s (bytes)" "$OURS_GROWTH" "$PROM_GROWTH"
srow "CPU (% of one core)" "$OURS_CPU_PCT" "$PROM_CPU_PCT"
srow "CPU per sample appended (µs)" "$OURS_CPU_US" "$PROM_CPU_US"
for i in "${!Q_NAME[@]}"; do
    read -r om op <<<"${OURS_LAT[$i]}"
    read -r pm pp <<<"${PROM_LAT[$i]}"
    srow "[$((i + 1))] mean ms" "$om" "$pm"
    srow "[$((i + 1))] p95 ms" "$op" "$pp"
done
say "  load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
