#!/usr/bin/env bash
# Load comparison: wrk against the origin directly, edge-proxy with every module on, and nginx
# configured equivalently (reverse proxy + limit_req + proxy_cache), all on loopback. Writes
# requests/s and p50/p99 latency, and the edge-proxy's ratios to nginx, into the "edge-proxy:
# load against nginx" section of docs/performance.md.
#
# nginx runs as its best operator would configure it (benches/nginx/nginx.conf): the cache
# lock only where responses are cacheable ("nginx"), and, as a second anchor, with no cache
# lock at all ("nginx, no cache lock"). The ratios compare the edge-proxy with the better of
# the two on each path.
#
#   benches/load.sh                 # 10 s per run, 2 threads, 50 connections
#   DURATION=5s CONNECTIONS=100 benches/load.sh
#   WRITE_DOCS=0 benches/load.sh    # print the table only
#
# Needs: wrk, nginx (Debian packages), python3, cargo. Every process it starts is stopped on
# exit, by pid; scratch files live in a temporary prefix.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-50}
WRITE_DOCS=${WRITE_DOCS:-1}
TARGET_DIR=${CARGO_TARGET_DIR:-target}

for tool in wrk nginx python3 cargo; do
  command -v "$tool" >/dev/null 2>&1 || { echo "load.sh: $tool not found (apt-get install -y wrk nginx)" >&2; exit 1; }
done

echo "building edge-proxy (release)..."
cargo build --release --example edge-proxy >/dev/null
EDGE="$TARGET_DIR/release/examples/edge-proxy"

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
EDGE_PORT=$(free_port)
ADMIN_PORT=$(free_port)

fill() { # template proxy-port [instance cache-lock]
  sed -e "s|@PREFIX@|$PREFIX|g" -e "s|@ORIGIN_PORT@|$ORIGIN_PORT|g" \
      -e "s|@PROXY_PORT@|$2|g" -e "s|@ADMIN_PORT@|$ADMIN_PORT|g" \
      -e "s|@INSTANCE@|${3:-nginx}|g" -e "s|@CACHE_LOCK@|${4:-on}|g" "$1"
}
fill benches/nginx/origin.conf "$NGINX_PORT" > "$PREFIX/origin.conf"
fill benches/nginx/nginx.conf "$NGINX_PORT" nginx on > "$PREFIX/nginx.conf"
fill benches/nginx/nginx.conf "$NGINX_NOLOCK_PORT" nginx-nolock off > "$PREFIX/nginx-nolock.conf"
fill benches/edge-proxy-load.toml "$EDGE_PORT" > "$PREFIX/edge-proxy.toml"
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

nginx -p "$PREFIX" -c "$PREFIX/origin.conf" -g 'daemon off;' 2>"$PREFIX/origin.stderr" &
PIDS+=($!)
wait_for "http://127.0.0.1:$ORIGIN_PORT/api"

nginx -p "$PREFIX" -c "$PREFIX/nginx.conf" -g 'daemon off;' 2>"$PREFIX/nginx.stderr" &
PIDS+=($!)
wait_for "http://127.0.0.1:$NGINX_PORT/api"

nginx -p "$PREFIX" -c "$PREFIX/nginx-nolock.conf" -g 'daemon off;' 2>"$PREFIX/nginx-nolock.stderr" &
PIDS+=($!)
wait_for "http://127.0.0.1:$NGINX_NOLOCK_PORT/api"

RUST_LOG=warn "$EDGE" --config "$PREFIX/edge-proxy.toml" >"$PREFIX/edge.log" 2>&1 &
PIDS+=($!)
wait_for "http://127.0.0.1:$EDGE_PORT/api"

RESULTS="$PREFIX/results.tsv"
: > "$RESULTS"
run() { # name port path
  local name=$1 port=$2 path=$3 out
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" "http://127.0.0.1:$port$path" >/dev/null
  out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "http://127.0.0.1:$port$path")
  echo "$out" | python3 -c '
import re, sys
name, path = sys.argv[1], sys.argv[2]
text = sys.stdin.read()
rps = re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)
p50 = re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1)
p99 = re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1)
m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
errors = re.search(r"Socket errors:.*", text)
print("\t".join([name, path, rps, p50, p99, m.group(1) if m else "0", errors.group(0) if errors else ""]))
' "$name" "$path" | tee -a "$RESULTS"
}

echo "measuring: ${DURATION} per run, ${THREADS} threads, ${CONNECTIONS} connections"
for path in /asset.css /api; do
  run "origin (nginx static, direct)" "$ORIGIN_PORT" "$path"
  run "edge-proxy (all modules)" "$EDGE_PORT" "$path"
  run "nginx (limit_req + proxy_cache, lock where cacheable)" "$NGINX_PORT" "$path"
  run "nginx (limit_req + proxy_cache, no cache lock)" "$NGINX_NOLOCK_PORT" "$path"
done

TABLE="$PREFIX/table.md"
python3 - "$RESULTS" "$DURATION" "$THREADS" "$CONNECTIONS" > "$TABLE" <<'EOF'
import sys, datetime, platform, os, subprocess
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1]) if line.strip()]
duration, threads, conns = sys.argv[2:5]
try:
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
except Exception:
    rustc = "rustc"
try:
    nginx = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip().replace("nginx version: ", "")
except Exception:
    nginx = "nginx"
print(f"Measured {datetime.date.today().isoformat()} with `benches/load.sh` (wrk, {threads} threads, "
      f"{conns} connections, {duration} per run after a warm-up; {os.cpu_count()} vCPU shared by wrk, "
      f"the proxy and the origin; {rustc}; {nginx}).")
print()
print("| target | path | requests/s | p50 | p99 | non-2xx |")
print("|---|---|---:|---:|---:|---:|")
for name, path, rps, p50, p99, non2xx, *_ in rows:
    print(f"| {name} | `{path}` | {float(rps):,.0f} | {p50} | {p99} | {non2xx} |")

# Ratios: edge-proxy over nginx on each path, against the better nginx (more requests/s).
# Above 1 means more requests/s, or a longer latency, than nginx.
UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}
def seconds(text):
    for unit in sorted(UNITS, key=len, reverse=True):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * UNITS[unit]
    return float(text)
print()
print("| path | edge-proxy ÷ nginx: requests/s | p50 | p99 | nginx compared |")
print("|---|---:|---:|---:|---|")
for path in dict.fromkeys(row[1] for row in rows):
    edge = [r for r in rows if r[1] == path and r[0].startswith("edge-proxy")]
    nginx = [r for r in rows if r[1] == path and r[0].startswith("nginx")]
    if not edge or not nginx:
        continue
    e = edge[0]
    n = max(nginx, key=lambda r: float(r[2]))
    print(f"| `{path}` | {float(e[2]) / float(n[2]):.2f}× | {seconds(e[3]) / seconds(n[3]):.2f}× "
          f"| {seconds(e[4]) / seconds(n[4]):.2f}× | {n[0]} |")
EOF
echo
cat "$TABLE"

if [ "$WRITE_DOCS" = "1" ]; then
  python3 - docs/performance.md "$TABLE" <<'EOF'
import sys, re
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
