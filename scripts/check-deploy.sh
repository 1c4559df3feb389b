#!/usr/bin/env bash
# The full stack's files, checked without Docker (what CI can run):
#   - Prometheus: `promtool check config`, `promtool check rules`, `promtool test rules`, and
#     every alert covered by a test where it fires and one where it does not;
#   - Alertmanager: `amtool check-config` of every deploy/alertmanager/*.yml (Debian's
#     prometheus-alertmanager); each webhook's host is a
#     service of every profile that runs the configuration, and its credentials file is mounted;
#   - compose.yaml: parses; profiles core, observability and full; a memory limit on every
#     container, the total of each profile written in docs/deploy.md; every file it references
#     (bind mounts, build context, Dockerfile, paths in commands and environment) exists; no
#     dependency on a service of another profile (unless `required: false`, and then on a
#     service of one of its profiles); no host port or network alias taken twice in a profile;
#     Prometheus's and Grafana's upstream hosts are services of the stack;
#   - Grafana: data sources, and every dashboard valid JSON with a unique uid, unique panel ids,
#     known data sources and a Loki logs panel;
#   - metric names: every name the dashboards, the rules and scenarios/*.yaml query is extracted
#     and must be documented in docs/telemetry.md. The list is written to
#     $CHECK_DEPLOY_OUT/metric-names.txt (default target/check-deploy/), one name a line, and
#     metric-uses.tsv (name, file), so a test can check them against a running lab; with
#     CHECK_DEPLOY_PROMETHEUS_URL set (e.g. http://127.0.0.1:9090 under `observastack up`), the
#     names that lab does not have yet are listed too (counters appear at their first increment,
#     so this is a report, not a failure).
#
# Usage: scripts/check-deploy.sh          (from anywhere; idempotent; non-zero exit on any failure)
# Needs promtool (Debian's `prometheus` package), amtool (`prometheus-alertmanager`) and python3
# with PyYAML (`python3-yaml`): run as
# root, it installs what is missing with apt-get; otherwise it prints the command and exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${CHECK_DEPLOY_OUT:-$ROOT/target/check-deploy}

say() { printf '\n==> %s\n' "$*"; }
fail() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Installs Debian packages when run as root, else says how and stops.
need_packages() {
  local why=$1
  shift
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing $* ($why)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
  else
    echo "error: $why needs the Debian package(s): $*" >&2
    echo "Install with:  sudo apt-get install -y --no-install-recommends $*" >&2
    exit 1
  fi
}

# --- tools ---------------------------------------------------------------------------------------
command -v promtool >/dev/null || need_packages "promtool (Prometheus config and rule checks)" prometheus
command -v promtool >/dev/null || fail "promtool is still missing after installing prometheus"
command -v amtool >/dev/null || need_packages "amtool (Alertmanager config checks)" prometheus-alertmanager
command -v amtool >/dev/null || fail "amtool is still missing after installing prometheus-alertmanager"
command -v python3 >/dev/null || need_packages "the compose and dashboard checks" python3 python3-yaml
python3 -c 'import yaml' 2>/dev/null || need_packages "the compose and dashboard checks (PyYAML)" python3-yaml
python3 -c 'import yaml' 2>/dev/null || fail "python3 cannot import yaml after installing python3-yaml"

# --- Prometheus ----------------------------------------------------------------------------------
say "promtool $(promtool --version 2>&1 | head -n1 | awk '{print $3}'): config, rules, rule tests"
shopt -s nullglob
rules=(deploy/prometheus/rules/*.yml)
tests=(deploy/prometheus/tests/*.yml)
shopt -u nullglob
[ ${#rules[@]} -gt 0 ] || fail "no rule files in deploy/prometheus/rules/"
[ ${#tests[@]} -gt 0 ] || fail "no rule tests in deploy/prometheus/tests/"
# rule_files in prometheus.yml are relative to it: this checks they resolve, and the rules too.
promtool check config deploy/prometheus/prometheus.yml
promtool check rules "${rules[@]}"
promtool test rules "${tests[@]}"

# --- Alertmanager --------------------------------------------------------------------------------
say "Alertmanager configurations"
shopt -s nullglob
alertmanager_configs=(deploy/alertmanager/*.yml)
shopt -u nullglob
[ ${#alertmanager_configs[@]} -gt 0 ] || fail "no configurations in deploy/alertmanager/"
amtool check-config "${alertmanager_configs[@]}"

# --- compose, Grafana, metric names --------------------------------------------------------------
say "compose.yaml, Grafana provisioning and dashboards, metric names"
mkdir -p "$OUT"
python3 - "$ROOT" "$OUT" <<'PY'
import glob, json, os, re, sys, urllib.request

import yaml

root, out = sys.argv[1], sys.argv[2]
os.chdir(root)
errors = []


def err(msg):
    errors.append(msg)
    print(f"  FAIL {msg}")


def ok(msg):
    print(f"  ok   {msg}")


def load_yaml(path):
    with open(path) as f:
        return yaml.safe_load(f)


# ---------------------------------------------------------------- compose.yaml
PROFILES = ["core", "observability", "full"]
compose = load_yaml("compose.yaml")
services = compose.get("services") or {}
if not services:
    err("compose.yaml: no services")


def profiles_of(svc):
    return set(services[svc].get("profiles") or PROFILES)


declared = set()
for name, svc in services.items():
    declared |= set(svc.get("profiles") or [])
for p in PROFILES:
    if p not in declared:
        err(f"compose.yaml: no service in profile {p!r}")
for p in declared - set(PROFILES):
    err(f"compose.yaml: unexpected profile {p!r} (expected {PROFILES})")

UNITS = {"b": 1 / 2**20, "k": 1 / 1024, "kb": 1 / 1024, "m": 1, "mb": 1, "g": 1024, "gb": 1024}


def mebibytes(value):
    if isinstance(value, int):
        return value / 2**20
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(value))
    if not m or m.group(2).lower() not in UNITS | {"": 0}:
        raise ValueError(f"unreadable memory size {value!r}")
    factor = UNITS.get(m.group(2).lower(), 1 / 2**20)
    return float(m.group(1)) * factor


memory = {}
for name, svc in services.items():
    limit = svc.get("mem_limit") or (((svc.get("deploy") or {}).get("resources") or {}).get("limits") or {}).get("memory")
    if limit is None:
        err(f"compose.yaml: service {name} has no mem_limit (or deploy.resources.limits.memory)")
        continue
    try:
        memory[name] = mebibytes(limit)
    except ValueError as e:
        err(f"compose.yaml: service {name}: {e}")

with open("docs/deploy.md") as f:
    deploy_doc = f.read()
for p in PROFILES:
    members = sorted(n for n in services if p in profiles_of(n))
    total = sum(memory.get(n, 0) for n in members)
    text = f"{total:g} MiB"
    line = f"profile {p}: {len(members)} containers, memory limits total {text} ({', '.join(members)})"
    if text in deploy_doc:
        ok(line)
    else:
        err(f"{line}; docs/deploy.md does not state the total {text!r}")


# Files the compose file references.
def bind_mounts(svc):
    mounts = []
    for v in svc.get("volumes") or []:
        if isinstance(v, str):
            parts = v.split(":")
            src, dst = parts[0], parts[1] if len(parts) > 1 else None
            if src.startswith((".", "/")) and dst:
                mounts.append((src, dst))
        elif isinstance(v, dict) and v.get("type") == "bind":
            mounts.append((v["source"], v["target"]))
    return mounts


def strings_in(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for v in value:
            yield from strings_in(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from strings_in(v)


checked = 0
for name, svc in services.items():
    build = svc.get("build")
    if build:
        ctx = build if isinstance(build, str) else build.get("context", ".")
        if not os.path.isdir(ctx):
            err(f"compose.yaml: {name}: build context {ctx} is not a directory")
        dockerfile = os.path.join(ctx, "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile"))
        if not os.path.isfile(dockerfile):
            err(f"compose.yaml: {name}: {dockerfile} does not exist")
        checked += 2
    for env_file in ([svc["env_file"]] if isinstance(svc.get("env_file"), str) else svc.get("env_file") or []):
        path = env_file if isinstance(env_file, str) else env_file.get("path")
        if not os.path.exists(path):
            err(f"compose.yaml: {name}: env_file {path} does not exist")
        checked += 1
    mounts = bind_mounts(svc)
    for src, dst in mounts:
        if not os.path.exists(src):
            err(f"compose.yaml: {name}: bind mount source {src} does not exist")
        checked += 1
    # Absolute paths in the command and the environment that fall inside a bind mount.
    for text in list(strings_in(svc.get("command"))) + list(strings_in(svc.get("entrypoint"))) + list(strings_in(svc.get("environment"))):
        for path in re.findall(r"(?:^|[=\s])(/[\w./-]+)", text):
            for src, dst in mounts:
                if path == dst or path.startswith(dst.rstrip("/") + "/"):
                    host = os.path.normpath(os.path.join(src, os.path.relpath(path, dst)))
                    if not os.path.exists(host):
                        err(f"compose.yaml: {name}: {path} is {host} in the repository, which does not exist")
                    checked += 1
for top in ("configs", "secrets"):
    for key, item in (compose.get(top) or {}).items():
        if isinstance(item, dict) and item.get("file"):
            if not os.path.exists(item["file"]):
                err(f"compose.yaml: {top}.{key}: {item['file']} does not exist")
            checked += 1
ok(f"{checked} file references of compose.yaml exist")

# Dependencies: a service's dependencies are enabled whenever it is; an optional one
# (`required: false`, e.g. Prometheus on each profile's Alertmanager) in at least one of its
# profiles.
for name, svc in services.items():
    deps = svc.get("depends_on") or []
    for dep in deps if isinstance(deps, list) else deps.keys():
        optional = isinstance(deps, dict) and (deps[dep] or {}).get("required") is False
        if dep not in services:
            err(f"compose.yaml: {name} depends on unknown service {dep}")
        elif optional and not profiles_of(name) & profiles_of(dep):
            err(f"compose.yaml: {name} depends (optionally) on {dep}, which is in none of its profiles")
        elif not optional and not profiles_of(name) <= profiles_of(dep):
            missing = sorted(profiles_of(name) - profiles_of(dep))
            err(f"compose.yaml: {name} depends on {dep}, which is not in profile(s) {missing}")

# Host ports and network names unique within each profile; every name a host can use.
names_in = {}
for p in PROFILES:
    members = [n for n in services if p in profiles_of(n)]
    ports, names = {}, {}
    for n in members:
        for port in services[n].get("ports") or []:
            spec = str(port if not isinstance(port, dict) else port.get("published"))
            host_port = spec.rsplit(":", 2)[-2] if spec.count(":") >= 1 else spec
            if host_port in ports:
                err(f"compose.yaml: profile {p}: host port {host_port} published by {ports[host_port]} and {n}")
            ports[host_port] = n
        nets = services[n].get("networks") or {}
        aliases = []
        if isinstance(nets, dict):
            for net in nets.values():
                aliases += (net or {}).get("aliases") or []
        for alias in [n] + aliases:
            if alias in names and names[alias] != n:
                err(f"compose.yaml: profile {p}: the name {alias} belongs to {names[alias]} and {n}")
            names[alias] = n
    names_in[p] = names
ok("dependencies, host ports and network names are consistent in every profile")

# Observastack subcommands: the flags exist (from the binary when it is built).
binary = os.environ.get("OBSERVASTACK_BIN") or next((b for b in ("target/debug/observastack", "target/release/observastack") if os.access(b, os.X_OK)), None)
if binary:
    import subprocess

    helps = {}
    for name, svc in services.items():
        cmd = svc.get("command")
        if not isinstance(cmd, list) or "observastack" not in str(svc.get("image", "")):
            continue
        sub = cmd[0]
        if sub not in helps:
            helps[sub] = subprocess.run([binary, sub, "--help"], capture_output=True, text=True).stdout
        for arg in cmd[1:]:
            flag = arg.split("=", 1)[0]
            if flag.startswith("--") and not re.search(rf"(^|\s){re.escape(flag)}[\s=<]", helps[sub], re.M):
                err(f"compose.yaml: {name}: `observastack {sub}` has no flag {flag}")
    ok(f"every flag of the observastack commands exists ({binary} --help)")
else:
    print("  skip flags of the observastack commands (no target/*/observastack built)")

# ---------------------------------------------------------------- Prometheus and Grafana upstreams
stack_profiles = ["observability", "full"]


def host_known(host, where):
    if host in ("localhost", "127.0.0.1"):
        return
    for p in stack_profiles:
        if host not in names_in[p]:
            err(f"{where}: host {host} is not a service or alias in compose profile {p}")


prom = load_yaml("deploy/prometheus/prometheus.yml")
for job in prom.get("scrape_configs") or []:
    for sc in job.get("static_configs") or []:
        for target in sc.get("targets") or []:
            host_known(target.rsplit(":", 1)[0], f"prometheus.yml job {job['job_name']}")
for am in (prom.get("alerting") or {}).get("alertmanagers") or []:
    for sc in am.get("static_configs") or []:
        for target in sc.get("targets") or []:
            host_known(target.rsplit(":", 1)[0], "prometheus.yml alerting")
ok("every Prometheus scrape target and Alertmanager is a service of the stack")

# Alertmanager configurations: each webhook's host is a name in every profile of a service that
# runs the configuration, and a credentials file it reads is mounted in that service.
top_configs = compose.get("configs") or {}
webhooks = 0
for name, svc in services.items():
    for src, dst in bind_mounts(svc):
        if not (os.path.normpath(src).startswith("deploy/alertmanager/") and src.endswith(".yml")):
            continue
        mounted = {d for _, d in bind_mounts(svc)}
        for c in svc.get("configs") or []:
            if isinstance(c, dict) and c.get("source") in top_configs:
                mounted.add(c.get("target") or f"/{c['source']}")
        for receiver in load_yaml(src).get("receivers") or []:
            for hook in receiver.get("webhook_configs") or []:
                webhooks += 1
                m = re.match(r"https?://([^:/]+)", hook.get("url", ""))
                for p in sorted(profiles_of(name)):
                    if m and m.group(1) not in ("localhost", "127.0.0.1") and m.group(1) not in names_in[p]:
                        err(f"{src} (service {name}): webhook host {m.group(1)} is not a service or alias in compose profile {p}")
                auth = ((hook.get("http_config") or {}).get("authorization") or {})
                if auth.get("credentials_file") and auth["credentials_file"] not in mounted:
                    err(f"{src} (service {name}): credentials_file {auth['credentials_file']} is not mounted (bind mount or config)")
ok(f"{webhooks} Alertmanager webhook(s) reach a service of their profile, with their credentials mounted")

datasource_uids = {}
for path in sorted(glob.glob("deploy/grafana/provisioning/datasources/*.y*ml")):
    for ds in load_yaml(path).get("datasources") or []:
        datasource_uids[ds["uid"]] = ds["type"]
        m = re.match(r"https?://([^:/]+)", ds.get("url", ""))
        if m:
            host_known(m.group(1), f"{path} data source {ds['name']}")
        for dest in (ds.get("jsonData") or {}).get("exemplarTraceIdDestinations") or []:
            if dest.get("datasourceUid") and dest["datasourceUid"] not in [d["uid"] for d in load_yaml(path)["datasources"]]:
                err(f"{path}: exemplar destination {dest['datasourceUid']} is not a provisioned data source")
for need in ("prometheus", "loki", "tempo"):
    if need not in datasource_uids.values():
        err(f"Grafana: no {need} data source provisioned")
ok(f"Grafana data sources: {', '.join(f'{u} ({t})' for u, t in sorted(datasource_uids.items()))}")
for path in sorted(glob.glob("deploy/grafana/provisioning/dashboards/*.y*ml")):
    for prov in load_yaml(path).get("providers") or []:
        target = (prov.get("options") or {}).get("path")
        mapped = [os.path.join(src, os.path.relpath(target, dst)) for src, dst in bind_mounts(services["grafana"])
                  if target == dst or target.startswith(dst.rstrip("/") + "/")]
        if not mapped or not os.path.isdir(mapped[0]):
            err(f"{path}: provider path {target} is not a bind-mounted directory of the grafana service")

# ---------------------------------------------------------------- dashboards
dashboards = sorted(glob.glob("deploy/grafana/dashboards/*.json"))
if not dashboards:
    err("no dashboards in deploy/grafana/dashboards/")
uids = {}
queries = []  # (file, PromQL expression)


def all_panels(panels):
    for p in panels or []:
        yield p
        yield from all_panels(p.get("panels"))


def ds_type(ref):
    if isinstance(ref, dict):
        return ref.get("type") or datasource_uids.get(ref.get("uid"))
    return None


for path in dashboards:
    try:
        with open(path) as f:
            dash = json.load(f)
    except json.JSONDecodeError as e:
        err(f"{path}: invalid JSON: {e}")
        continue
    uid = dash.get("uid")
    if not uid or len(uid) > 40:
        err(f"{path}: missing uid, or longer than 40 characters")
    elif uid in uids:
        err(f"{path}: uid {uid} already used by {uids[uid]}")
    uids[uid] = path
    ids, logs_panels = {}, 0
    for panel in all_panels(dash.get("panels")):
        pid = panel.get("id")
        if pid is None:
            err(f"{path}: panel {panel.get('title')!r} has no id")
        elif pid in ids:
            err(f"{path}: panel id {pid} used by {ids[pid]!r} and {panel.get('title')!r}")
        ids[pid] = panel.get("title")
        pds = panel.get("datasource")
        for t in panel.get("targets") or []:
            tds = t.get("datasource") or pds
            kind = ds_type(tds)
            if isinstance(tds, dict) and tds.get("uid") not in datasource_uids and not str(tds.get("uid", "")).startswith("$"):
                err(f"{path}: panel {panel.get('title')!r} uses unknown data source {tds.get('uid')}")
            if kind == "prometheus" and t.get("expr"):
                queries.append((path, t["expr"]))
        if panel.get("type") == "logs" and ds_type(pds) == "loki":
            logs_panels += 1
    for var in (dash.get("templating") or {}).get("list") or []:
        q = var.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        if var.get("type") == "query" and ds_type(var.get("datasource")) == "prometheus" and q:
            m = re.match(r"\s*label_values\((.*),\s*\w+\s*\)\s*$", q)
            if m:
                queries.append((path, m.group(1)))
            elif not q.strip().startswith(("label_values(", "label_names(", "metrics(")):
                queries.append((path, re.sub(r"^\s*query_result\((.*)\)\s*$", r"\1", q)))
    if logs_panels == 0:
        err(f"{path}: no logs panel on the Loki data source")
    ok(f"{path}: uid {uid}, {len(ids)} panels with unique ids, {logs_panels} logs panel(s)")

# ---------------------------------------------------------------- rules and their tests
recorded, alerts = set(), []
for path in sorted(glob.glob("deploy/prometheus/rules/*.yml")):
    for group in load_yaml(path).get("groups") or []:
        for rule in group.get("rules") or []:
            if "record" in rule:
                recorded.add(rule["record"])
            else:
                alerts.append(rule["alert"])
                for key in ("severity",):
                    if key not in (rule.get("labels") or {}):
                        err(f"{path}: alert {rule['alert']} has no {key} label")
                for key in ("summary", "description"):
                    if key not in (rule.get("annotations") or {}):
                        err(f"{path}: alert {rule['alert']} has no {key} annotation")
                if "for" not in rule:
                    err(f"{path}: alert {rule['alert']} has no `for`")
            queries.append((path, rule["expr"]))
fires, quiet = set(), set()
for path in sorted(glob.glob("deploy/prometheus/tests/*.yml")):
    for test in load_yaml(path).get("tests") or []:
        for case in test.get("alert_rule_test") or []:
            (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
for alert in alerts:
    if alert not in fires:
        err(f"alert {alert}: no promtool test where it fires")
    if alert not in quiet:
        err(f"alert {alert}: no promtool test where it does not fire")
ok(f"{len(alerts)} alerts, each tested firing and not firing; {len(recorded)} recording rules")

# ---------------------------------------------------------------- scenarios
def walk_queries(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "query" and isinstance(v, str):
                yield v
            else:
                yield from walk_queries(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk_queries(v)


for path in sorted(glob.glob("scenarios/*.yaml")):
    try:
        found = list(walk_queries(load_yaml(path)))
    except yaml.YAMLError:
        with open(path) as f:
            found = [m.group(1).strip() for m in re.finditer(r"^\s*-?\s*query:\s*(.+)$", f.read(), re.M)]
    queries += [(path, q) for q in found]

# ---------------------------------------------------------------- metric names
AGGREGATORS_AND_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or",
    "unless", "atan2", "inf", "nan", "Inf", "NaN", "start", "end", "sum", "min", "max", "avg",
    "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values", "group",
}
IDENT = r"[a-zA-Z_:][a-zA-Z0-9_:]*"


def metric_names(expr):
    e = re.sub(r"\$\{?\w+(?::\w+)?\}?", " ", expr)  # Grafana variables
    names = set()
    for op, val in re.findall(r'__name__\s*(=~|=)\s*"([^"]*)"', e):
        names |= {a for a in (val.split("|") if op == "=~" else [val]) if re.fullmatch(IDENT, a)}
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', e)
    e = re.sub(r"'(?:[^'\\]|\\.)*'", "''", e)
    e = re.sub(r"\{[^}]*\}", "{}", e)
    e = re.sub(r"\[[^\]]*\]", "[]", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    for m in re.finditer(rf"(?<![\w:.])({IDENT})(?![\w:])(?!\s*\()", e):
        if m.group(1) not in AGGREGATORS_AND_KEYWORDS:
            names.add(m.group(1))
    return names


# Documented: every `name` of docs/telemetry.md, with the table's shorthand `a_b_c`, `_d`
# meaning a_b_d, and histograms' _bucket/_sum/_count.
with open("docs/telemetry.md") as f:
    telemetry_doc = f.read()
documented = set()
for line in telemetry_doc.splitlines():
    tokens = re.findall(r"`([a-zA-Z_:][a-zA-Z0-9_:]*)`", line)
    first = None
    for tok in tokens:
        if tok.startswith("_") and first:
            documented.add(first.rsplit("_", 1)[0] + tok)
        else:
            documented.add(tok)
            first = first or tok
PROMETHEUS_ONLY = {"ALERTS", "ALERTS_FOR_STATE"}


def is_documented(name):
    base = re.sub(r"_(bucket|sum|count)$", "", name)
    return name in documented or base in documented


uses = {}
for path, expr in queries:
    for name in metric_names(expr):
        uses.setdefault(name, set()).add(path)
lab_names = sorted(n for n in uses if n not in recorded and n not in PROMETHEUS_ONLY)
undocumented = [n for n in lab_names if not is_documented(n)]
for name in undocumented:
    err(f"metric {name} (used in {', '.join(sorted(uses[name]))}) is not in docs/telemetry.md")
with open(os.path.join(out, "metric-names.txt"), "w") as f:
    f.write("".join(n + "\n" for n in lab_names))
with open(os.path.join(out, "metric-uses.tsv"), "w") as f:
    for n in lab_names:
        for p in sorted(uses[n]):
            f.write(f"{n}\t{p}\n")
others = sorted((set(uses) & (recorded | PROMETHEUS_ONLY)))
(err if undocumented else ok)(f"{len(queries)} queries use {len(lab_names)} lab metric names, {len(lab_names) - len(undocumented)} documented in docs/telemetry.md; also {', '.join(others) or 'nothing else'} (recorded or Prometheus's own)")
print(f"       written to {os.path.relpath(os.path.join(out, 'metric-names.txt'))}:")
print("       " + " ".join(lab_names))

lab = os.environ.get("CHECK_DEPLOY_PROMETHEUS_URL")
if lab:
    try:
        with urllib.request.urlopen(lab.rstrip("/") + "/api/v1/label/__name__/values", timeout=10) as r:
            present = set(json.load(r)["data"])
        absent = [n for n in lab_names if n not in present]
        print(f"  note {len(lab_names) - len(absent)} of {len(lab_names)} names are in the lab at {lab}"
              + (f"; not (yet) there: {' '.join(absent)}" if absent else ""))
    except Exception as e:  # a report, not a check
        print(f"  note could not read the names of the lab at {lab}: {e}")

# ---------------------------------------------------------------- the agent's spec
with open("deploy/observastack/agent.json") as f:
    spec = json.load(f)
names = sorted(p["name"] for p in spec.get("processes", []))
if names != ["gateway", "orders", "worker"]:
    err(f"deploy/observastack/agent.json: processes {names}, expected gateway, orders, worker")

if errors:
    print(f"\n{len(errors)} problem(s) found", file=sys.stderr)
    sys.exit(1)
PY

say "deploy checks passed"
