#!/usr/bin/env bash
# A local sdsim cluster on loopback: Redis, PostgreSQL and HAProxy from Debian's packages, and
# N sdsim processes per role, each with its own generated config file, log and PID file in the
# state directory.
#
#   deploy/cluster.sh up [--gateways 2] [--auth 2] [--projects 2] [--simulations 2]
#                        [--debug | --bin PATH] [--base-port 18000] [--state DIR]
#                        [--gateway-with-auth] [--tls] [--set section.key=value]...
#   deploy/cluster.sh status [--state DIR]
#   deploy/cluster.sh restart NAME [--state DIR]
#   deploy/cluster.sh down [--state DIR]
#
# Ports from --base-port B: HAProxy (the entry point) B, its stats B+1 (/stats, /metrics),
# Redis B+2, PostgreSQL B+3; sdsim process k (0, 1, ...) gets B+10+3k (HTTP: the API on
# gateways, /health and /metrics on every process), B+11+3k (its role's gRPC) and B+12+3k (its
# role's HTTP). `restart NAME` (gateway-1, project-2, ...) stops that one sdsim process if it still
# runs (SIGTERM: it drains) and starts it again with the same config file, binary and --set
# options, waiting until it is ready; a killed instance comes back this way. `down` stops exactly the processes `up` recorded (PID and program checked), and
# nothing else. Every gateway gets every auth, project and simulation instance's address
# (gateway.auth_service = "a,b", ...): the mesh client balances over them, and the Redis
# registry replaces the lists with what it finds. The gateways run the gateway role only,
# verifying tokens with the keys they fetch from the auth instances; --gateway-with-auth runs
# the auth role in each gateway instead. --set goes to every sdsim
# process.
# --tls: a CA made with openssl in $state/tls signs one certificate for the service processes
# (auth, project, simulation: every listener speaks TLS, and their gRPC requires a client
# certificate from the CA: mutual TLS) and one client certificate the gateways present;
# HAProxy still reaches the gateways over plain HTTP.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
command="${1:-}"
[ $# -gt 0 ] && shift
target=""
if [ "$command" = restart ] && [ $# -gt 0 ] && [[ "$1" != --* ]]; then target="$1"; shift; fi
gateways=2 auth=2 projects=2 simulations=2 base=18000
state="${SDSIM_CLUSTER_STATE:-$repo/.cluster}"
bin=""
profile=release
gateway_roles='["gateway"]'
tls=false
sets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --gateways) gateways="$2"; shift 2 ;;
    --auth) auth="$2"; shift 2 ;;
    --projects) projects="$2"; shift 2 ;;
    --simulations) simulations="$2"; shift 2 ;;
    --base-port) base="$2"; shift 2 ;;
    --state) state="$2"; shift 2 ;;
    --debug) profile=debug; shift ;;
    --bin) bin="$2"; shift 2 ;;
    --gateway-with-auth) gateway_roles='["gateway", "auth"]'; shift ;;
    --tls) tls=true; shift ;;
    --set) sets+=(--set "$2"); shift 2 ;;
    *) echo "cluster.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
for n in "$gateways" "$auth" "$projects" "$simulations" "$base"; do
  [[ "$n" =~ ^[0-9]+$ ]] || { echo "cluster.sh: not a number: $n" >&2; exit 2; }
done
[ "$gateways" -ge 1 ] && [ "$projects" -ge 1 ] && [ "$simulations" -ge 1 ] ||
  { echo "cluster.sh: --gateways, --projects and --simulations must be at least 1" >&2; exit 2; }
[ "$gateway_roles" = '["gateway", "auth"]' ] || [ "$auth" -ge 1 ] ||
  { echo "cluster.sh: gateways without the auth role need an --auth instance (or --gateway-with-auth)" >&2; exit 2; }

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
# PostgreSQL refuses to run as root: as root, its programs run as the postgres account.
as_postgres() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
pg_bin() { echo "$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)/$1"; }

install_missing() {
  local missing=()
  command -v redis-server >/dev/null || missing+=(redis-server)
  ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
  command -v haproxy >/dev/null || missing+=(haproxy)
  command -v curl >/dev/null || missing+=(curl)
  if $tls; then command -v openssl >/dev/null || missing+=(openssl); fi
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]} (Debian packages)"
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    # The packages start system-wide instances on the default ports; the cluster runs its own.
    for service in redis-server postgresql haproxy; do
      sudo_if_needed service "$service" stop >/dev/null 2>&1 || true
    done
  fi
}

# Records a started process: "pid name program" in $state/pids.
record() { echo "$1 $2 $3" >>"$state/pids"; }

wait_for() { # what, seconds, command...
  local what="$1" seconds="$2"; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      echo "cluster.sh: $what not ready within ${seconds}s (logs in $state)" >&2
      return 1
    fi
    sleep 0.1
  done
}

# /health/ready on port $1 answers 200; over TLS when $2 is "https".
ready() {
  if [ "${2:-http}" = https ]; then
    curl -fsS -o /dev/null --cacert "$state/tls/ca.pem" "https://127.0.0.1:$1/health/ready"
  else
    curl -fsS -o /dev/null "http://127.0.0.1:$1/health/ready"
  fi
}

# Waits until process $1 is ready (/health/ready on port $2 over $3); exits the script with
# the end of its log when the process is gone (a zombie counts as gone: it exited).
wait_started() {
  local name="$1" pid run deadline=$((SECONDS + 120))
  pid="$(awk -v n="$name" '$2 == n { print $1 }' "$state/pids")"
  until ready "$2" "$3" >/dev/null 2>&1; do
    run="$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null || true)"
    if [ -z "$run" ] || [ "$run" = Z ]; then
      echo "cluster.sh: $name exited at start; the end of $state/$name.log:" >&2
      tail -5 "$state/$name.log" >&2
      exit 1
    fi
    if [ $SECONDS -ge $deadline ]; then
      echo "cluster.sh: $name not ready within 120s (log: $state/$name.log)" >&2
      exit 1
    fi
    sleep 0.1
  done
}

# The CA, the service processes' certificate (127.0.0.1 as an IP SAN, which the internal
# client checks by default) and the gateways' client certificate, in $state/tls.
make_certificates() {
  local d="$state/tls" name
  mkdir -p "$d"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
    -keyout "$d/ca.key" -out "$d/ca.pem" -subj "/CN=sdsim cluster CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  for name in server client; do
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
      -keyout "$d/$name.key" -out "$d/$name.csr" -subj "/CN=sdsim $name" 2>/dev/null
    if [ "$name" = server ]; then
      printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >"$d/$name.ext"
    else
      printf 'extendedKeyUsage=clientAuth\n' >"$d/$name.ext"
    fi
    openssl x509 -req -in "$d/$name.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
      -days 365 -extfile "$d/$name.ext" -out "$d/$name.pem" 2>/dev/null
  done
  chmod 600 "$d"/*.key
}

# One sdsim process: name, role list (TOML), HTTP, gRPC and role-HTTP ports.
start_sdsim() {
  local name="$1" roles="$2" http="$3" grpc="$4" role_http="$5"
  local cfg="$state/$name.toml" section
  {
    echo "roles = $roles"
    echo "[gateway]"
    echo "listen = \"127.0.0.1:$http\""
    if [[ "$roles" == *'"gateway"'* ]]; then
      echo "service_token = \"$token\""
      if [[ "$roles" != *'"auth"'* ]]; then
        echo "auth_service = \"$(IFS=,; echo "${auth_addrs[*]}")\""
      fi
      echo "project_service = \"$(IFS=,; echo "${project_addrs[*]}")\""
      echo "simulation_service = \"$(IFS=,; echo "${simulation_addrs[*]}")\""
    elif [[ "$roles" == *'"simulation"'* ]]; then
      # A simulation instance forwards a live change to the instance running the run.
      echo "service_token = \"$token\""
    fi
    # The service token is accepted everywhere (it names the gateways as callers); each role
    # run here gets the listeners.
    echo "[auth]"
    echo "tokens = [{ token = \"$token\", user = \"gateway\", roles = [\"service\"] }]"
    for section in auth project simulation; do
      if [[ "$roles" == *"\"$section\""* ]]; then
        [ "$section" = auth ] || echo "[$section]"
        echo "grpc_listen = \"127.0.0.1:$grpc\""
        echo "http_listen = \"127.0.0.1:$role_http\""
      fi
    done
    if $tls; then
      if [[ "$roles" == *'"gateway"'* ]]; then
        echo "[grpc]"
        echo "client_tls_ca = \"$state/tls/ca.pem\""
        echo "client_cert = \"$state/tls/client.pem\""
        echo "client_key = \"$state/tls/client.key\""
      else
        echo "[tls]"
        echo "cert = \"$state/tls/server.pem\""
        echo "key = \"$state/tls/server.key\""
        echo "[grpc]"
        echo "client_ca = \"$state/tls/ca.pem\""
      fi
    fi
    echo "[storage]"
    echo "url = \"$pg_url\""
    echo "[redis]"
    echo "url = \"redis://127.0.0.1:$redis_port/0\""
    echo "[instance]"
    echo "id = \"$name\""
  } >"$cfg"
  launch "$name"
  local scheme=http
  if $tls && [[ "$roles" != *'"gateway"'* ]]; then scheme=https; fi
  echo "$name http=127.0.0.1:$http grpc=127.0.0.1:$grpc $scheme" >>"$state/instances"
}

# Starts sdsim process $1 from its config file, appending to its log, and records its pid.
launch() {
  local name="$1"
  setsid "$bin" --config "$state/$name.toml" "${sets[@]}" serve >>"$state/$name.log" 2>&1 </dev/null &
  record $! "$name" "$(basename "$bin")"
}

up() {
  trap 'echo "cluster.sh: up failed; deploy/cluster.sh down --state $state stops what started" >&2' ERR
  if [ -s "$state/pids" ]; then
    echo "cluster.sh: $state already holds a cluster; run down first" >&2
    exit 1
  fi
  if [ -z "$bin" ]; then
    bin="${CARGO_TARGET_DIR:-$repo/target}/$profile/sdsim"
  fi
  [ -x "$bin" ] || { echo "cluster.sh: no binary at $bin (cargo build $([ $profile = release ] && echo --release) -p sdsim-server)" >&2; exit 1; }
  install_missing
  mkdir -p "$state"
  state="$(cd "$state" && pwd)"
  : >"$state/instances"
  if $tls; then make_certificates; fi
  token="$(head -c 24 /dev/urandom | base64 | tr -d '/+=')"
  # What `restart` needs to start a process again exactly as `up` did: the binary, then the
  # --set options, one argument per line.
  { echo "$bin"; [ ${#sets[@]} -eq 0 ] || printf '%s\n' "${sets[@]}"; } >"$state/launch"
  echo "$token" >"$state/service_token"
  lb_port=$base stats_port=$((base + 1)) redis_port=$((base + 2)) pg_port=$((base + 3))

  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$state" --logfile "$state/redis.log" --daemonize yes --pidfile "$state/redis.pid"
  wait_for "redis" 10 test -s "$state/redis.pid"
  record "$(cat "$state/redis.pid")" redis redis-server
  wait_for "redis" 10 redis-cli -p "$redis_port" ping

  mkdir -p "$state/pg"
  [ "$(id -u)" -eq 0 ] && chown postgres: "$state/pg"
  as_postgres "$(pg_bin initdb)" -A trust -U postgres --no-sync -D "$state/pg/data" >"$state/pg/initdb.log"
  as_postgres "$(pg_bin pg_ctl)" -D "$state/pg/data" -l "$state/pg/postgres.log" -w \
    -o "-p $pg_port -h 127.0.0.1 -k $state/pg -c max_connections=400 -c fsync=off" start >/dev/null
  record "$(head -1 "$state/pg/data/postmaster.pid")" postgres postgres
  as_postgres "$(pg_bin createdb)" -h 127.0.0.1 -p "$pg_port" -U postgres sdsim
  pg_url="postgres://postgres@127.0.0.1:$pg_port/sdsim"
  # Once, before the instances start, so they do not race to apply migrations.
  "$bin" migrate --set "storage.url=$pg_url" >"$state/migrate.log" 2>&1

  local k=0 i port
  project_addrs=() simulation_addrs=() auth_addrs=()
  for ((i = 0; i < projects; i++)); do project_addrs+=("127.0.0.1:$((base + 11 + 3 * (k + i)))"); done
  k=$((k + projects))
  for ((i = 0; i < simulations; i++)); do simulation_addrs+=("127.0.0.1:$((base + 11 + 3 * (k + i)))"); done
  k=$((k + simulations))
  for ((i = 0; i < auth; i++)); do auth_addrs+=("127.0.0.1:$((base + 11 + 3 * (k + i)))"); done
  k=0
  for ((i = 1; i <= projects; i++)); do
    start_sdsim "project-$i" '["project"]' $((base + 10 + 3 * k)) $((base + 11 + 3 * k)) $((base + 12 + 3 * k)); k=$((k + 1))
  done
  for ((i = 1; i <= simulations; i++)); do
    start_sdsim "simulation-$i" '["simulation"]' $((base + 10 + 3 * k)) $((base + 11 + 3 * k)) $((base + 12 + 3 * k)); k=$((k + 1))
  done
  for ((i = 1; i <= auth; i++)); do
    start_sdsim "auth-$i" '["auth"]' $((base + 10 + 3 * k)) $((base + 11 + 3 * k)) $((base + 12 + 3 * k)); k=$((k + 1))
  done
  local servers="" gateway_ports=()
  for ((i = 1; i <= gateways; i++)); do
    # With --gateway-with-auth each gateway also runs the auth role in-process (same
    # database, same signing keys).
    port=$((base + 10 + 3 * k))
    start_sdsim "gateway-$i" "$gateway_roles" "$port" $((base + 11 + 3 * k)) $((base + 12 + 3 * k))
    servers+="    server gateway-$i 127.0.0.1:$port check"$'\n'
    gateway_ports+=("$port")
    k=$((k + 1))
  done
  while read -r name http _ scheme; do
    wait_started "$name" "${http##*:}" "$scheme"
  done <"$state/instances"

  awk -v lb="127.0.0.1:$lb_port" -v stats="127.0.0.1:$stats_port" -v servers="$servers" '
    { gsub(/@LB_BIND@/, lb); gsub(/@STATS_BIND@/, stats) }
    /@GATEWAY_SERVERS@/ { printf "%s", servers; next }
    { print }' "$repo/config/haproxy.cfg" >"$state/haproxy.cfg"
  haproxy -c -q -f "$state/haproxy.cfg"
  haproxy -D -f "$state/haproxy.cfg" -p "$state/haproxy.pid" >"$state/haproxy.log" 2>&1 ||
    { cat "$state/haproxy.log" >&2; false; }
  wait_for "haproxy" 10 test -s "$state/haproxy.pid"
  record "$(head -1 "$state/haproxy.pid")" haproxy haproxy
  wait_for "haproxy" 30 ready "$lb_port"
  echo "lb http=127.0.0.1:$lb_port stats=127.0.0.1:$stats_port" >>"$state/instances"
  echo "sdsim cluster up: http://127.0.0.1:$lb_port (HAProxy stats http://127.0.0.1:$stats_port/stats)"
  echo "  $gateways gateways, $auth auth, $projects project, $simulations simulation instances; state in $state"
}

# Whether pid still runs the program recorded for it (a recycled pid is someone else's).
alive() { [[ "$(cat "/proc/$1/comm" 2>/dev/null)" == "${2:0:15}"* ]] && [ -n "$2" ]; }

status() {
  [ -s "$state/pids" ] || { echo "no cluster in $state"; exit 1; }
  local pid name program http scheme ca=()
  [ -f "$state/tls/ca.pem" ] && ca=(--cacert "$state/tls/ca.pem")
  while read -r pid name program; do
    http="$(awk -v n="$name" '$1 == n { sub("http=127.0.0.1:", "", $2); print $2 }' "$state/instances")"
    scheme="$(awk -v n="$name" '$1 == n { print $4 }' "$state/instances")"
    if alive "$pid" "$program"; then
      if [ -n "$http" ]; then
        printf '%-14s pid %-8s running  /health/ready %s\n' "$name" "$pid" \
          "$(curl -s -o /dev/null -w '%{http_code}' "${ca[@]}" \
            "${scheme:-http}://127.0.0.1:$http/health/ready" || true)"
      else
        printf '%-14s pid %-8s running\n' "$name" "$pid"
      fi
    else
      printf '%-14s pid %-8s gone\n' "$name" "$pid"
    fi
  done <"$state/pids"
}

down() {
  [ -s "$state/pids" ] || { echo "no cluster in $state"; exit 0; }
  local pid name program
  # Newest first: HAProxy, gateways, services, then PostgreSQL and Redis.
  tac "$state/pids" | while read -r pid name program; do
    alive "$pid" "$program" || continue
    if [ "$name" = postgres ]; then
      as_postgres "$(pg_bin pg_ctl)" -D "$state/pg/data" -m fast -w stop >/dev/null || kill -TERM "$pid"
    fi
    stop_process "$pid" "$name" "$program"
  done
  rm -f "$state/pids"
  echo "sdsim cluster down (logs kept in $state)"
}

# Stops process $2 (pid $1, program $3): SIGTERM (SIGCONT first: a stopped process cannot
# drain), SIGKILL after 30 s.
stop_process() {
  local pid="$1" name="$2" program="$3"
  kill -CONT "$pid" 2>/dev/null || true
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 300); do alive "$pid" "$program" || return 0; sleep 0.1; done
  echo "$name (pid $pid) ignored SIGTERM for 30 s: SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
}

restart() {
  [ -s "$state/pids" ] || { echo "no cluster in $state" >&2; exit 1; }
  state="$(cd "$state" && pwd)"
  [ -n "$target" ] || { echo "cluster.sh: restart needs a process name (see status)" >&2; exit 2; }
  [ -f "$state/$target.toml" ] ||
    { echo "cluster.sh: $target is not an sdsim process of this cluster (see status)" >&2; exit 2; }
  local pid program scheme http
  read -r pid _ program < <(awk -v n="$target" '$2 == n' "$state/pids")
  if alive "$pid" "$program"; then stop_process "$pid" "$target" "$program"; fi
  mapfile -t sets <"$state/launch"
  bin="${sets[0]}"
  sets=("${sets[@]:1}")
  awk -v n="$target" '$2 != n' "$state/pids" >"$state/pids.new" && mv "$state/pids.new" "$state/pids"
  echo "--- restarted by cluster.sh $(date -u +%FT%TZ)" >>"$state/$target.log"
  launch "$target"
  read -r _ http _ scheme < <(awk -v n="$target" '$1 == n' "$state/instances")
  wait_started "$target" "${http##*:}" "$scheme"
  echo "$target restarted: pid $(awk -v n="$target" '$2 == n { print $1 }' "$state/pids")"
}

case "$command" in
  up) up ;;
  status) status ;;
  restart) restart ;;
  down) down ;;
  *) echo "usage: deploy/cluster.sh up|status|restart NAME|down [options] (see the top of this file)" >&2; exit 2 ;;
esac
