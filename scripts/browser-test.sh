#!/usr/bin/env bash
# The control panel in a real browser: starts `observastack up` on free ports with a temporary
# data directory and runs web/tests/panel.test.mjs (playwright-core driving Debian's chromium):
# launch cpu-regression, see the symptom, get a hint, see an alert posted to the Alertmanager
# webhook in the feed, apply the fix through the Test tab, see the criteria turn green, complete,
# read the debrief; screenshots go to docs/screenshots/.
#
# Usage: scripts/browser-test.sh [--no-screenshots] [--keep]
#   OBSERVASTACK_BIN  the binary (default: built with cargo into $CARGO_TARGET_DIR or target/)
#   CHROMIUM          the browser (default /usr/bin/chromium)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SCREENSHOTS=1
KEEP=0
for arg in "$@"; do
  case "$arg" in
    --no-screenshots) SCREENSHOTS=0 ;;
    --keep) KEEP=1 ;;
    *) echo "unknown argument $arg (expected --no-screenshots or --keep)" >&2; exit 2 ;;
  esac
done

CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$CHROMIUM" ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "chromium is missing; install it with: sudo apt-get install -y chromium" >&2
    exit 1
  fi
fi
if ! command -v npm >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null
  else
    echo "npm is missing; install it with: sudo apt-get install -y npm" >&2
    exit 1
  fi
fi

(cd web/tests && npm ci --silent --no-audit --no-fund)

if [ -z "${OBSERVASTACK_BIN:-}" ]; then
  cargo build -q -p observastack
  OBSERVASTACK_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/observastack"
fi

# Ten free ports, from the kernel.
read -r -a PORTS <<<"$(python3 - <<'PY'
import socket
socks = [socket.socket() for _ in range(10)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
PY
)"
DATA=$(mktemp -d /tmp/observastack-browser.XXXXXX)
LOG="$DATA/up.out"
"$OBSERVASTACK_BIN" up --data-dir "$DATA" --rate 20 \
  --gateway-port "${PORTS[0]}" --orders-port "${PORTS[1]}" --gateway-admin-port "${PORTS[2]}" \
  --orders-admin-port "${PORTS[3]}" --worker-admin-port "${PORTS[4]}" --agent-port "${PORTS[5]}" \
  --loadgen-port "${PORTS[6]}" --prometheus-port "${PORTS[7]}" --otlp-port "${PORTS[8]}" \
  --control-port "${PORTS[9]}" >"$LOG" 2>&1 &
UP=$!
cleanup() {
  local status=$?
  if [ "$status" != 0 ]; then
    echo "--- the lab's last log lines (orchestrator, then up)" >&2
    tail -n 20 "$DATA/logs/orchestrator.log" 2>/dev/null | cut -c1-300 >&2 || true
    tail -n 20 "$LOG" >&2 || true
    echo "--- load: $(cat /proc/loadavg)" >&2
  fi
  kill -TERM "$UP" 2>/dev/null || true
  wait "$UP" 2>/dev/null || true
  # The lab made a PostgreSQL database of its own (named after its data directory): drop it.
  local db
  db=$(sed -n 's/^Using PostgreSQL at 127.0.0.1:5432, database \([a-z0-9_]*\) .*/\1/p' "$LOG" 2>/dev/null | head -n1)
  if [ -n "$db" ] && command -v psql >/dev/null; then
    PGOPTIONS=--client-min-messages=warning psql -h 127.0.0.1 -U "${PGUSER:-postgres}" -d postgres -qc \
      "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  fi
  if [ "$KEEP" = 1 ]; then echo "lab data kept in $DATA"; else rm -rf "$DATA"; fi
}
trap cleanup EXIT

URL="http://127.0.0.1:${PORTS[9]}"
for _ in $(seq 1 240); do
  if grep -q "ObservaStack is up" "$LOG" 2>/dev/null; then break; fi
  if ! kill -0 "$UP" 2>/dev/null; then cat "$LOG" >&2; echo "observastack up exited" >&2; exit 1; fi
  sleep 0.5
done
grep -q "ObservaStack is up" "$LOG" || { cat "$LOG" >&2; echo "the lab was not up in 120 s" >&2; exit 1; }

PANEL_URL="$URL" CHROMIUM="$CHROMIUM" SCREENSHOTS="$SCREENSHOTS" SCREENSHOT_DIR="$ROOT/docs/screenshots" \
  node web/tests/panel.test.mjs
