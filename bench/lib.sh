# Shared helpers of the benchmark scripts (sourced by run.sh and telemetry.sh).

say() { printf '%s\n' "$*"; }
section() { printf '\n== %s ==\n' "$*"; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
# calc 'EXPRESSION' [printf format]: floating-point arithmetic with awk.
calc() { awk "BEGIN { printf \"${2:-%.2f}\", $1 }"; }

need_apt() { # need_apt COMMAND PACKAGE
    command -v "$1" >/dev/null 2>&1 && return 0
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "Installing $2 (missing)…"
        if [ -z "${APT_UPDATED:-}" ]; then apt-get update -qq; APT_UPDATED=1; fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
    else
        die "$1 is missing; install it with: sudo apt-get install -y $2"
    fi
}

stop_pid() { # stop_pid PID: SIGTERM, wait up to 30 s, then SIGKILL.
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 300); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null || true
}

finish_work() { # finish_work RC: removes $WORK after a success, keeps it (and says where) after a failure.
    if [ "$1" -eq 0 ]; then
        rm -rf "$WORK"
    else
        printf 'bench: failed (exit %s); logs kept in %s\n' "$1" "$WORK" >&2
    fi
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# free_block FIRST COUNT: prints the first base in FIRST, FIRST+COUNT+1, … (up to FIRST+990)
# whose COUNT consecutive ports are all free; fails when there is none.
free_block() {
    local first=$1 count=$2 base off ok
    for base in $(seq "$first" $((count + 1)) $((first + 990))); do
        ok=1
        for off in $(seq 0 $((count - 1))); do port_free $((base + off)) || { ok=0; break; }; done
        if [ "$ok" -eq 1 ]; then echo "$base"; return 0; fi
    done
    return 1
}
