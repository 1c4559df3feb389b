#!/usr/bin/env bash
# The test command: provides the services the tests need, then runs every check CI runs.
# Usage: scripts/test.sh            (from anywhere inside the repository)
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> %s\n' "$*"; }

# --- PostgreSQL: the integration tests run against a real server (DATABASE_URL or 127.0.0.1:5432).
pg_url="${OBSERVASTACK_TEST_PG:-postgres://postgres@127.0.0.1:5432/postgres}"
pg_ready() { command -v pg_isready >/dev/null && pg_isready -q -d "$pg_url"; }
if ! pg_ready; then
  say "PostgreSQL does not answer at $pg_url; trying to start or install it"
  if [ "$(id -u)" = 0 ]; then
    if ! command -v pg_ctlcluster >/dev/null; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    fi
    ver=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n1)
    [ -n "$ver" ] && pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
    # Trust auth on loopback, as the tests expect (a fresh Debian cluster uses scram for TCP).
    for _ in $(seq 1 20); do pg_ready && break; sleep 0.5; done
  fi
  if ! pg_ready; then
    echo "error: the tests need PostgreSQL at $pg_url (user postgres, trust auth)." >&2
    echo "Start one with:  sudo apt-get install -y postgresql && sudo pg_ctlcluster \$(ls /etc/postgresql) main start" >&2
    echo "or point OBSERVASTACK_TEST_PG at a server you have." >&2
    exit 1
  fi
fi
export OBSERVASTACK_TEST_PG="$pg_url"

# --- Prometheus: the differential test runs the real one beside the embedded backend.
if ! command -v prometheus >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing Prometheus (Debian package) for the differential test"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null
  else
    echo "error: the differential test needs Prometheus. Install it with:  sudo apt-get install -y prometheus" >&2
    echo "or set OBSERVASTACK_PROMETHEUS to a prometheus binary." >&2
    exit 1
  fi
fi

# --- The fuzz targets: built in the background at the lowest CPU priority while the checks
# below run (a niced compile takes only the CPU they leave idle, so their timings are not
# disturbed), then run for a bounded time at the end.
fuzz_log=$(mktemp)
nice -n 19 scripts/fuzz.sh build >"$fuzz_log" 2>&1 &
fuzz_build=$!
trap 'rm -f "$fuzz_log"; kill "$fuzz_build" 2>/dev/null || true' EXIT

say "rustfmt and clippy"
rustup component add rustfmt clippy >/dev/null 2>&1 || true
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

say "tests"
log=$(mktemp)
trap 'rm -f "$log" "$fuzz_log"; kill "$fuzz_build" 2>/dev/null || true' EXIT
cargo test --workspace --locked 2>&1 | tee "$log"
# One closing line for the whole workspace (cargo prints one per test binary, the last of
# which is often an empty doc-test run).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
     END { printf "\nworkspace: %d passed, %d failed\n", p, f }' "$log"

say "scenario verification"
# Every scenario of the library, end to end, each in its own lab: the steady state holds, the
# criteria fail after the fault, the reference fix makes them pass.
cargo build --locked -p observastack
target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
# Three labs at a time: each scenario's lab is light enough, and each gets its own database.
"$target_dir/debug/observastack" scenario verify --all --jobs "${OBSERVASTACK_VERIFY_JOBS:-3}"

say "deploy files (compose, Prometheus rules with promtool, Grafana dashboards)"
OBSERVASTACK_BIN="$target_dir/debug/observastack" scripts/check-deploy.sh

say "control panel in a browser"
# Playwright (playwright-core from npm) driving Debian's chromium against `observastack up`.
OBSERVASTACK_BIN="$target_dir/debug/observastack" scripts/browser-test.sh --no-screenshots

say "fuzzing (${OBSERVASTACK_FUZZ_SECONDS:-15} s per target)"
# Coverage-guided, with AddressSanitizer: PromQL parse and evaluation, scrape bodies, OTLP,
# scenario files. Any crash, stack overflow, hang or memory blow-up fails CI with its input.
if ! wait "$fuzz_build"; then
  cat "$fuzz_log" >&2
  echo "error: the fuzz targets did not build" >&2
  exit 1
fi
scripts/fuzz.sh "${OBSERVASTACK_FUZZ_SECONDS:-15}"
