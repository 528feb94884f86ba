# A whole cluster on this machine, for the benchmarks (scripts/bench) and
# the fault suite (scripts/chaos): CLUSTER_GATEWAYS gateways, CLUSTER_CORES
# core-svc replicas and one archiver, on engines of the cluster's own (a
# PostgreSQL, a Redis, CLUSTER_NATS_NODES NATS nodes clustered together, a
# Kafka broker), every one on a port of its own counted from CLUSTER_PORT,
# so that the shared engines on their standard ports are never touched.
# Every process's pid is kept in $CLUSTER_DIR, so that one can be
# SIGKILLed and started again, from this shell or from another that sources
# this file with the same CLUSTER_* settings. Sourced, not run.
#
# Ports from CLUSTER_PORT (P): gateways P..P+9, core-svc gRPC P+10..,
# core-svc ops P+20.., the archiver's ops P+30, PostgreSQL P+31, Redis
# P+32, NATS clients P+33..P+35 and routes P+36..P+38, Kafka P+40 (its
# controller P+41).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Below Linux's ephemeral range (32768 and up), where an outgoing
# connection may hold a port just when a restarted engine binds it again.
CLUSTER_PORT="${CLUSTER_PORT:-23000}"
CLUSTER_GATEWAYS="${CLUSTER_GATEWAYS:-2}"
CLUSTER_CORES="${CLUSTER_CORES:-3}"
CLUSTER_NATS_NODES="${CLUSTER_NATS_NODES:-3}"
# Release builds by default: the cluster is for measurements.
BIN_DIR="${BIN_DIR:-$CARGO_TARGET_DIR/release}"
CLUSTER_DIR="$RUN_DIR/cluster-$CLUSTER_PORT"
# PostgreSQL runs as the postgres user when root runs this (see as_pg),
# whose data folder must then lie where that user can enter.
if [ "$(id -u)" = 0 ]; then
  CLUSTER_PG_DATA="/var/cache/chat-engines/cluster-$CLUSTER_PORT/postgres"
else
  CLUSTER_PG_DATA="$CLUSTER_DIR/postgres"
fi
CLUSTER_PG_PORT=$((CLUSTER_PORT + 31))
CLUSTER_REDIS_PORT=$((CLUSTER_PORT + 32))
export KAFKA_PORT=$((CLUSTER_PORT + 40)) KAFKA_DATA="$CLUSTER_DIR/kafka"

gateway_port() { echo $((CLUSTER_PORT + $1)); }
core_port() { echo $((CLUSTER_PORT + 10 + $1)); }
core_ops_port() { echo $((CLUSTER_PORT + 20 + $1)); }
nats_port() { echo $((CLUSTER_PORT + 33 + $1)); }
nats_route_port() { echo $((CLUSTER_PORT + 36 + $1)); }

# The gateways' base URLs, comma-separated (loadgen's --gateway).
cluster_gateways() {
  local i urls=()
  for i in $(seq 0 $((CLUSTER_GATEWAYS - 1))); do urls+=("http://127.0.0.1:$(gateway_port "$i")"); done
  (IFS=,; echo "${urls[*]}")
}

# The pids of every process named NAME-<n> (or NAME), comma-separated.
cluster_pids() {
  local name=$1 file pids=()
  for file in "$CLUSTER_DIR/$name".pid "$CLUSTER_DIR/$name"-*.pid; do
    [ -f "$file" ] && pids+=("$(cat "$file")")
  done
  (IFS=,; echo "${pids[*]}")
}

cluster_psql() { psql -h 127.0.0.1 -p "$CLUSTER_PG_PORT" -U postgres -d chat -v ON_ERROR_STOP=1 -qtA "$@"; }

# The environment every binary of the cluster shares.
cluster_env() {
  local i nats=() cores=()
  for i in $(seq 0 $((CLUSTER_NATS_NODES - 1))); do nats+=("nats://127.0.0.1:$(nats_port "$i")"); done
  for i in $(seq 0 $((CLUSTER_CORES - 1))); do cores+=("http://127.0.0.1:$(core_port "$i")"); done
  export DATABASE_URL="postgres://postgres@127.0.0.1:$CLUSTER_PG_PORT/chat"
  export REDIS_URL="redis://127.0.0.1:$CLUSTER_REDIS_PORT" KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT"
  export NATS_URL="$(IFS=,; echo "${nats[*]}")" CORE_GRPC_ADDR="$(IFS=,; echo "${cores[*]}")"
  export JWT_SECRET="$(cat "$CLUSTER_DIR/jwt_secret")"
  export RUST_LOG="${RUST_LOG:-warn}"
  raise_limits
}

# cluster_spawn NAME COMMAND...: COMMAND in the background in a session of
# its own (so that a signal to this shell's group does not reach it), its
# output in NAME.log and its pid in NAME.pid.
cluster_spawn() {
  local name=$1; shift
  (cd / && exec nohup setsid "$@" </dev/null >>"$CLUSTER_DIR/$name.log" 2>&1) &
  echo $! >"$CLUSTER_DIR/$name.pid"
  # Not this shell's job: a fault's SIGKILL is no news to report at exit.
  disown $!
}

# cluster_kill NAME: SIGKILL to the process in NAME.pid, and waits for it
# to be gone.
cluster_kill() {
  local file="$CLUSTER_DIR/$1.pid" pid
  [ -f "$file" ] || die "no $1 in the cluster"
  pid=$(cat "$file")
  rm -f "$file"
  kill -KILL "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  die "$1 (pid $pid) outlived SIGKILL for 10 s"
}

ready_at() { curl -fsS -o /dev/null --max-time 2 "$1"; }

# cluster_start_binary NAME [VAR=VALUE...]: starts gateway-<n>, core-<n> or
# the archiver, with the settings given over the cluster's, and waits
# until it is ready.
cluster_start_binary() {
  local name=$1; shift
  local n=${name##*-} binary url
  case $name in
    gateway-*) binary=gateway url="http://127.0.0.1:$(gateway_port "$n")/readyz"
      set -- HTTP_LISTEN_ADDR="127.0.0.1:$(gateway_port "$n")" "$@" ;;
    core-*) binary=core-svc url="http://127.0.0.1:$(core_ops_port "$n")/readyz"
      set -- GRPC_LISTEN_ADDR="127.0.0.1:$(core_port "$n")" METRICS_LISTEN_ADDR="127.0.0.1:$(core_ops_port "$n")" "$@" ;;
    archiver) binary=archiver url="http://127.0.0.1:$((CLUSTER_PORT + 30))/readyz"
      set -- ARCHIVER_LISTEN_ADDR="127.0.0.1:$((CLUSTER_PORT + 30))" "$@" ;;
    *) die "no binary is called $name" ;;
  esac
  (cluster_env && cluster_spawn "$name" env "$@" "$BIN_DIR/$binary")
  wait_until "$name" "$CLUSTER_DIR/$name.log" 60 ready_at "$url"
}

cluster_start_postgres() {
  (cluster_spawn postgres "${AS_PG[@]}" "$PG_BIN/postgres" -D "$CLUSTER_PG_DATA" -c listen_addresses=127.0.0.1 \
    -c port="$CLUSTER_PG_PORT" -c unix_socket_directories="$CLUSTER_PG_DATA" -c max_connections=300 \
    -c fsync=off -c full_page_writes=off)
  wait_until "the cluster's PostgreSQL" "$CLUSTER_DIR/postgres.log" 60 \
    psql -h 127.0.0.1 -p "$CLUSTER_PG_PORT" -U postgres -d postgres -qtAc 'SELECT 1'
}

# cluster_stop_postgres fast|immediate: pg_ctl's shutdown modes.
cluster_stop_postgres() {
  as_pg "$PG_BIN/pg_ctl" -D "$CLUSTER_PG_DATA" -m "$1" -w -t 30 stop >>"$CLUSTER_DIR/postgres.log" 2>&1 ||
    die "PostgreSQL did not stop ($1)"
  rm -f "$CLUSTER_DIR/postgres.pid"
}

cluster_start_redis() {
  cluster_spawn redis redis-server --bind 127.0.0.1 --port "$CLUSTER_REDIS_PORT" --save "" --appendonly no
  wait_until "the cluster's Redis" "$CLUSTER_DIR/redis.log" 30 redis-cli -p "$CLUSTER_REDIS_PORT" ping
}

cluster_start_nats() {
  local i=$1 j routes=() cluster=()
  if [ "$CLUSTER_NATS_NODES" -gt 1 ]; then
    for j in $(seq 0 $((CLUSTER_NATS_NODES - 1))); do
      [ "$j" = "$i" ] || routes+=("nats://127.0.0.1:$(nats_route_port "$j")")
    done
    cluster=(--cluster_name "chat-$CLUSTER_PORT" --cluster "nats://127.0.0.1:$(nats_route_port "$i")"
      --routes "$(IFS=,; echo "${routes[*]}")")
  fi
  cluster_spawn "nats-$i" nats-server -a 127.0.0.1 -p "$(nats_port "$i")" "${cluster[@]}"
  wait_until "NATS node $i" "$CLUSTER_DIR/nats-$i.log" 30 port_open "$(nats_port "$i")"
}

# ensure_kafka keeps the broker's pid in the engines folder; the cluster
# keeps it with the others.
cluster_start_kafka() {
  ensure_kafka
  mv "$ENGINES/kafka-$KAFKA_PORT.pid" "$CLUSTER_DIR/kafka.pid"
  disown -a
}

# cluster_start [VAR=VALUE...]: the engines, new and empty, then the
# binaries (every gateway with the settings given).
cluster_start() {
  local port i
  for port in $(seq "$CLUSTER_PORT" $((CLUSTER_PORT + 41))); do
    port_open "$port" && die "port $port is taken: the cluster on $CLUSTER_PORT needs it (another cluster running?)"
  done
  command -v redis-server >/dev/null || apt_install redis-server
  command -v nats-server >/dev/null || apt_install nats-server
  [ -x "$PG_BIN/postgres" ] || apt_install "postgresql-$PG_MAJOR"
  rm -rf "$CLUSTER_DIR" "$CLUSTER_PG_DATA"
  mkdir -p "$CLUSTER_DIR" "$CLUSTER_PG_DATA"
  [ "$(id -u)" != 0 ] || chown postgres:postgres "$CLUSTER_PG_DATA"
  head -c 48 /dev/urandom | base64 | tr -d '\n/+=' >"$CLUSTER_DIR/jwt_secret"
  log "cluster on 127.0.0.1:$CLUSTER_PORT..$((CLUSTER_PORT + 41)): $CLUSTER_GATEWAYS gateways, $CLUSTER_CORES core-svc, $CLUSTER_NATS_NODES NATS nodes (logs in $CLUSTER_DIR)"
  as_pg "$PG_BIN/initdb" -D "$CLUSTER_PG_DATA" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 \
    >>"$CLUSTER_DIR/postgres.log" 2>&1 || die "initdb failed; see $CLUSTER_DIR/postgres.log"
  cluster_start_postgres
  psql -h 127.0.0.1 -p "$CLUSTER_PG_PORT" -U postgres -d postgres -qc 'CREATE DATABASE chat'
  cluster_start_redis
  for i in $(seq 0 $((CLUSTER_NATS_NODES - 1))); do cluster_start_nats "$i"; done
  rm -rf "$KAFKA_DATA"
  cluster_start_kafka
  ulimit -n "$(ulimit -Hn)"
  # One replica first: it runs the migrations while the others wait.
  for i in $(seq 0 $((CLUSTER_CORES - 1))); do cluster_start_binary "core-$i"; done
  cluster_start_binary archiver
  for i in $(seq 0 $((CLUSTER_GATEWAYS - 1))); do cluster_start_binary "gateway-$i" "$@"; done
}

# cluster_stop: SIGTERM to every process of the cluster (SIGKILL after
# 15 s), the binaries before the engines, by their pids; then its files.
cluster_stop() {
  [ -d "$CLUSTER_DIR" ] || return 0
  local file name command
  # Each name with what its command line says (stop_pid_file checks it).
  for name in gateway:gateway core:core-svc archiver:archiver nats:nats-server redis:redis-server kafka:kafka; do
    command=${name#*:} name=${name%%:*}
    for file in "$CLUSTER_DIR/$name".pid "$CLUSTER_DIR/$name"-*.pid; do
      [ -f "$file" ] || continue
      # A process stopped with SIGSTOP would not see SIGTERM.
      kill -CONT "$(cat "$file")" 2>/dev/null || true
      stop_pid_file "$file" 15 "$command"
    done
  done
  if [ -f "$CLUSTER_DIR/postgres.pid" ]; then cluster_stop_postgres fast || true; fi
  rm -rf "$CLUSTER_PG_DATA" "$KAFKA_DATA"
  # The data folder's own folder, when root's is outside the clone (empty now).
  rmdir "$(dirname "$CLUSTER_PG_DATA")" 2>/dev/null || true
}
