#!/usr/bin/env bash
# A Redis master, one replica and three Sentinels on loopback, from Debian's redis-server
# (run in Sentinel mode with --sentinel, which is all the redis-sentinel package adds).
# It never touches the machine's own Redis on 6379.
#
#   scripts/redis-sentinel.sh up         start what is not running (idempotent); prints the env to use
#   scripts/redis-sentinel.sh down       stop everything and delete the data directory
#   scripts/redis-sentinel.sh status     the master the Sentinels name, and each process
#   scripts/redis-sentinel.sh master     host:port of the current master
#   scripts/redis-sentinel.sh failover   a planned failover (SENTINEL FAILOVER), waits for the new master
#   scripts/redis-sentinel.sh kill-master   SIGKILL the current master, waits for the new master
#   scripts/redis-sentinel.sh restart PORT  start a data node that was killed (it rejoins as a replica)
#
# Ports: data nodes 6391 (first master) and 6392, Sentinels 26391-26393; the master name is
# mymaster. Override the base with CACHECAST_SENTINEL_BASE (data nodes BASE+1, BASE+2,
# Sentinels 20000+BASE+1..3) and the directory with CACHECAST_CLUSTER_DIR.
# Like the machine's Redis, the data nodes keep nothing on disk: a killed master's
# unreplicated writes are lost, which is what the failover tests must survive.
set -euo pipefail

base=${CACHECAST_SENTINEL_BASE:-6390}
dir=${CACHECAST_CLUSTER_DIR:-/tmp/cachecast-cluster}/redis-sentinel-$base
name=mymaster
data_ports=($((base + 1)) $((base + 2)))
sentinel_ports=($((20000 + base + 1)) $((20000 + base + 2)) $((20000 + base + 3)))

log() { printf 'redis-sentinel: %s\n' "$*" >&2; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {
  local i
  for ((i = 0; i < 80; i++)); do
    port_open "$1" && return 0
    sleep 0.25
  done
  log "port $1 did not open"
  return 1
}
cli() { redis-cli -h 127.0.0.1 -p "$1" "${@:2}"; }

master() {
  local p
  for p in "${sentinel_ports[@]}"; do
    if out=$(cli "$p" SENTINEL get-master-addr-by-name "$name" 2>/dev/null) && [[ -n "$out" ]]; then
      printf '%s:%s\n' $(echo "$out" | head -n1) $(echo "$out" | sed -n 2p)
      return 0
    fi
  done
  return 1
}

start_data() { # port [replicaof-port]
  local p=$1
  mkdir -p "$dir/$p"
  local args=(--daemonize yes --bind 127.0.0.1 --port "$p" --save "" --appendonly no --dir "$dir/$p"
    --logfile "$dir/$p/redis.log" --pidfile "$dir/$p/redis.pid" --repl-diskless-sync-delay 0)
  [[ -n "${2:-}" ]] && args+=(--replicaof 127.0.0.1 "$2")
  redis-server "${args[@]}"
  wait_port "$p"
}

start_sentinel() { # port master-port
  local p=$1
  mkdir -p "$dir/$p"
  if [[ ! -f "$dir/$p/sentinel.conf" ]]; then
    cat >"$dir/$p/sentinel.conf" <<EOF
port $p
bind 127.0.0.1
daemonize yes
dir $dir/$p
logfile $dir/$p/sentinel.log
pidfile $dir/$p/sentinel.pid
sentinel monitor $name 127.0.0.1 $2 2
sentinel down-after-milliseconds $name 1000
sentinel failover-timeout $name 5000
sentinel parallel-syncs $name 1
EOF
  fi
  redis-server "$dir/$p/sentinel.conf" --sentinel
  wait_port "$p"
}

ready() {
  local current p
  current=$(master 2>/dev/null) || return 1
  # online: the replica has finished its sync (before that a failover would promote an empty one).
  cli "${current#*:}" INFO replication 2>/dev/null | grep -q '^slave0:.*state=online' || return 1
  for p in "${sentinel_ports[@]}"; do
    # The replica as each Sentinel sees it: flags exactly "slave" (not s_down or disconnected).
    [[ "$(cli "$p" SENTINEL replicas "$name" 2>/dev/null | grep -A1 '^flags$' | tail -n1)" == slave ]] || return 1
    [[ "$(cli "$p" SENTINEL master "$name" 2>/dev/null | grep -A1 -E '^(num-slaves|num-other-sentinels)$' | grep -vE '^(num-|--)' | tr '\n' ' ')" == "1 2 " ]] || return 1
  done
}

wait_new_master() { # old host:port
  local i now
  for ((i = 0; i < 120; i++)); do
    now=$(master || true)
    if [[ -n "$now" && "$now" != "$1" ]] && [[ "$(cli "${now#*:}" ROLE 2>/dev/null | head -n1)" == master ]]; then
      echo "$now"
      return 0
    fi
    sleep 0.25
  done
  log "no new master after 30 s (was $1)"
  return 1
}

up() {
  mkdir -p "$dir"
  local first=${data_ports[0]} p
  # The first start makes the first port the master; after a failover the Sentinels' own
  # configuration (rewritten on disk) names the master, and a restarted node rejoins as a replica.
  local current
  current=$(master 2>/dev/null || echo "127.0.0.1:$first")
  for p in "${data_ports[@]}"; do
    port_open "$p" && continue
    if [[ "127.0.0.1:$p" == "$current" ]]; then start_data "$p"; else start_data "$p" "${current#*:}"; fi
  done
  for p in "${sentinel_ports[@]}"; do
    port_open "$p" || start_sentinel "$p" "$first"
  done
  # Ready when the master has its replica online and every Sentinel knows that replica and
  # the two other Sentinels (until then a failover would find no replica, or no quorum).
  local i
  for ((i = 0; i < 240; i++)); do
    ready && break
    sleep 0.25
  done
  ((i < 240)) || { log "not ready after 60 s"; exit 1; }
  echo "REDIS_SENTINELS=127.0.0.1:${sentinel_ports[0]},127.0.0.1:${sentinel_ports[1]},127.0.0.1:${sentinel_ports[2]}"
  echo "REDIS_SENTINEL_NAME=$name"
}

down() {
  local p f
  for p in "${sentinel_ports[@]}" "${data_ports[@]}"; do
    for f in "$dir/$p/sentinel.pid" "$dir/$p/redis.pid"; do
      [[ -f "$f" ]] && kill -9 "$(cat "$f")" 2>/dev/null || true
    done
  done
  for p in "${sentinel_ports[@]}" "${data_ports[@]}"; do
    for ((i = 0; i < 40; i++)); do port_open "$p" || break; sleep 0.25; done
  done
  rm -rf "$dir"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  master) master ;;
  status)
    echo "master: $(master || echo unknown)"
    for p in "${data_ports[@]}"; do echo "$p: $(cli "$p" ROLE 2>/dev/null | head -n1 || echo down)"; done
    for p in "${sentinel_ports[@]}"; do echo "$p: sentinel $(cli "$p" PING 2>/dev/null || echo down)"; done
    ;;
  failover)
    old=$(master)
    # A replica that was just (re)started is "not suitable" until the Sentinels have seen it
    # healthy for a while: ask again until one takes it.
    for ((i = 0; i < 120; i++)); do
      out=$(cli "${sentinel_ports[0]}" SENTINEL FAILOVER "$name")
      [[ "$out" == OK || "$out" != NOGOODSLAVE* ]] && break
      sleep 0.25
    done
    [[ "$out" == OK ]] || { log "SENTINEL FAILOVER: $out"; exit 1; }
    wait_new_master "$old"
    # Until the Sentinels turn the old master into a replica it still takes writes (which its
    # resync then drops): done when it answers as a replica.
    for ((i = 0; i < 120; i++)); do
      [[ "$(cli "${old#*:}" ROLE 2>/dev/null | head -n1)" == slave ]] && break
      sleep 0.25
    done
    ;;
  kill-master)
    old=$(master)
    kill -9 "$(cat "$dir/${old#*:}/redis.pid")"
    wait_new_master "$old"
    ;;
  restart)
    p=${2:?port}
    port_open "$p" && exit 0
    m=$(master)
    start_data "$p" "${m#*:}"
    for ((i = 0; i < 240; i++)); do
      ready && break
      sleep 0.25
    done
    ;;
  *)
    echo "usage: $0 up|down|status|master|failover|kill-master|restart PORT" >&2
    exit 2
    ;;
esac
