#!/usr/bin/env bash
# ObservaStack soak: the whole lab under steady load, nothing injected, for a long time. Every
# minute it prints each process's resident set, the lab's RSS, PSS and USS, and what the users got in
# that minute (requests/s, errors, p99); at the end the growth over the last minutes, and the
# errors in all. See bench/README.md ("Soak"). Usage: bench/soak.sh (from any directory).
#
#   SOAK_MINUTES=30        how long the load runs
#   SOAK_RATE=300          requests/s of the load generator's order mix
#   SOAK_DB=postgres       postgres (a database observastack_soak, dropped and re-created) or sqlite
#   SOAK_GROWTH_MINUTES=20 the window the growth is measured over (the last N minutes)
#   SOAK_MAX_GROWTH_PCT=5  the growth of the lab's RSS allowed over that window
#   SOAK_MAX_RSS_MB=150    the lab's RSS allowed at the end
#
# Exits 1 when any request failed (an error, a timeout or an arrival dropped for lack of
# capacity, or a 5xx at the gateway), when the RSS grew more than allowed, or when it ends above
# the target; 0 otherwise. The figures are what this machine sustains; they assert nothing about
# another one.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
BIN="$ROOT/target/release/observastack"

MINUTES="${SOAK_MINUTES:-30}"
RATE="${SOAK_RATE:-300}"
DB_KIND="${SOAK_DB:-postgres}"
GROWTH_MINUTES="${SOAK_GROWTH_MINUTES:-20}"
MAX_GROWTH_PCT="${SOAK_MAX_GROWTH_PCT:-5}"
MAX_RSS_MB="${SOAK_MAX_RSS_MB:-150}"
PG_ADMIN_URL="${BENCH_PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
for n in "$MINUTES" "$RATE" "$GROWTH_MINUTES" "$MAX_GROWTH_PCT" "$MAX_RSS_MB"; do
    case "$n" in '' | *[!0-9]*) die "SOAK_* settings are whole numbers (got '$n')" ;; esac
done
[ "$GROWTH_MINUTES" -lt "$MINUTES" ] || GROWTH_MINUTES=$((MINUTES > 1 ? MINUTES - 1 : 1))

unset OTEL_EXPORTER_OTLP_ENDPOINT OBSERVASTACK_LOG OBSERVASTACK_ADMIN_TOKEN OBSERVASTACK_DATA_DIR DATABASE_URL

need_apt jq jq
need_apt curl curl
command -v cargo >/dev/null 2>&1 || die "cargo is missing (https://rustup.rs)"

WORK="$(mktemp -d -t observastack-soak.XXXXXX)"
DATA="$WORK/data"
UP_PID=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    [ -n "$UP_PID" ] && stop_pid "$UP_PID"
    finish_work "$rc"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

case "$DB_KIND" in
    postgres)
        need_apt psql postgresql-client
        DB_NAME=observastack_soak
        export PGOPTIONS="--client-min-messages=warning"
        psql "$PG_ADMIN_URL" -v ON_ERROR_STOP=1 -qc "DROP DATABASE IF EXISTS \"$DB_NAME\" WITH (FORCE)" >/dev/null
        psql "$PG_ADMIN_URL" -v ON_ERROR_STOP=1 -qc "CREATE DATABASE \"$DB_NAME\"" >/dev/null
        DB_URL="${PG_ADMIN_URL%/*}/$DB_NAME"
        ;;
    sqlite) DB_URL="sqlite://$DATA/soak.db?mode=rwc" ;;
    *) die "SOAK_DB is postgres or sqlite (got '$DB_KIND')" ;;
esac

BASE=$(free_block 18000 10) || die "no block of 10 free ports between 18000 and 18999"
GATEWAY_ADMIN="http://127.0.0.1:$((BASE + 2))"
LOADGEN="http://127.0.0.1:$((BASE + 6))"
UP_ARGS=(--data-dir "$DATA" --database-url "$DB_URL" --rate "$RATE"
    --gateway-port "$BASE" --orders-port $((BASE + 1))
    --gateway-admin-port $((BASE + 2)) --orders-admin-port $((BASE + 3))
    --worker-admin-port $((BASE + 4)) --agent-port $((BASE + 5)) --loadgen-port $((BASE + 6))
    --prometheus-port $((BASE + 7)) --otlp-port $((BASE + 8)) --control-port $((BASE + 9)))

section "Build (release)"
(cd "$ROOT" && cargo build --release -p observastack)
say "Machine: $(nproc) cores, $(uname -srm); ports $BASE..$((BASE + 9)); database $DB_KIND; work dir $WORK"
say "Load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"

section "Start"
mkdir -p "$DATA"
"$BIN" up "${UP_ARGS[@]}" >"$WORK/up.log" 2>&1 &
UP_PID=$!
for _ in $(seq 1200); do
    grep -q "Press Ctrl-C to stop." "$WORK/up.log" 2>/dev/null && break
    kill -0 "$UP_PID" 2>/dev/null || { cat "$WORK/up.log" >&2; die "up exited before it was ready"; }
    sleep 0.1
done
grep -q "Press Ctrl-C to stop." "$WORK/up.log" || die "the lab was not ready in 120 s"
STATUS=$("$BIN" status --json --data-dir "$DATA")
mapfile -t NAMES < <(jq -r '.components[] | select(.pid != null) | .name' <<<"$STATUS")
mapfile -t PIDS < <(jq -r '.components[] | select(.pid != null) | .pid' <<<"$STATUS")
NAMES+=(up)
PIDS+=("$UP_PID")
say "Lab up; $RATE requests/s of the order mix for $MINUTES min; one row per minute."

# Counters summed over their series, at the gateway and the load generator.
gateway_5xx() {
    curl -fsS "$GATEWAY_ADMIN/metrics" | awk '/^http_server_requests_total\{/ && /status="5/ { s += $NF } END { printf "%d", s }'
}
loadgen_total() { # loadgen_total OUTCOME-REGEX
    curl -fsS "$LOADGEN/metrics" | awk -v re="$1" '/^loadgen_requests_total\{/ && $0 ~ re { s += $NF } END { printf "%d", s }'
}
loadgen_dropped() {
    curl -fsS "$LOADGEN/metrics" | awk '/^loadgen_dropped_total/ { s += $NF } END { printf "%d", s }'
}
kb() { awk -v k="$2" '$1 == k":" { print $2; exit }' "$1" 2>/dev/null || echo 0; }

header=$(printf '%6s' min)
for n in "${NAMES[@]}"; do header+=$(printf ' %9s' "$n"); done
header+=$(printf ' %9s %9s %9s %8s %7s %9s' "RSS MB" "PSS MB" "USS MB" "req/s" "errors" "p99 ms")
say "$header"
CSV="$WORK/soak.csv"
(IFS=,; echo "minute,${NAMES[*]},rss_total_kb,pss_total_kb,uss_total_kb,rate,errors,p99_ms") >"$CSV"
declare -a TOTALS
FIVEXX_START=$(gateway_5xx)
START_OK=$(loadgen_total 'outcome="success"')
START_BAD=$(loadgen_total 'outcome="(error|timeout)"')
START_DROPPED=$(loadgen_dropped)
for minute in $(seq 1 "$MINUTES"); do
    sleep 60
    row=$(printf '%6d' "$minute")
    csv="$minute"
    total=0
    pss_total=0
    uss_total=0
    for i in "${!PIDS[@]}"; do
        pid=${PIDS[$i]}
        kill -0 "$pid" 2>/dev/null || die "${NAMES[$i]} (pid $pid) is gone at minute $minute"
        rss=$(kb "/proc/$pid/status" VmRSS)
        pss=$(kb "/proc/$pid/smaps_rollup" Pss)
        total=$((total + rss))
        pss_total=$((pss_total + ${pss:-0}))
        # USS: the pages only this process holds (the executable's pages, shared by all eight,
        # are in every RSS and split between them in PSS).
        uss=$(( $(kb "/proc/$pid/smaps_rollup" Private_Clean) + $(kb "/proc/$pid/smaps_rollup" Private_Dirty) ))
        uss_total=$((uss_total + uss))
        row+=$(printf ' %9s' "$(calc "$rss / 1024" %.1f)")
        csv+=",$rss"
    done
    TOTALS[minute]=$total
    stats=$(curl -fsS "$LOADGEN/stats")
    rate=$(jq -r '.windows["60s"].overall.rate_per_s' <<<"$stats")
    bad=$(jq -r '.windows["60s"].overall | .error + .timeout + .dropped' <<<"$stats")
    p99=$(jq -r '.windows["60s"].overall.p99_ms // 0' <<<"$stats")
    row+=$(printf ' %9s %9s %9s %8s %7s %9s' "$(calc "$total / 1024" %.1f)" "$(calc "$pss_total / 1024" %.1f)" "$(calc "$uss_total / 1024" %.1f)" \
        "$(calc "$rate" %.1f)" "$bad" "$(calc "$p99" %.1f)")
    say "$row"
    echo "$csv,$total,$pss_total,$uss_total,$rate,$bad,$p99" >>"$CSV"
done

section "Result"
ok=$(( $(loadgen_total 'outcome="success"') - START_OK ))
bad=$(( $(loadgen_total 'outcome="(error|timeout)"') - START_BAD ))
dropped=$(( $(loadgen_dropped) - START_DROPPED ))
fivexx=$(( $(gateway_5xx) - FIVEXX_START ))
from=$((MINUTES - GROWTH_MINUTES))
[ "$from" -ge 1 ] || from=1
first=${TOTALS[$from]}
last=${TOTALS[$MINUTES]}
growth=$(calc "($last - $first) * 100 / $first" %.1f)
say "requests      $((ok + bad)) answered ($ok succeeded, $bad failed or timed out), $dropped arrivals dropped"
say "gateway 5xx   $fivexx"
say "error ratio   $(calc "($bad + $dropped) / ($ok + $bad + $dropped + 0.000001)" %.5f)"
say "RSS           $(calc "$first / 1024" %.1f) MB at minute $from, $(calc "$last / 1024" %.1f) MB at minute $MINUTES: growth $growth% over the last $((MINUTES - from)) min (limit $MAX_GROWTH_PCT%)"
say "per minute    $CSV (copied to bench/results/ if that directory exists)"
[ -d "$ROOT/bench/results" ] && cp "$CSV" "$ROOT/bench/results/soak-$DB_KIND-$RATE-$(date +%Y%m%dT%H%M).csv"
verdict=0
if [ $((bad + dropped + fivexx)) -gt 0 ]; then say "FAIL: requests failed with nothing injected"; verdict=1; fi
if awk "BEGIN { exit !($growth > $MAX_GROWTH_PCT) }"; then say "FAIL: the lab's RSS grew $growth%"; verdict=1; fi
if [ $((last / 1024)) -gt "$MAX_RSS_MB" ]; then say "FAIL: the lab holds $(calc "$last / 1024" %.1f) MB, over $MAX_RSS_MB MB"; verdict=1; fi
[ "$verdict" -eq 0 ] && say "PASS: no failed request, growth $growth%, $(calc "$last / 1024" %.1f) MB"
# Keep the work directory (up's log, the CSV) on a failure; finish_work removes it on success.
exit "$verdict"
