#!/usr/bin/env bash
# Load comparison (issue 13): wrk against the origin directly, nginx configured as its best
# operator would, and edge-proxy — every module on, and each layer alone over bare forwarding —
# under both runtime models, all on loopback. For every target and path it reports requests/s,
# p50/p99 latency and the proxy's CPU time per request, as the median of ROUNDS interleaved
# rounds with the spread (min–max) shown, then the ratios of edge-proxy to the best nginx and
# the cost of each layer alone. With WRITE_DOCS=1 the tables replace the text between the
# `<!-- load.sh:begin -->` and `<!-- load.sh:end -->` markers in docs/performance.md.
#
# CPU per request: utime + stime of the proxy's process(es) from /proc/<pid>/stat, read just
# before and just after each measured wrk run (the warm-up is not counted), divided by the
# requests wrk completed in that run. For nginx, the master and every worker are summed; for
# edge-proxy, its one process (every thread, per-core workers included).
#
# nginx (benches/nginx/nginx.conf) runs with the cache lock only where responses are cacheable
# ("nginx") and, as a second anchor, with no cache lock at all ("nginx, no cache lock"); the
# ratios compare edge-proxy with the better of the two (more requests/s) on each path.
#
# edge-proxy targets are config variants of benches/edge-proxy-load.toml: the layer variants
# set `[modules.<name>] enabled`, the runtime models `[server] runtime`:
#   off        every module off: forwarding only (ingress, request id, panic catching remain)
#   ratelimit  forwarding + the rate limiter
#   botscore   forwarding + bot scoring
#   cache      forwarding + the cache
#   all        every module on (the configuration compared with nginx)
#
#   benches/load.sh                         # 3 rounds of 10 s per run, 2 threads, 64 connections
#   DURATION=2s ROUNDS=1 WRITE_DOCS=0 benches/load.sh   # a smoke run: print the tables only
#   VARIANTS="off all" MODELS=per_core benches/load.sh  # a subset of the edge-proxy targets
#   PROFILE=docs/flamegraphs VARIANTS=all ROUNDS=1 WRITE_DOCS=0 benches/load.sh
#                                           # + a perf profile (flame graph SVG and folded stacks)
#                                           # of every "all" edge-proxy run, first round; needs
#                                           # perf (Debian's linux-perf) and inferno
#
# Environment: DURATION (10s), WARMUP (2s), ROUNDS (3), THREADS (2), CONNECTIONS (64),
# VARIANTS ("off ratelimit botscore cache all"), MODELS ("multi_thread per_core"), PATHS
# ("/asset.css /api"), WRITE_DOCS (1).
#
# Needs: wrk, nginx (Debian packages), python3, cargo, Linux /proc. Every process it starts is
# stopped on exit, by pid; scratch files live in a temporary prefix.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-64}
VARIANTS=${VARIANTS:-off ratelimit botscore cache all}
MODELS=${MODELS:-multi_thread per_core}
# The edge-proxy binary's allocator: `mimalloc` (the binary's default) and/or `system` (glibc,
# the root package's `system-allocator` feature). Each one past the first adds every variant ×
# model again, labelled "<model>, <allocator>".
ALLOCATORS=${ALLOCATORS:-mimalloc}
PATHS=${PATHS:-/asset.css /api}
WRITE_DOCS=${WRITE_DOCS:-1}
TARGET_DIR=${CARGO_TARGET_DIR:-target}

for tool in wrk nginx python3 cargo; do
  command -v "$tool" >/dev/null 2>&1 || { echo "load.sh: $tool not found (apt-get install -y wrk nginx)" >&2; exit 1; }
done
[ -r /proc/self/stat ] || { echo "load.sh: needs Linux /proc for CPU time" >&2; exit 1; }
case "$ROUNDS" in ''|*[!0-9]*|0) echo "load.sh: ROUNDS must be a positive integer" >&2; exit 1 ;; esac
for variant in $VARIANTS; do
  case "$variant" in off|ratelimit|botscore|cache|all) ;; *) echo "load.sh: unknown variant $variant" >&2; exit 1 ;; esac
done
for model in $MODELS; do
  case "$model" in multi_thread|per_core) ;; *) echo "load.sh: unknown model $model" >&2; exit 1 ;; esac
done
for alloc in $ALLOCATORS; do
  case "$alloc" in system|mimalloc) ;; *) echo "load.sh: unknown allocator $alloc" >&2; exit 1 ;; esac
done

# One binary per allocator, copied aside (the builds share one output path).
for alloc in $ALLOCATORS; do
  echo "building edge-proxy (release, $alloc allocator)..."
  if [ "$alloc" = system ]; then
    cargo build --release --example edge-proxy --features system-allocator >/dev/null
  else
    cargo build --release --example edge-proxy >/dev/null
  fi
  cp "$TARGET_DIR/release/examples/edge-proxy" "$TARGET_DIR/release/examples/edge-proxy-$alloc"
done

PREFIX=$(mktemp -d /tmp/ravelin-load.XXXXXX)
chmod 755 "$PREFIX"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]:-}"; do
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]:-}"; do
    [ -n "$pid" ] && wait "$pid" 2>/dev/null || true
  done
  rm -rf "$PREFIX"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
ORIGIN_PORT=$(free_port)
NGINX_PORT=$(free_port)
NGINX_NOLOCK_PORT=$(free_port)

fill() { # template proxy-port [instance cache-lock admin-port]
  sed -e "s|@PREFIX@|$PREFIX|g" -e "s|@ORIGIN_PORT@|$ORIGIN_PORT|g" \
      -e "s|@PROXY_PORT@|$2|g" -e "s|@ADMIN_PORT@|${5:-0}|g" \
      -e "s|@INSTANCE@|${3:-nginx}|g" -e "s|@CACHE_LOCK@|${4:-on}|g" "$1"
}
fill benches/nginx/origin.conf "$NGINX_PORT" > "$PREFIX/origin.conf"
fill benches/nginx/nginx.conf "$NGINX_PORT" nginx on > "$PREFIX/nginx.conf"
fill benches/nginx/nginx.conf "$NGINX_NOLOCK_PORT" nginx-nolock off > "$PREFIX/nginx-nolock.conf"
# nginx workers may run as an unprivileged user: let them write their scratch directories.
for d in origin-client origin-proxy origin-fastcgi origin-uwsgi origin-scgi; do
  mkdir -p "$PREFIX/$d"
  chmod 777 "$PREFIX/$d"
done
for instance in nginx nginx-nolock; do
  for d in cache client proxy fastcgi uwsgi scgi; do
    mkdir -p "$PREFIX/$instance-$d"
    chmod 777 "$PREFIX/$instance-$d"
  done
done

# An edge-proxy config variant: the load config with `[server] runtime` and every module's
# `[modules.<name>] enabled` set for the variant.
edge_config() { # variant model port admin-port
  fill benches/edge-proxy-load.toml "$3" nginx on "$4" | python3 -c '
import re, sys
variant, model = sys.argv[1], sys.argv[2]
text = sys.stdin.read()
# Drop the template'"'"'s own [modules.*] tables; they are written below for the variant.
text = re.sub(r"(?m)^\[modules\.[a-z]+\]\n(?:(?!\[).*\n?)*", "", text)
text = text.replace("[server]\n", f"[server]\nruntime = \"{model}\"\n", 1)
on = {"off": set(), "all": {"ratelimit", "botscore", "cache"}}.get(variant, {variant})
for name in ("ratelimit", "botscore", "cache"):
    text += f"\n[modules.{name}]\nenabled = {str(name in on).lower()}\n"
sys.stdout.write(text)
' "$1" "$2"
}

wait_for() {
  for _ in $(seq 1 100); do
    if python3 - "$1" <<'EOF' 2>/dev/null; then return 0; fi
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=1).read()
EOF
    sleep 0.1
  done
  echo "load.sh: $1 did not come up" >&2
  exit 1
}

# targets.tsv: name, kind (edge | nginx | origin), variant, model, port, pid
TARGETS="$PREFIX/targets.tsv"
: > "$TARGETS"

nginx -p "$PREFIX" -c "$PREFIX/origin.conf" -g 'daemon off;' 2>"$PREFIX/origin.stderr" &
PIDS+=($!)
printf '%s\t%s\t%s\t%s\t%s\t%s\n' "origin (nginx static, direct)" origin - - "$ORIGIN_PORT" "$!" >> "$TARGETS"
wait_for "http://127.0.0.1:$ORIGIN_PORT/api"

nginx -p "$PREFIX" -c "$PREFIX/nginx.conf" -g 'daemon off;' 2>"$PREFIX/nginx.stderr" &
PIDS+=($!)
printf '%s\t%s\t%s\t%s\t%s\t%s\n' "nginx (limit_req + proxy_cache, lock where cacheable)" nginx - - "$NGINX_PORT" "$!" >> "$TARGETS"
wait_for "http://127.0.0.1:$NGINX_PORT/api"

nginx -p "$PREFIX" -c "$PREFIX/nginx-nolock.conf" -g 'daemon off;' 2>"$PREFIX/nginx-nolock.stderr" &
PIDS+=($!)
printf '%s\t%s\t%s\t%s\t%s\t%s\n' "nginx (limit_req + proxy_cache, no cache lock)" nginx - - "$NGINX_NOLOCK_PORT" "$!" >> "$TARGETS"
wait_for "http://127.0.0.1:$NGINX_NOLOCK_PORT/api"

for alloc in $ALLOCATORS; do
  EDGE="$TARGET_DIR/release/examples/edge-proxy-$alloc"
  for model in $MODELS; do
    label="$model"
    [ "$alloc" = mimalloc ] || label="$model, $alloc"
    for variant in $VARIANTS; do
      port=$(free_port)
      admin=$(free_port)
      stem="edge-$variant-$model-$alloc"
      edge_config "$variant" "$model" "$port" "$admin" > "$PREFIX/$stem.toml"
      RUST_LOG=warn "$EDGE" --config "$PREFIX/$stem.toml" >"$PREFIX/$stem.log" 2>&1 &
      PIDS+=($!)
      printf '%s\t%s\t%s\t%s\t%s\t%s\n' "edge-proxy ($variant, $label)" edge "$variant" "$label" "$port" "$!" >> "$TARGETS"
      wait_for "http://127.0.0.1:$port/api"
    done
  done
done

RESULTS="$PREFIX/results.tsv"
echo "measuring: $ROUNDS round(s) of ${DURATION} per run (after ${WARMUP} of warm-up), ${THREADS} threads, ${CONNECTIONS} connections"
python3 - "$TARGETS" "$RESULTS" "$ROUNDS" "$DURATION" "$WARMUP" "$THREADS" "$CONNECTIONS" "$PATHS" <<'EOF'
import os, re, signal, subprocess, sys

targets_path, results_path, rounds, duration, warmup, threads, conns, paths = sys.argv[1:9]
rounds = int(rounds)
paths = paths.split()
targets = [line.rstrip("\n").split("\t") for line in open(targets_path) if line.strip()]
PROFILE = os.environ.get("PROFILE", "")
TICK = os.sysconf("SC_CLK_TCK")

def pids_of(kind, pid):
    """The process and, for nginx, its workers (children of the master)."""
    pids = [int(pid)]
    if kind in ("nginx", "origin"):
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    pids += [int(p) for p in f.read().split()]
            except OSError:
                pass
    return pids

def cpu_seconds(kind, pid):
    """(user, system) CPU seconds of the process(es)."""
    user = system = 0
    for p in pids_of(kind, pid):
        with open(f"/proc/{p}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        # After the command name: state is field 3, utime field 14, stime field 15.
        user += int(fields[11])
        system += int(fields[12])
    return user / TICK, system / TICK

UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}
def seconds(text):
    for unit in sorted(UNITS, key=len, reverse=True):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * UNITS[unit]
    return float(text)

def wrk(port, path, length, latency):
    args = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{length}"] + (["--latency"] if latency else [])
    return subprocess.run(args + [f"http://127.0.0.1:{port}{path}"], capture_output=True,
                          text=True, check=True).stdout

with open(results_path, "w") as out:
    for round_ in range(rounds):
        # Interleaved: every target once per path per round, the order rotated each round so no
        # target always runs first (or right after the heaviest one).
        shift = round_ % len(targets)
        order = targets[shift:] + targets[:shift]
        for path in paths:
            for name, kind, variant, model, port, pid in order:
                wrk(port, path, warmup, False)
                perf = None
                if PROFILE and kind == "edge" and variant == "all" and round_ == 0:
                    # A CPU profile of the measured run (first round only): perf samples the
                    # proxy's threads with DWARF call stacks while wrk runs.
                    stem = os.path.join(PROFILE, f"edge-all-{model.replace(', ', '-')}{path.replace('/', '-').replace('.', '-')}")
                    perf = subprocess.Popen(["perf", "record", "-q", "-F", "499", "--call-graph", "dwarf,16384",
                                             "-p", pid, "-o", stem + ".perf.data"],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                user_before, system_before = cpu_seconds(kind, pid)
                text = wrk(port, path, duration, True)
                user_after, system_after = cpu_seconds(kind, pid)
                user, system = user_after - user_before, system_after - system_before
                cpu = user + system
                if perf is not None:
                    perf.send_signal(signal.SIGINT)
                    perf.wait()
                    script = subprocess.run(["perf", "script", "-i", stem + ".perf.data"],
                                            capture_output=True, text=True).stdout
                    folded = subprocess.run(["inferno-collapse-perf"], input=script,
                                            capture_output=True, text=True).stdout
                    with open(stem + ".folded", "w") as f:
                        f.write(folded)
                    with open(stem + ".svg", "w") as f:
                        subprocess.run(["inferno-flamegraph", "--title", f"edge-proxy, every module on, {model}, {path}"],
                                       input=folded, stdout=f, text=True)
                    os.remove(stem + ".perf.data")
                requests = int(re.search(r"(\d+) requests in", text).group(1))
                rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
                p50 = seconds(re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1))
                p99 = seconds(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1))
                m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
                non2xx = int(m.group(1)) if m else 0
                m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
                errors = sum(int(g) for g in m.groups()) if m else 0
                cpu_us = cpu / requests * 1e6 if requests else float("nan")
                user_us = user / requests * 1e6 if requests else float("nan")
                system_us = system / requests * 1e6 if requests else float("nan")
                row = [str(round_ + 1), name, kind, variant, model, path, f"{rps:.1f}",
                       f"{p50 * 1e6:.1f}", f"{p99 * 1e6:.1f}", f"{cpu_us:.2f}", str(requests),
                       str(non2xx), str(errors), f"{user_us:.2f}", f"{system_us:.2f}"]
                out.write("\t".join(row) + "\n")
                out.flush()
                print(f"  round {round_ + 1}  {path:<11} {name:<55} {rps:>10,.0f} req/s  "
                      f"{cpu_us:6.1f} µs CPU/req ({user_us:.1f} user, {system_us:.1f} system)  p50 {p50 * 1e3:.2f} ms  p99 {p99 * 1e3:.2f} ms"
                      + (f"  non-2xx {non2xx}" if non2xx else "") + (f"  socket errors {errors}" if errors else ""),
                      flush=True)
EOF

TABLE="$PREFIX/table.md"
python3 - "$RESULTS" "$ROUNDS" "$DURATION" "$THREADS" "$CONNECTIONS" > "$TABLE" <<'EOF'
import datetime, os, statistics, subprocess, sys

results, rounds, duration, threads, conns = sys.argv[1:6]
rows = [line.rstrip("\n").split("\t") for line in open(results) if line.strip()]

def version(cmd, stream):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True)
        return (out.stdout if stream == "out" else out.stderr).strip()
    except OSError:
        return cmd[0]
rustc = version(["rustc", "--version"], "out")
nginx = version(["nginx", "-v"], "err").replace("nginx version: ", "")

# (name, path) -> the per-round measurements, in first-seen order.
runs = {}
meta = {}
for (rnd, name, kind, variant, model, path, rps, p50, p99, cpu, requests, non2xx, errors,
     user, system) in rows:
    key = (name, path)
    runs.setdefault(key, []).append(dict(rps=float(rps), p50=float(p50), p99=float(p99),
                                         cpu=float(cpu), non2xx=int(non2xx), errors=int(errors),
                                         user=float(user), system=float(system)))
    meta[key] = dict(kind=kind, variant=variant, model=model)

def med(key, field):
    return statistics.median(r[field] for r in runs[key])

def spread(key, field, fmt):
    values = [r[field] for r in runs[key]]
    if len(values) == 1:
        return fmt(values[0])
    return f"{fmt(statistics.median(values))} ({fmt(min(values))}–{fmt(max(values))})"

def lat(us):
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.0f} µs"

n = int(rounds)
print(f"Measured {datetime.date.today().isoformat()} with `benches/load.sh` (wrk, {threads} threads, "
      f"{conns} connections, {duration} per run after a warm-up; {'median of ' + str(n) + ' interleaved rounds, (min–max)' if n > 1 else 'one round'}; "
      f"{os.cpu_count()} vCPU shared by wrk, the proxies and the origin; {rustc}; {nginx}).")
print()
print("CPU per request is the proxy's own user + system time (nginx: master and workers) over the "
      "measured run, divided by the requests completed; the user and system (kernel) parts are "
      "shown apart (medians).")
print()
print("| target | path | requests/s | CPU µs/request | user, system µs | p50 | p99 | non-2xx, socket errors |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
for key in runs:
    name, path = key
    bad = sum(r["non2xx"] for r in runs[key])
    errs = sum(r["errors"] for r in runs[key])
    print(f"| {name} | `{path}` | {spread(key, 'rps', lambda v: f'{v:,.0f}')} "
          f"| {spread(key, 'cpu', lambda v: f'{v:.1f}')} "
          f"| {med(key, 'user'):.1f}, {med(key, 'system'):.1f} | {spread(key, 'p50', lat)} "
          f"| {spread(key, 'p99', lat)} | {bad}, {errs} |")

paths = list(dict.fromkeys(path for _, path in runs))
# Ratios: edge-proxy with every module on (each runtime model) over the better nginx (more
# requests/s, by median) on each path. Requests/s above 1 is better; CPU and latency below 1.
edges_all = [k for k in runs if meta[k]["kind"] == "edge" and meta[k]["variant"] == "all"]
if edges_all:
    print()
    print("edge-proxy (every module on) ÷ the better nginx on each path (medians; requests/s above 1 "
          "and CPU, p50, p99 below 1 favour edge-proxy):")
    print()
    print("| path | runtime | requests/s | CPU/request | user CPU | system CPU | p50 | p99 | nginx compared |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for path in paths:
        anchors = [k for k in runs if k[1] == path and meta[k]["kind"] == "nginx"]
        if not anchors:
            continue
        best = max(anchors, key=lambda k: med(k, "rps"))
        for key in (k for k in edges_all if k[1] == path):
            ratio = lambda f: med(key, f) / med(best, f) if med(best, f) else float("nan")
            print(f"| `{path}` | {meta[key]['model']} | {ratio('rps'):.2f}× | {ratio('cpu'):.2f}× "
                  f"| {ratio('user'):.2f}× | {ratio('system'):.2f}× "
                  f"| {ratio('p50'):.2f}× | {ratio('p99'):.2f}× | {best[0]} |")

# The cost of each layer alone: CPU per request of each variant minus forwarding only, per
# runtime model and path (medians).
models = list(dict.fromkeys(meta[k]["model"] for k in runs if meta[k]["kind"] == "edge"))
variants = list(dict.fromkeys(meta[k]["variant"] for k in runs if meta[k]["kind"] == "edge"))
if "off" in variants and len(variants) > 1:
    order = [v for v in ("off", "ratelimit", "botscore", "cache", "all") if v in variants]
    label = {"off": "forwarding only", "ratelimit": "+ rate limit", "botscore": "+ bot score",
             "cache": "+ cache", "all": "all modules"}
    print()
    print("The cost of each layer alone: edge-proxy CPU µs per request (median), and over "
          "forwarding only (every module off) in parentheses:")
    print()
    print("| path | runtime | " + " | ".join(label[v] for v in order) + " |")
    print("|---|---|" + "---:|" * len(order))
    for path in paths:
        for model in models:
            def key(v):
                return (f"edge-proxy ({v}, {model})", path)
            if key("off") not in runs:
                continue
            base = med(key("off"), "cpu")
            cells = []
            for v in order:
                if key(v) not in runs:
                    cells.append("—")
                    continue
                c = med(key(v), "cpu")
                cells.append(f"{c:.1f}" if v == "off" else f"{c:.1f} ({c - base:+.1f})")
            print(f"| `{path}` | {model} | " + " | ".join(cells) + " |")
EOF
echo
cat "$TABLE"

if [ "$WRITE_DOCS" = "1" ]; then
  python3 - docs/performance.md "$TABLE" <<'EOF'
import sys
doc_path, table_path = sys.argv[1], sys.argv[2]
doc = open(doc_path).read()
table = open(table_path).read().strip()
head = "## edge-proxy: load against nginx"
start = doc.index(head)
body_start = start + len(head)
nxt = doc.find("\n## ", body_start)
end = len(doc) if nxt == -1 else nxt
section = doc[body_start:end]
marker_a, marker_b = "<!-- load.sh:begin -->", "<!-- load.sh:end -->"
if marker_a in section and marker_b in section:
    a = section.index(marker_a) + len(marker_a)
    b = section.index(marker_b)
    section = section[:a] + "\n" + table + "\n" + section[b:]
else:
    section = "\n\n" + marker_a + "\n" + table + "\n" + marker_b + "\n"
doc = doc[:body_start] + section + doc[end:]
open(doc_path, "w").write(doc)
print(f"updated {doc_path}")
EOF
fi
