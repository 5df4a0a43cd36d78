#!/usr/bin/env bash
# A three-node RabbitMQ cluster on loopback from Debian's rabbitmq-server: nodes ccr1..ccr3@localhost,
# AMQP ports 5681-5683, distribution ports 25681-25683, one data directory each and one Erlang
# cookie of their own (in the cluster directory, not the machine broker's). It never touches the
# machine's own broker on 5672, and shares only epmd with it.
#
#   scripts/rabbit-cluster.sh up            start what is not running and join it (idempotent);
#                                           prints the RABBITMQ_URL to give services
#   scripts/rabbit-cluster.sh down          stop every node and delete the data directory
#   scripts/rabbit-cluster.sh status        each node's state and the cluster's running members
#   scripts/rabbit-cluster.sh stop N        stop node N cleanly (rabbitmqctl stop)
#   scripts/rabbit-cluster.sh kill N        SIGKILL node N's Erlang VM
#   scripts/rabbit-cluster.sh start N       start node N again and wait until it has rejoined
#   scripts/rabbit-cluster.sh ctl N ARGS    rabbitmqctl against node N
#
# Override the directory with CACHECAST_CLUSTER_DIR.
set -euo pipefail

dir=${CACHECAST_CLUSTER_DIR:-/tmp/cachecast-cluster}/rabbit
bin=/usr/lib/rabbitmq/bin
nodes=(1 2 3)

log() { printf 'rabbit-cluster: %s\n' "$*" >&2; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

node_env() { # N: the environment of node N, for the server and for the CLI alike
  export HOME="$dir" ERL_EPMD_ADDRESS=127.0.0.1 \
    RABBITMQ_NODENAME="ccr$1@localhost" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
    RABBITMQ_NODE_PORT=$((5680 + $1)) RABBITMQ_DIST_PORT=$((25680 + $1)) \
    RABBITMQ_MNESIA_BASE="$dir/ccr$1/mnesia" RABBITMQ_LOG_BASE="$dir/ccr$1/log" \
    RABBITMQ_PID_FILE="$dir/ccr$1/pid" RABBITMQ_CONFIG_FILE="$dir/ccr$1/rabbitmq.conf" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf" \
    RABBITMQ_ADVANCED_CONFIG_FILE="$dir/ccr$1/advanced.config"
}

ctl() { (node_env "$1" && "$bin/rabbitmqctl" -q -n "ccr$1@localhost" "${@:2}"); }

start_node() {
  local n=$1
  port_open $((5680 + n)) && return 0
  mkdir -p "$dir/ccr$n/log"
  [[ -f "$dir/ccr$n/rabbitmq.conf" ]] || cat >"$dir/ccr$n/rabbitmq.conf" <<EOF
listeners.tcp.local = 127.0.0.1:$((5680 + n))
loopback_users.guest = true
cluster_partition_handling = pause_minority
EOF
  # Every descriptor redirected: a caller reading this script's output (a test) must not
  # wait for the server, which outlives the script.
  (node_env "$n" && cd "$dir" && exec setsid "$bin/rabbitmq-server") >"$dir/ccr$n/log/console.log" 2>&1 </dev/null &
}

await_node() {
  # await_startup needs the node registered with epmd first; until then it fails at once.
  local i
  for ((i = 0; i < 120; i++)); do
    ctl "$1" ping >/dev/null 2>&1 && break
    sleep 0.5
  done
  ctl "$1" await_startup --timeout 120 >/dev/null
}

members() { # the running members as node 1 sees them, one per line
  ctl 1 cluster_status --formatter json 2>/dev/null |
    /usr/bin/python3 -c 'import json,sys; print("\n".join(json.load(sys.stdin)["running_nodes"]))' 2>/dev/null || true
}

up() {
  mkdir -p "$dir"
  [[ -f "$dir/.erlang.cookie" ]] || {
    head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$dir/.erlang.cookie"
    chmod 400 "$dir/.erlang.cookie"
  }
  : >"$dir/rabbitmq-env.conf"
  [[ -f "$dir/enabled_plugins" ]] || echo '[].' >"$dir/enabled_plugins"
  local n
  for n in "${nodes[@]}"; do start_node "$n"; done
  for n in "${nodes[@]}"; do await_node "$n"; done
  for n in 2 3; do
    members | grep -qx "ccr$n@localhost" && continue
    # The nodes' own chatter while they join goes to a log; a failure still stops the script.
    { ctl "$n" stop_app && ctl "$n" reset && ctl "$n" join_cluster ccr1@localhost && ctl "$n" start_app; } \
      >>"$dir/join.log" 2>&1 || { log "ccr$n could not join (see $dir/join.log)"; exit 1; }
  done
  [[ $(members | wc -l) -eq 3 ]] || { log "the cluster has $(members | wc -l) running members, not 3"; exit 1; }
  echo "RABBITMQ_URL=amqp://guest:guest@127.0.0.1:5681,amqp://guest:guest@127.0.0.1:5682,amqp://guest:guest@127.0.0.1:5683"
}

down() {
  local n pid
  for n in "${nodes[@]}"; do
    pid=$(cat "$dir/ccr$n/pid" 2>/dev/null || true)
    [[ -n "$pid" ]] && kill -9 "$pid" 2>/dev/null || true
    # The CLI's and the server's own Erlang helpers (erl_child_setup, inet_gethost) go with the VM.
  done
  pkill -9 -f "$dir/ccr" 2>/dev/null || true
  for n in "${nodes[@]}"; do
    for ((i = 0; i < 40; i++)); do port_open $((5680 + n)) || break; sleep 0.25; done
  done
  rm -rf "$dir"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status)
    for n in "${nodes[@]}"; do
      if port_open $((5680 + n)); then echo "ccr$n: up"; else echo "ccr$n: down"; fi
    done
    echo "running members: $(members | tr '\n' ' ')"
    ;;
  stop) ctl "${2:?node}" stop ;;
  kill)
    pid=$(cat "$dir/ccr${2:?node}/pid")
    kill -9 "$pid"
    for ((i = 0; i < 40; i++)); do port_open $((5680 + $2)) || break; sleep 0.25; done
    ;;
  start)
    start_node "${2:?node}"
    await_node "$2"
    ;;
  ctl) ctl "${2:?node}" "${@:3}" ;;
  *)
    echo "usage: $0 up|down|status|stop N|kill N|start N|ctl N ARGS" >&2
    exit 2
    ;;
esac
