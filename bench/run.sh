#!/usr/bin/env bash
# ObservaStack benchmarks: start-up time, memory, order-path throughput and latency, and the
# cost of the shared request instrumentation. Prints figures; asserts nothing.
# See bench/README.md. Usage: bench/run.sh (from any directory).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
BENCH="$ROOT/bench"
BIN="$ROOT/target/release/observastack"
EXAMPLE="$ROOT/target/release/examples/instrumentation_overhead"

# The benchmark database is dropped and re-created at the start, so the first start-up really
# seeds it. Override with BENCH_PG_ADMIN_URL / BENCH_DB_NAME.
PG_ADMIN_URL="${BENCH_PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
DB_NAME="${BENCH_DB_NAME:-observastack_bench}"
DB_URL="${PG_ADMIN_URL%/*}/$DB_NAME"
DURATION="${BENCH_DURATION:-15s}"   # each measured wrk run
WRK_ARGS=(-t2 -c32 -d"$DURATION" --latency)
CORES="$(nproc)"

# Settings from the caller's environment that would change what is measured.
unset OTEL_EXPORTER_OTLP_ENDPOINT OBSERVASTACK_LOG OBSERVASTACK_ADMIN_TOKEN OBSERVASTACK_DATA_DIR DATABASE_URL


# --- tools -------------------------------------------------------------------------------------
need_apt wrk wrk
need_apt jq jq
need_apt psql postgresql-client
need_apt curl curl
command -v cargo >/dev/null 2>&1 || die "cargo is missing (https://rustup.rs)"

# --- clean-up ----------------------------------------------------------------------------------
WORK="$(mktemp -d -t observastack-bench.XXXXXX)"
DATA="$WORK/data"
UP_PID=""
EX_PID=""

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    [ -n "$UP_PID" ] && stop_pid "$UP_PID"
    [ -n "$EX_PID" ] && stop_pid "$EX_PID"
    finish_work "$rc"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- ports -------------------------------------------------------------------------------------
BASE=$(free_block 18000 11) || die "no block of 11 free ports between 18000 and 18999"
GATEWAY_PORT=$BASE
ORDERS_PORT=$((BASE + 1))
GATEWAY_ADMIN_PORT=$((BASE + 2))
ORDERS_ADMIN_PORT=$((BASE + 3))
WORKER_ADMIN_PORT=$((BASE + 4))
AGENT_PORT=$((BASE + 5))
LOADGEN_PORT=$((BASE + 6))
BARE_PORT=$((BASE + 7))
INSTR_PORT=$((BASE + 8))
PROMETHEUS_PORT=$((BASE + 9))
OTLP_PORT=$((BASE + 10))
UP_ARGS=(--data-dir "$DATA"
    --gateway-port "$GATEWAY_PORT" --orders-port "$ORDERS_PORT"
    --gateway-admin-port "$GATEWAY_ADMIN_PORT" --orders-admin-port "$ORDERS_ADMIN_PORT"
    --worker-admin-port "$WORKER_ADMIN_PORT" --agent-port "$AGENT_PORT" --loadgen-port "$LOADGEN_PORT"
    --prometheus-port "$PROMETHEUS_PORT" --otlp-port "$OTLP_PORT")
GATEWAY="http://127.0.0.1:$GATEWAY_PORT"
LOADGEN="http://127.0.0.1:$LOADGEN_PORT"

# --- build -------------------------------------------------------------------------------------
section "Build (release)"
(cd "$ROOT" && cargo build --release -p observastack && cargo build --release -p observastack-sut --examples)
say "Machine: $CORES cores, $(uname -srm); ports $BASE..$((BASE + 10)); database $DB_URL; work dir $WORK"
say "Load average before the run: $(cut -d' ' -f1-3 /proc/loadavg) (anything else using the CPU lowers every figure below)"

# --- database ----------------------------------------------------------------------------------
export PGOPTIONS="--client-min-messages=warning"
psql "$PG_ADMIN_URL" -v ON_ERROR_STOP=1 -qc "DROP DATABASE IF EXISTS \"$DB_NAME\" WITH (FORCE)" >/dev/null
psql "$PG_ADMIN_URL" -v ON_ERROR_STOP=1 -qc "CREATE DATABASE \"$DB_NAME\"" >/dev/null

# --- lab helpers -------------------------------------------------------------------------------
status_json() { "$BIN" status --json --data-dir "$DATA" 2>/dev/null; }
lab_healthy() {
    status_json | jq -e '(.components | length) > 0 and all(.components[]; .healthy)' >/dev/null 2>&1
}

# start_lab LOG: launches `up`, polls `status --json` every 50 ms until every component is
# healthy, sets UP_PID and STARTUP_S.
start_lab() {
    local log=$1 t0 deadline
    t0=$(now)
    DATABASE_URL="$DB_URL" "$BIN" up "${UP_ARGS[@]}" >"$log" 2>&1 &
    UP_PID=$!
    deadline=$(calc "$t0 + 300" %.0f)
    until lab_healthy; do
        if ! kill -0 "$UP_PID" 2>/dev/null; then
            cat "$log" >&2
            die "observastack up exited before the lab was healthy"
        fi
        if [ "$(date +%s)" -gt "$deadline" ]; then
            cat "$log" >&2
            die "the lab was not healthy after 300 s"
        fi
        sleep 0.05
    done
    STARTUP_S=$(calc "$(now) - $t0" %.2f)
}

stop_lab() {
    local t0 rc=0
    t0=$(now)
    kill -TERM "$UP_PID"
    wait "$UP_PID" || rc=$?
    say "  (stopped with SIGTERM in $(calc "$(now) - $t0" %.2f) s, exit code $rc)"
    UP_PID=""
}

ready_line() { grep -o 'ready in [0-9.]* s' "$1" | head -1 || true; }

# --- wrk helpers -------------------------------------------------------------------------------
# to_ms VALUE: wrk's "1.23ms" / "456.78us" / "1.02s" / "1.50m" in milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        f = (u == "us") ? 0.001 : (u == "ms") ? 1 : (u == "s") ? 1000 : (u == "m") ? 60000 : (u == "h") ? 3600000 : 1
        printf "%.3f", n * f }'
}
wrk_rps() { awk '/^Requests\/sec:/ { print $2 }' "$1"; }
wrk_mean_ms() { to_ms "$(awk '$1 == "Latency" && $2 != "Distribution" { print $2; exit }' "$1")"; }
wrk_pct_ms() { to_ms "$(awk -v p="$2%" '$1 == p { print $2; exit }' "$1")"; }
wrk_requests() { awk '/requests in/ { print $1; exit }' "$1"; }

# cpu_ticks PID...: user + system CPU time of the processes (all their threads), in clock ticks.
CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() {
    local pid total=0
    for pid in "$@"; do
        # Fields after "pid (comm) ": state is 1st, utime 12th, stime 13th.
        total=$((total + $(sed 's/.*) //' "/proc/$pid/stat" | awk '{ print $12 + $13 }')))
    done
    echo "$total"
}

# run_wrk KEY LABEL URL [LUA]: runs wrk, keeps its output in $WORK/wrk-KEY.txt, prints one summary.
# With CPU_PIDS set, also the CPU those processes used per request ($WORK/cpu-KEY.txt, in µs).
CPU_PIDS=()
run_wrk() {
    local name=$2 url=$3 lua=${4:-} out="$WORK/wrk-$1.txt" t0 cpu=""
    local args=("${WRK_ARGS[@]}")
    [ -n "$lua" ] && args+=(-s "$lua")
    [ "${#CPU_PIDS[@]}" -gt 0 ] && t0=$(cpu_ticks "${CPU_PIDS[@]}")
    wrk "${args[@]}" "$url" >"$out" 2>&1 || { cat "$out" >&2; die "wrk failed ($name)"; }
    if [ "${#CPU_PIDS[@]}" -gt 0 ]; then
        calc "($(cpu_ticks "${CPU_PIDS[@]}") - $t0) * 1000000 / $CLK_TCK / $(wrk_requests "$out")" %.1f >"$WORK/cpu-$1.txt"
        cpu="   server CPU $(cat "$WORK/cpu-$1.txt") µs/req"
    fi
    printf '  %-28s %10s req/s   mean %8s ms   p50 %8s ms   p99 %8s ms   (%s requests)%s\n' \
        "$name" "$(wrk_rps "$out")" "$(wrk_mean_ms "$out")" "$(wrk_pct_ms "$out" 50)" \
        "$(wrk_pct_ms "$out" 99)" "$(wrk_requests "$out")" "$cpu"
    grep -E 'Non-2xx|Socket errors' "$out" | sed 's/^ */    WARNING: /' || true
}
# warm_up URL [LUA]: 3 s of the same load, not reported (connection pools, caches, CPU clocks).
warm_up() {
    local args=(-t2 -c32 -d3s)
    [ -n "${2:-}" ] && args+=(-s "$2")
    wrk "${args[@]}" "$1" >/dev/null 2>&1 || true
}

# =============================================================================================
section "1. Start-up: launching \`observastack up\` until \`status --json\` reports every component healthy"
start_lab "$WORK/up-cold.log"
COLD_S=$STARTUP_S
say "  cold (first run, seeds the database): $COLD_S s   (up itself says: $(ready_line "$WORK/up-cold.log"))"
stop_lab
start_lab "$WORK/up-warm.log"
WARM_S=$STARTUP_S
say "  warm (second run, database seeded):   $WARM_S s   (up itself says: $(ready_line "$WORK/up-warm.log"))"
say "  Polled every 50 ms; each poll runs \`observastack status --json\` (a process start and five readiness probes)."

# =============================================================================================
MEMORY_S="${BENCH_MEMORY_S:-300}"   # how long each memory rate runs before it is read
section "2. Memory: resident set of every lab process after ${MEMORY_S} s at 100, then 300 requests/s"
for RATE in 100 300; do
    curl -fsS -X PATCH "$LOADGEN/load" -H 'content-type: application/json' -d "{\"rate\":$RATE}" >/dev/null
    say "  Load set to $RATE requests/s; waiting $MEMORY_S s…"
    sleep "$MEMORY_S"
    STATUS="$(status_json)"
    TOTAL_RSS_KB=0
    TOTAL_PSS_KB=0
    printf '  %-9s %8s %10s %10s\n' process pid "RSS MB" "PSS MB"
    while read -r name pid; do
        [ -n "$pid" ] || { say "  $name: no pid reported"; continue; }
        rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")
        pss=$(awk '/^Pss:/ { print $2 }' "/proc/$pid/smaps_rollup" 2>/dev/null || echo 0)
        TOTAL_RSS_KB=$((TOTAL_RSS_KB + rss))
        TOTAL_PSS_KB=$((TOTAL_PSS_KB + ${pss:-0}))
        printf '  %-9s %8s %10s %10s\n' "$name" "$pid" "$(calc "$rss / 1024" %.1f)" "$(calc "${pss:-0} / 1024" %.1f)"
    done < <({ echo "up $UP_PID"; jq -r '.components[] | "\(.name) \(.pid // "")"' <<<"$STATUS"; })
    say "  TOTAL at $RATE req/s    $(calc "$TOTAL_RSS_KB / 1024" %10.1f) $(calc "$TOTAL_PSS_KB / 1024" %10.1f)   (target: 150 MB)"
    say "  Load generator, last 60 s: $(curl -fsS "$LOADGEN/stats" | jq -c '.windows["60s"].overall' 2>/dev/null || echo unavailable)"
    [ "$RATE" = 100 ] && { RSS_100_KB=$TOTAL_RSS_KB; PSS_100_KB=$TOTAL_PSS_KB; }
done
say "  MB = MiB. RSS counts shared pages (the one observastack binary mapped by all eight processes)"
say "  in every process; PSS splits them between the processes, so its total is the real footprint."
curl -fsS -X PATCH "$LOADGEN/load" -H 'content-type: application/json' -d '{"rate":100}' >/dev/null

# =============================================================================================
section "3. Order path: wrk ${WRK_ARGS[*]} against the gateway (load generator paused)"
curl -fsS -X POST "$LOADGEN/load/pause" >/dev/null
sleep 1
# "server CPU" below: CPU time of the gateway and orders processes (not PostgreSQL, not wrk)
# during the run, divided by the requests served.
mapfile -t CPU_PIDS < <(status_json | jq -r '.components[] | select(.name == "gateway" or .name == "orders") | .pid')
warm_up "$GATEWAY/api/orders/1" "$BENCH/get_order.lua"
run_wrk get "GET /api/orders/{random id}" "$GATEWAY/api/orders/1" "$BENCH/get_order.lua"
GET_KEY=get
# Planner statistics: the seed loads 100k orders; until the tables are analyzed PostgreSQL
# guesses row counts, and may pick a slow plan for the order's "recent orders of this customer".
ANALYZED=$(psql "$DB_URL" -Atc "SELECT count(*) FROM pg_stat_user_tables
    WHERE relname IN ('orders', 'order_items') AND coalesce(last_analyze, last_autoanalyze) IS NOT NULL")
if [ "$ANALYZED" -lt 2 ]; then
    say "  NOTE: the seeded tables had never been analyzed (no planner statistics; this server has"
    say "  autovacuum=$(psql "$DB_URL" -Atc 'SHOW autovacuum'), autovacuum_naptime=$(psql "$DB_URL" -Atc 'SHOW autovacuum_naptime')), so the run above is what a learner gets"
    say "  right after the first start. Running ANALYZE and measuring again:"
    psql "$DB_URL" -qc ANALYZE
    warm_up "$GATEWAY/api/orders/1" "$BENCH/get_order.lua"
    run_wrk get-analyzed "GET /api/orders/{id}, ANALYZEd" "$GATEWAY/api/orders/1" "$BENCH/get_order.lua"
    GET_KEY=get-analyzed
fi
GET_RPS=$(wrk_rps "$WORK/wrk-$GET_KEY.txt")
GET_MEAN_MS=$(wrk_mean_ms "$WORK/wrk-$GET_KEY.txt")
run_wrk post "POST /api/orders" "$GATEWAY/api/orders" "$BENCH/post_order.lua"
say "  Each request: wrk -> gateway -> orders -> PostgreSQL, all on these $CORES cores (wrk included);"
say "  \"server CPU\" is the CPU time of the gateway and orders processes per request (not PostgreSQL's)."
GET_SUT_CPU_US=$(cat "$WORK/cpu-$GET_KEY.txt")
CPU_PIDS=()
say "  Stopping the lab…"
stop_lab

# =============================================================================================
section "4. Instrumentation cost: the same GET /products handler, bare and instrumented (lab stopped)"
"$EXAMPLE" "127.0.0.1:$BARE_PORT" "127.0.0.1:$INSTR_PORT" >/dev/null 2>"$WORK/example.err" &
EX_PID=$!
for i in $(seq 100); do
    curl -fsS -o /dev/null "http://127.0.0.1:$BARE_PORT/products" 2>/dev/null \
        && curl -fsS -o /dev/null "http://127.0.0.1:$INSTR_PORT/products" 2>/dev/null && break
    kill -0 "$EX_PID" 2>/dev/null || { cat "$WORK/example.err" >&2; die "the example exited"; }
    sleep 0.1
done
BARE_URL="http://127.0.0.1:$BARE_PORT/products"
INSTR_URL="http://127.0.0.1:$INSTR_PORT/products"
say "  Response body: $(curl -fsS "$BARE_URL" | wc -c) bytes (200 products as JSON). Access log (stdout) -> /dev/null."
say "  \"server CPU\": CPU time of the example process during the run / requests served."
CPU_PIDS=("$EX_PID")
warm_up "$BARE_URL"
warm_up "$INSTR_URL"
for round in 1 2; do
    run_wrk "bare$round" "bare, run $round" "$BARE_URL"
    run_wrk "instr$round" "instrumented, run $round" "$INSTR_URL"
done
CPU_PIDS=()
stop_pid "$EX_PID"
EX_PID=""

rps() { wrk_rps "$WORK/wrk-$1.txt"; }
BARE_RPS=$(calc "($(rps bare1) + $(rps bare2)) / 2")
INSTR_RPS=$(calc "($(rps instr1) + $(rps instr2)) / 2")
OVERHEAD=$(calc "(1 - $INSTR_RPS / $BARE_RPS) * 100" %.1f)
BARE_CPU_US=$(calc "$CORES * 1000000 / $BARE_RPS" %.1f)
INSTR_CPU_US=$(calc "$CORES * 1000000 / $INSTR_RPS" %.1f)
COST_US=$(calc "$INSTR_CPU_US - $BARE_CPU_US" %.1f)
ORDER_CPU_US=$(calc "$CORES * 1000000 / $GET_RPS" %.1f)
GET_MEAN_US=$(calc "$GET_MEAN_MS * 1000" %.0f)
HOPS_COST_US=$(calc "2 * $COST_US" %.1f)

say ""
say "  Mean of the two runs: bare $BARE_RPS req/s, instrumented $INSTR_RPS req/s"
say "  Throughput overhead = 1 - instrumented/bare = $OVERHEAD %"
say ""
say "  Cost per request. The $CORES cores are saturated (server and wrk), so one request costs about"
say "  $CORES core-seconds / (requests per second) of CPU:"
say "    bare:          $CORES / $BARE_RPS = $BARE_CPU_US µs"
say "    instrumented:  $CORES / $INSTR_RPS = $INSTR_CPU_US µs"
say "    difference:    $COST_US µs of CPU per request for the span, the metrics and the log line"
say "  (wrk's own share of each request is the same in both, so it cancels out in the difference)."
say "  This estimate assumes nothing else uses the cores. Measured directly (CPU time of the example"
say "  process / requests, the mean of the two runs), which other load on the machine hardly changes:"
BARE_SRV_US=$(calc "($(cat "$WORK/cpu-bare1.txt") + $(cat "$WORK/cpu-bare2.txt")) / 2" %.1f)
INSTR_SRV_US=$(calc "($(cat "$WORK/cpu-instr1.txt") + $(cat "$WORK/cpu-instr2.txt")) / 2" %.1f)
SRV_COST_US=$(calc "$INSTR_SRV_US - $BARE_SRV_US" %.1f)
say "    bare $BARE_SRV_US µs, instrumented $INSTR_SRV_US µs: difference $SRV_COST_US µs per request"
say "    ($(calc "$SRV_COST_US / $INSTR_SRV_US * 100" %.1f) % of the instrumented server's CPU per request)"
say ""
say "  Against the real order path (step 3, the last GET /api/orders/{id} run), which passes two instrumented"
say "  servers (gateway and orders), so pays it twice: 2 × $COST_US = $HOPS_COST_US µs (estimate),"
say "  2 × $SRV_COST_US = $(calc "2 * $SRV_COST_US" %.1f) µs (measured) per request:"
say "    its mean latency under wrk is $GET_MEAN_US µs: instrumentation = $(calc "$HOPS_COST_US / $GET_MEAN_US * 100" %.2f) % (estimate), $(calc "2 * $SRV_COST_US / $GET_MEAN_US * 100" %.2f) % (measured) of it"
say "    its CPU per request, all processes (estimate: $CORES / $GET_RPS) = $ORDER_CPU_US µs: instrumentation = $(calc "$HOPS_COST_US / $ORDER_CPU_US * 100" %.1f) % of it"
say "    its CPU per request, gateway + orders only (measured) = $GET_SUT_CPU_US µs: instrumentation = $(calc "2 * $SRV_COST_US / $GET_SUT_CPU_US * 100" %.1f) % of it"
say "  (the mean latency under wrk includes the time a request waits for a core; the CPU shares are"
say "  the fairer comparison)."

section "Summary"
say "  load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) (the benchmark itself keeps about 2 busy)"
say "  start-up  cold (seeds the database) $COLD_S s, warm $WARM_S s"
say "  memory    $(calc "$RSS_100_KB / 1024" %.1f) MB RSS total ($(calc "$PSS_100_KB / 1024" %.1f) MB PSS) at 100 requests/s, $(calc "$TOTAL_RSS_KB / 1024" %.1f) MB ($(calc "$TOTAL_PSS_KB / 1024" %.1f) MB PSS) at 300, after ${MEMORY_S} s each; target 150 MB"
say "  order GET $(rps get) req/s, mean $(wrk_mean_ms "$WORK/wrk-get.txt") ms, p99 $(wrk_pct_ms "$WORK/wrk-get.txt" 99) ms (as seeded)"
if [ "$GET_KEY" != get ]; then
    say "  order GET $GET_RPS req/s, mean $GET_MEAN_MS ms, p99 $(wrk_pct_ms "$WORK/wrk-$GET_KEY.txt" 99) ms (after ANALYZE)"
fi
say "  order POST $(rps post) req/s, p99 $(wrk_pct_ms "$WORK/wrk-post.txt" 99) ms"
say "  instrumentation $OVERHEAD % of a trivial handler's throughput; per request per server: $COST_US µs CPU (estimate), $SRV_COST_US µs (measured)"
