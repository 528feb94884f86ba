# Shared by the scripts in this folder: where things live, and how the
# engines (PostgreSQL, Redis, NATS, Kafka) are installed and started.
# Sourced, not run.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Builds, tools and the engines' data live outside the clone, so a fresh
# clone reuses them.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chat-target}"
TOOLS="${CHAT_TOOLS_DIR:-$HOME/.cache/chat-tools}"
ENGINES="${CHAT_ENGINES_DIR:-$HOME/.cache/chat-engines}"
RUN_DIR="$ROOT/.run"
mkdir -p "$RUN_DIR" "$ENGINES"

KAFKA_VERSION=4.4.0
KAFKA_LIBS="$TOOLS/kafka-$KAFKA_VERSION/libs"
# The tests and the benchmarks run brokers of their own on other ports.
KAFKA_PORT="${KAFKA_PORT:-9092}"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# A load logs many users in from one address, registers them, makes rooms
# and sends fast: every per-user and per-address limit raised out of its way.
raise_limits() {
  export LOGIN_ATTEMPTS_PER_MINUTE_PER_IP=1000000 LOGIN_MAX_FAILURES=1000000
  export SEND_RATE_PER_SECOND=100000 SEND_BURST=100000
  export REGISTER_PER_MINUTE_PER_IP=1000000 CREATE_ROOM_PER_MINUTE=1000000 INVITE_PER_MINUTE=1000000
  export DIRECT_PER_MINUTE=1000000 REACT_PER_MINUTE=1000000 SEARCH_PER_MINUTE=1000000
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_until NAME LOG SECONDS COMMAND...: runs COMMAND until it succeeds.
wait_until() {
  local name=$1 log_file=$2 seconds=$3; shift 3
  for _ in $(seq 1 $((seconds * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  [ -f "$log_file" ] && tail -n 20 "$log_file" >&2
  die "$name did not answer within ${seconds}s; its log is $log_file"
}

# Installs Debian packages. Their own services are kept from starting
# (policy-rc.d): the scripts run instances of their own.
apt_install() {
  log "installing $* from Debian's packages (once)"
  local sudo=() policy=/usr/sbin/policy-rc.d added=""
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
    "${sudo[@]}" chmod +x "$policy"
    added=1
  fi
  local status=0
  { "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" ||
    { "${sudo[@]}" apt-get update -q && "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"; }
  } >>"$RUN_DIR/apt.log" 2>&1 || status=$?
  [ -z "$added" ] || "${sudo[@]}" rm -f "$policy"
  [ "$status" = 0 ] || die "apt-get install $* failed; see $RUN_DIR/apt.log"
}

# promtool, the checker of Prometheus rules, configuration and metrics,
# from Debian's `prometheus` package (which puts it in /usr/bin; only the
# package's service is kept from starting). Sets PROMTOOL.
ensure_promtool() {
  PROMTOOL=$(command -v promtool || true)
  if [ -z "$PROMTOOL" ]; then
    apt_install prometheus
    PROMTOOL=$(dpkg -L prometheus | grep '/promtool$' | head -n 1)
  fi
  [ -n "$PROMTOOL" ] && [ -x "$PROMTOOL" ] || die "no promtool after installing Debian's prometheus package"
}

# --- PostgreSQL: 15, Debian's, as user postgres with trust on loopback ---

PG_MAJOR=15
psql_admin() { psql -h 127.0.0.1 -U postgres -d postgres -v ON_ERROR_STOP=1 -qtA "$@"; }

# The server refuses to run as root: root runs it as the `postgres` user,
# whose data folder must then lie outside root's home (which that user
# cannot enter).
if [ "$(id -u)" = 0 ]; then
  PG_DATA="${CHAT_PG_DATA:-/var/cache/chat-engines/postgres-$PG_MAJOR}"
  AS_PG=(setpriv --reuid=postgres --regid=postgres --init-groups --)
else
  PG_DATA="${CHAT_PG_DATA:-$ENGINES/postgres-$PG_MAJOR}"
  AS_PG=()
fi
# From /, which the postgres user can always enter.
as_pg() { (cd / && "${AS_PG[@]}" "$@"); }
PG_BIN="/usr/lib/postgresql/$PG_MAJOR/bin"

ensure_postgres() {
  if port_open 5432; then
    psql_admin -c 'SELECT 1' >/dev/null 2>&1 ||
      die "a PostgreSQL on 127.0.0.1:5432 does not let user postgres in without a password; stop it, or allow trust for 127.0.0.1"
    return 0
  fi
  [ -x "$PG_BIN/postgres" ] || apt_install "postgresql-$PG_MAJOR"
  if [ ! -s "$PG_DATA/PG_VERSION" ]; then
    log "creating PostgreSQL's data folder in $PG_DATA"
    mkdir -p "$PG_DATA"
    [ "$(id -u)" != 0 ] || chown postgres:postgres "$PG_DATA"
    as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 \
      >>"$RUN_DIR/postgres.log" 2>&1 || die "initdb failed; see $RUN_DIR/postgres.log"
  fi
  log "starting PostgreSQL $PG_MAJOR on 127.0.0.1:5432"
  # fsync off: a local engine for development and tests, where speed
  # matters and a power cut may cost the newest writes.
  (cd / && exec nohup setsid "${AS_PG[@]}" "$PG_BIN/postgres" -D "$PG_DATA" \
    -c listen_addresses=127.0.0.1 -c port=5432 -c unix_socket_directories="$PG_DATA" \
    -c max_connections=500 -c fsync=off -c full_page_writes=off \
    </dev/null >>"$RUN_DIR/postgres.log" 2>&1) &
  wait_until PostgreSQL "$RUN_DIR/postgres.log" 60 psql_admin -c 'SELECT 1'
  echo "$PG_DATA" >"$ENGINES/postgres.started"
}

stop_postgres() {
  [ -f "$ENGINES/postgres.started" ] || return 0
  as_pg "$PG_BIN/pg_ctl" -D "$(cat "$ENGINES/postgres.started")" -m fast -w stop >/dev/null 2>&1 || true
  rm -f "$ENGINES/postgres.started"
}

ensure_database() {
  local name=$1
  psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$name'" | grep -q 1 ||
    psql_admin -c "CREATE DATABASE \"$name\""
}

# --- Redis: a cache only, so no persistence -------------------------------

ensure_redis() {
  port_open 6379 && return 0
  command -v redis-server >/dev/null || apt_install redis-server
  log "starting Redis on 127.0.0.1:6379"
  mkdir -p "$ENGINES/redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --dir "$ENGINES/redis" \
    --pidfile "$ENGINES/redis.pid" --logfile "$RUN_DIR/redis.log" --save "" --appendonly no ||
    die "Redis did not start; see $RUN_DIR/redis.log"
  wait_until Redis "$RUN_DIR/redis.log" 30 redis-cli -p 6379 ping
}

# --- NATS, with JetStream -------------------------------------------------

ensure_nats() {
  port_open 4222 && return 0
  command -v nats-server >/dev/null || apt_install nats-server
  log "starting NATS on 127.0.0.1:4222"
  mkdir -p "$ENGINES/nats"
  nohup setsid nats-server -a 127.0.0.1 -p 4222 -js -sd "$ENGINES/nats" -P "$ENGINES/nats.pid" \
    >>"$RUN_DIR/nats.log" 2>&1 &
  wait_until NATS "$RUN_DIR/nats.log" 30 port_open 4222
}

# --- Apache Kafka, KRaft, one node (scripts/kafka-node) ------------------

# The broker's jars, resolved once from Maven Central into the tool cache.
ensure_kafka_jars() {
  [ -s "$KAFKA_LIBS/kafka_2.13-$KAFKA_VERSION.jar" ] && return 0
  command -v java >/dev/null || die "Kafka needs Java 17 or newer, and java is not on PATH"
  command -v mvn >/dev/null || apt_install maven
  log "resolving Apache Kafka $KAFKA_VERSION from Maven Central (once)"
  rm -rf "$KAFKA_LIBS.partial"
  mvn -q -B -f "$ROOT/scripts/kafka/pom.xml" -Dkafka.version="$KAFKA_VERSION" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIBS.partial" \
    >>"$RUN_DIR/maven.log" 2>&1 || die "resolving Kafka's jars failed; see $RUN_DIR/maven.log"
  mv "$KAFKA_LIBS.partial" "$KAFKA_LIBS"
}

kafka_started() { grep -q "Kafka Server started" "$1"; }

# Starts the broker on $KAFKA_PORT (its controller on the next port) with
# its log folder in $KAFKA_DATA, unless one answers there already.
ensure_kafka() {
  port_open "$KAFKA_PORT" && return 0
  ensure_kafka_jars
  local data="${KAFKA_DATA:-$ENGINES/kafka-$KAFKA_PORT}" out="$RUN_DIR/kafka-$KAFKA_PORT.log"
  log "starting Apache Kafka $KAFKA_VERSION on 127.0.0.1:$KAFKA_PORT (log folder $data)"
  : >"$out"
  nohup setsid "$ROOT/scripts/kafka-node" "$KAFKA_PORT" "$((KAFKA_PORT + 1))" "$data" >>"$out" 2>&1 &
  echo $! >"$ENGINES/kafka-$KAFKA_PORT.pid"
  wait_until "Kafka on 127.0.0.1:$KAFKA_PORT" "$out" 90 kafka_started "$out"
}

# A broker of one's own on $KAFKA_PORT with an empty log folder: for runs
# that must not share the development broker's topics. `stop_kafka` ends it.
fresh_kafka() {
  stop_kafka
  rm -rf "${KAFKA_DATA:-$ENGINES/kafka-$KAFKA_PORT}"
  ensure_kafka
}

# Stops the broker on $KAFKA_PORT if these scripts started it.
stop_kafka() {
  stop_pid_file "$ENGINES/kafka-$KAFKA_PORT.pid" 30 kafka
}

# stop_pid_file FILE SECONDS NAME: SIGTERM, then SIGKILL after SECONDS, to
# the process in FILE if its command line still names NAME (a pid file
# that outlived its process may name another one by now).
stop_pid_file() {
  local pid_file=$1 seconds=$2 name=$3 pid
  [ -f "$pid_file" ] || return 0
  pid=$(cat "$pid_file")
  rm -f "$pid_file"
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$name" || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 $((seconds * 5))); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
  kill -KILL "$pid" 2>/dev/null || true
}

# --- Tools the tests use beside the engines --------------------------------

# Jaeger v2 (in memory), which the tracing tests start on ports of their own
# (e2e/conftest.py, e2e/jaeger.yaml). Built once from the Go module proxy
# into the tool cache. `go install` refuses it (its go.mod has a replace
# directive), so a module of our own takes it as a tool, with that replace.
JAEGER_VERSION=1.76.0
JAEGER="$TOOLS/jaeger-$JAEGER_VERSION/jaeger"
ensure_jaeger() {
  [ -x "$JAEGER" ] && return 0
  command -v go >/dev/null || die "building Jaeger needs Go 1.24 or newer, and go is not on PATH"
  log "building Jaeger $JAEGER_VERSION from the Go module proxy (once; a few minutes)"
  local module="$TOOLS/jaeger-$JAEGER_VERSION/module" out="$RUN_DIR/jaeger-build.log"
  rm -rf "$module"
  mkdir -p "$module"
  (
    cd "$module"
    go mod init chat-tools/jaeger
    go mod edit -replace github.com/Shopify/sarama=github.com/Shopify/sarama@v1.33.0
    go get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@v$JAEGER_VERSION"
    go build -o "$JAEGER.partial" github.com/jaegertracing/jaeger/cmd/jaeger
  ) >>"$out" 2>&1 || die "building Jaeger failed; see $out"
  mv "$JAEGER.partial" "$JAEGER"
}

# --- cargo-fuzz, for the fuzz targets in fuzz/ (scripts/fuzz) ---------------

# Built from crates.io once into the tool cache. The targets need a nightly
# toolchain (the sanitizers), which rustup must have already: it is not on
# a registry the scripts may reach.
CARGO_FUZZ_VERSION=0.13.2
CARGO_FUZZ="$TOOLS/cargo-fuzz-$CARGO_FUZZ_VERSION/bin/cargo-fuzz"
ensure_cargo_fuzz() {
  if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    log "installing a nightly Rust toolchain for the fuzz targets (once)"
    rustup toolchain install nightly --profile minimal >>"$RUN_DIR/rustup-nightly.log" 2>&1 ||
      die "the fuzz targets need a nightly Rust toolchain; rustup could not install it (see $RUN_DIR/rustup-nightly.log)"
  fi
  [ -x "$CARGO_FUZZ" ] && return 0
  log "building cargo-fuzz $CARGO_FUZZ_VERSION from crates.io (once)"
  CARGO_TARGET_DIR="$TOOLS/cargo-fuzz-build" cargo install --quiet --locked --version "$CARGO_FUZZ_VERSION" \
    --root "$TOOLS/cargo-fuzz-$CARGO_FUZZ_VERSION" cargo-fuzz >>"$RUN_DIR/cargo-fuzz.log" 2>&1 ||
    die "building cargo-fuzz failed; see $RUN_DIR/cargo-fuzz.log"
  rm -rf "$TOOLS/cargo-fuzz-build"
}

# --- The browser client --------------------------------------------------

# Builds web/ into web/dist, which the gateway serves (WEB_DIR): `npm ci`
# when its lock changed, then `npm run build` (tsc and Vite) when its
# sources changed since the last build; otherwise nothing, in a second.
WEB="$ROOT/web"
build_web() {
  command -v npm >/dev/null || die "building the web client needs Node.js (20.19 or newer) with npm"
  # A copy of the lock inside node_modules says what was installed last.
  if ! cmp -s "$WEB/package-lock.json" "$WEB/node_modules/.package-lock.stamp" 2>/dev/null; then
    log "npm ci in web/"
    (cd "$WEB" && npm ci --silent --no-audit --no-fund) || die "npm ci in web/ failed"
    cp "$WEB/package-lock.json" "$WEB/node_modules/.package-lock.stamp"
  fi
  local sources built="$WEB/node_modules/.built-sources"
  sources=$(cd "$WEB" && find index.html package-lock.json tsconfig.json vite.config.ts public src -type f -print0 |
    sort -z | xargs -0 sha256sum | sha256sum)
  # A build by hand since (dist newer than the record) is rebuilt too.
  [ -s "$WEB/dist/index.html" ] && [ "$(cat "$built" 2>/dev/null)" = "$sources" ] &&
    [ ! "$WEB/dist/index.html" -nt "$built" ] && return 0
  log "building the web client (web/dist)"
  (cd "$WEB" && npm run --silent build) >"$RUN_DIR/web-build.log" 2>&1 ||
    { tail -n 30 "$RUN_DIR/web-build.log" >&2; die "the web client did not build; see $RUN_DIR/web-build.log"; }
  echo "$sources" >"$built"
}

ensure_engines() {
  ensure_postgres
  ensure_redis
  ensure_nats
  ensure_kafka
}

# Stops every engine that these scripts started (not ones found running).
stop_engines() {
  local pid_file
  for pid_file in "$ENGINES"/kafka-*.pid; do [ -e "$pid_file" ] && stop_pid_file "$pid_file" 30 kafka; done
  stop_pid_file "$ENGINES/nats.pid" 10 nats-server
  stop_pid_file "$ENGINES/redis.pid" 10 redis-server
  stop_postgres
}
