# Shared by the scripts in this folder: where things live, and how the local
# services are checked, installed and started. Sourced, not run.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Builds and tools live outside the clone, so a fresh clone reuses them.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chat-target}"
TOOLS="${CHAT_TOOLS_DIR:-$HOME/.cache/chat-tools}"
RUN_DIR="$ROOT/.run"

TANSU_VERSION=0.6.0
TANSU="$TOOLS/tansu-$TANSU_VERSION/bin/tansu"
# The benchmarks run a broker of their own on another port.
KAFKA_PORT="${KAFKA_PORT:-9092}"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for_port() {
  local port=$1 name=$2
  for _ in $(seq 1 100); do port_open "$port" && return 0; sleep 0.2; done
  die "$name did not start listening on 127.0.0.1:$port"
}

# PostgreSQL, Redis and NATS run on this project's machines when a session
# starts; if one has stopped, start it the way the machine does.
ensure_postgres() {
  port_open 5432 && return 0
  log "starting PostgreSQL"
  command -v pg_ctlcluster >/dev/null || die "PostgreSQL is not running on 127.0.0.1:5432 and is not installed"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
  wait_for_port 5432 PostgreSQL
}

ensure_redis() {
  port_open 6379 && return 0
  log "starting Redis"
  command -v redis-server >/dev/null || die "Redis is not running on 127.0.0.1:6379 and is not installed"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
  wait_for_port 6379 Redis
}

ensure_nats() {
  port_open 4222 && return 0
  log "starting NATS"
  command -v nats-server >/dev/null || die "NATS is not running on 127.0.0.1:4222 and is not installed"
  mkdir -p "$RUN_DIR/nats"
  nohup nats-server -a 127.0.0.1 -p 4222 -js -sd "$RUN_DIR/nats" >"$RUN_DIR/nats.log" 2>&1 &
  wait_for_port 4222 NATS
}

# The Kafka-compatible broker: tansu, built from the Rust registry at a
# pinned version the first time (about 15 minutes on 2 cores), then reused.
ensure_kafka() {
  port_open "$KAFKA_PORT" && return 0
  if [ ! -x "$TANSU" ]; then
    log "installing the Kafka-compatible broker (tansu $TANSU_VERSION); this takes a while, once"
    cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore,libsql \
      --root "$TOOLS/tansu-$TANSU_VERSION"
  fi
  mkdir -p "$RUN_DIR"
  local storage="${KAFKA_STORAGE:-memory://tansu/}"
  log "starting the Kafka-compatible broker on 127.0.0.1:$KAFKA_PORT ($storage)"
  nohup "$TANSU" broker \
    --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
    --storage-engine "$storage" >"$RUN_DIR/kafka-$KAFKA_PORT.log" 2>&1 &
  echo $! >"$RUN_DIR/kafka-$KAFKA_PORT.pid"
  wait_for_port "$KAFKA_PORT" "the Kafka broker"
}

# A broker of one's own on $KAFKA_PORT, empty: for runs that must not share
# the development broker's topics. `stop_kafka` ends it.
fresh_kafka() {
  stop_kafka
  ensure_kafka
}

stop_kafka() {
  local pid_file="$RUN_DIR/kafka-$KAFKA_PORT.pid"
  if [ -f "$pid_file" ]; then
    kill "$(cat "$pid_file")" 2>/dev/null || true
    rm -f "$pid_file"
    for _ in $(seq 1 50); do port_open "$KAFKA_PORT" || break; sleep 0.1; done
  fi
}

ensure_services() {
  ensure_postgres
  ensure_redis
  ensure_nats
  ensure_kafka
}

ensure_database() {
  local name=$1
  psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$name'" | grep -q 1 ||
    psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE \"$name\""
}
