#!/usr/bin/env bash
# Local Redis + ZooKeeper for Sandtable development (DESIGN.md §5).
#
#   scripts/services.sh install   apt-get install redis-server zookeeper mariadb-server
#                                 nftables iproute2 (only what is missing; the last two
#                                 are for `real cluster run --net`)
#   scripts/services.sh up        start the pair on 127.0.0.1 (idempotent)
#   scripts/services.sh down      stop them
#   scripts/services.sh status    print what runs
#
# Ports: SANDTABLE_REDIS_PORT (default 6379), SANDTABLE_ZK_PORT (default 2181).
# Data, logs and pid files live under $REPO/.services/ (git-ignored). The Debian packages'
# own system services are neither needed nor touched: the processes are started directly
# (redis-server, and ZooKeeper's standalone server class on java), so this works without
# systemd. ZooKeeper runs with tickTime 2 s, so it grants session timeouts of 4-40 s, the
# range the `Coord` port documents. Redis keeps an append-only file (fsync every second), so
# development data survives `down`/`up`. Tests do not use this pair: they start private
# servers through `real::services`.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="$REPO/.services"
REDIS_PORT="${SANDTABLE_REDIS_PORT:-6379}"
ZK_PORT="${SANDTABLE_ZK_PORT:-2181}"
ZK_JAR=/usr/share/java/zookeeper.jar
SLF4J_SIMPLE=/usr/share/java/slf4j-simple.jar

log() { printf '%s\n' "$*"; }
die() { printf 'services.sh: %s\n' "$*" >&2; exit 1; }

have_redis() { command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; }
have_zk() { [[ -f "$ZK_JAR" ]] && command -v java >/dev/null 2>&1; }
# MariaDB: the tests start private servers (real::services::PrivateMariaDb) from these two.
have_mariadb() { command -v mariadbd >/dev/null 2>&1 || [[ -x /usr/sbin/mariadbd ]]; }
have_mariadb_install() { command -v mariadb-install-db >/dev/null 2>&1; }
# Live runs with a host per server (`real cluster run --net`): namespaces and nftables rules.
have_nft() { command -v nft >/dev/null 2>&1 || [[ -x /usr/sbin/nft ]]; }
have_ip() { command -v ip >/dev/null 2>&1 || [[ -x /usr/sbin/ip ]] || [[ -x /sbin/ip ]]; }

# Sends a four-letter word to ZooKeeper and prints the answer (empty if unreachable).
zk_ask() {
  local word="$1" port="$2"
  timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port && printf '%s' '$word' >&3 && cat <&3" 2>/dev/null || true
}

redis_ping() { timeout 2 redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null | grep -q PONG; }
zk_serving() { zk_ask srvr "$1" | grep -q 'Mode: standalone'; }
port_open() { timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

# Prints the pid in $1 if that process is alive.
live_pid() {
  local f="$1" pid
  [[ -f "$f" ]] || return 1
  pid="$(cat "$f" 2>/dev/null || true)"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && { printf '%s\n' "$pid"; return 0; }
  return 1
}

wait_until() {
  local what="$1" tries="$2"; shift 2
  for ((i = 0; i < tries; i++)); do
    if "$@"; then return 0; fi
    sleep 0.2
  done
  die "$what did not become ready; see its log under $STATE"
}

cmd_install() {
  local pkgs=()
  have_redis || pkgs+=(redis-server)
  have_zk || pkgs+=(zookeeper)
  { have_mariadb && have_mariadb_install; } || pkgs+=(mariadb-server)
  have_nft || pkgs+=(nftables)
  have_ip || pkgs+=(iproute2)
  if ((${#pkgs[@]} == 0)); then
    log "redis-server, zookeeper, mariadb-server, nftables and iproute2 are installed"
    return 0
  fi
  local sudo=()
  [[ "$(id -u)" == 0 ]] || sudo=(sudo)
  log "installing: ${pkgs[*]}"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${pkgs[@]}"
  have_redis || die "redis-server still missing after apt-get install"
  have_zk || die "ZooKeeper ($ZK_JAR) or java still missing after apt-get install"
  { have_mariadb && have_mariadb_install; } || die "mariadbd or mariadb-install-db still missing after apt-get install"
  have_nft || die "nft still missing after apt-get install"
  have_ip || die "ip still missing after apt-get install"
  log "installed: ${pkgs[*]}"
}

redis_up() {
  local dir="$STATE/redis" pid
  mkdir -p "$dir"
  if pid="$(live_pid "$dir/redis.pid")"; then
    redis_ping "$REDIS_PORT" || die "redis-server (pid $pid) runs but does not answer on port $REDIS_PORT"
    log "redis      already running: pid $pid, 127.0.0.1:$REDIS_PORT"
    return 0
  fi
  port_open "$REDIS_PORT" && die "port $REDIS_PORT is taken by another process (set SANDTABLE_REDIS_PORT)"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --protected-mode no \
    --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" \
    --dir "$dir" --appendonly yes --appendfsync everysec --save ""
  wait_until "redis-server" 50 redis_ping "$REDIS_PORT"
  log "redis      started: pid $(cat "$dir/redis.pid"), 127.0.0.1:$REDIS_PORT"
}

zk_up() {
  local dir="$STATE/zookeeper" pid cp
  mkdir -p "$dir/data"
  if pid="$(live_pid "$dir/zookeeper.pid")"; then
    zk_serving "$ZK_PORT" || die "ZooKeeper (pid $pid) runs but does not serve on port $ZK_PORT"
    log "zookeeper  already running: pid $pid, 127.0.0.1:$ZK_PORT"
    return 0
  fi
  port_open "$ZK_PORT" && die "port $ZK_PORT is taken by another process (set SANDTABLE_ZK_PORT)"
  cat >"$dir/zoo.cfg" <<CFG
tickTime=2000
minSessionTimeout=4000
maxSessionTimeout=40000
dataDir=$dir/data
clientPort=$ZK_PORT
clientPortAddress=127.0.0.1
maxClientCnxns=0
admin.enableServer=false
4lw.commands.whitelist=ruok,srvr,stat,mntr,cons
autopurge.snapRetainCount=3
autopurge.purgeInterval=1
CFG
  cp="$ZK_JAR"
  [[ -f "$SLF4J_SIMPLE" ]] && cp="$cp:$SLF4J_SIMPLE"
  nohup java -Xmx256m -XX:+UseSerialGC -Djava.net.preferIPv4Stack=true \
    -Dzookeeper.admin.enableServer=false -Dzookeeper.log.dir="$dir" \
    -Dorg.slf4j.simpleLogger.showDateTime=true \
    -cp "$cp" org.apache.zookeeper.server.ZooKeeperServerMain "$dir/zoo.cfg" \
    >>"$dir/zookeeper.log" 2>&1 </dev/null &
  echo $! >"$dir/zookeeper.pid"
  wait_until "ZooKeeper" 150 zk_serving "$ZK_PORT"
  log "zookeeper  started: pid $(cat "$dir/zookeeper.pid"), 127.0.0.1:$ZK_PORT"
}

stop_pid_file() {
  local name="$1" f="$2" pid
  if ! pid="$(live_pid "$f")"; then
    rm -f "$f"
    log "$name not running"
    return 0
  fi
  kill "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
  log "$name stopped (pid $pid)"
}

cmd_up() {
  have_redis && have_zk || die "redis-server or zookeeper is missing: run scripts/services.sh install"
  redis_up
  zk_up
}

cmd_down() {
  stop_pid_file "redis     " "$STATE/redis/redis.pid"
  stop_pid_file "zookeeper " "$STATE/zookeeper/zookeeper.pid"
}

cmd_status() {
  local pid
  if pid="$(live_pid "$STATE/redis/redis.pid")"; then
    if redis_ping "$REDIS_PORT"; then
      log "redis      running: pid $pid, 127.0.0.1:$REDIS_PORT, answers PING"
    else
      log "redis      running: pid $pid, but no answer on 127.0.0.1:$REDIS_PORT"
    fi
  else
    log "redis      stopped"
  fi
  if pid="$(live_pid "$STATE/zookeeper/zookeeper.pid")"; then
    if zk_serving "$ZK_PORT"; then
      log "zookeeper  running: pid $pid, 127.0.0.1:$ZK_PORT, $(zk_ask srvr "$ZK_PORT" | head -n1)"
    else
      log "zookeeper  running: pid $pid, but not serving on 127.0.0.1:$ZK_PORT"
    fi
  else
    log "zookeeper  stopped"
  fi
}

case "${1:-}" in
  install) cmd_install ;;
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *)
    echo "usage: $0 install|up|down|status" >&2
    exit 2
    ;;
esac
