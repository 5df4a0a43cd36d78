#!/usr/bin/env bash
# Makes RabbitMQ, Redis and PostgreSQL reachable on 127.0.0.1 with the
# defaults in CONTRACT.md: reachable -> go on; installed but stopped -> start;
# missing on Debian/Ubuntu as root -> install from the distribution's packages;
# otherwise print exactly what to run and exit non-zero.
# Also installs the test peers with --test-peers: python3-kombu, python3-celery, python3-redis
# (interop), nginx-light (auth_request in front of ext-authz), chromium (the dashboard test),
# nghttp2-client (h2load: the authz bench's HTTP and gRPC load generator), python3-grpcio (a gRPC client
# on C-core's own HTTP/2, for ext-authz's gRPC server).
set -euo pipefail

want_peers=0
[[ "${1:-}" == "--test-peers" ]] && want_peers=1

log() { printf 'services: %s\n' "$*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # port name seconds
  local i
  for ((i = 0; i < $3 * 4; i++)); do
    port_open "$1" && return 0
    sleep 0.25
  done
  log "$2 did not open port $1 within $3 s"
  return 1
}

can_install() { [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; }

apt_updated=0
apt_install() {
  if [[ $apt_updated -eq 0 ]]; then
    apt-get update -qq >/dev/null
    apt_updated=1
  fi
  log "installing $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

cannot() {
  log "$1 is not reachable on 127.0.0.1:$2 and cannot be installed here."
  log "install it: sudo apt-get install -y rabbitmq-server redis-server postgresql"
  log "or run:     docker compose -f deploy/compose.yml up -d rabbitmq redis postgres"
  exit 1
}

ensure_postgres() {
  port_open 5432 && return 0
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    can_install || cannot PostgreSQL 5432
    apt_install postgresql
    local conf
    conf=$(ls -d /etc/postgresql/*/main | head -n1)
    # A fresh local install: trust loopback connections, as the default DATABASE_URL (no password) expects.
    sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' "$conf/pg_hba.conf"
    sed -i -E "s/^#?listen_addresses.*/listen_addresses = '127.0.0.1'/" "$conf/postgresql.conf"
  fi
  log "starting PostgreSQL"
  local version
  version=$(ls /etc/postgresql | head -n1)
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  wait_port 5432 PostgreSQL 60
}

ensure_redis() {
  port_open 6379 && return 0
  if ! command -v redis-server >/dev/null; then
    can_install || cannot Redis 6379
    apt_install redis-server
  fi
  log "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_port 6379 Redis 30
}

ensure_rabbitmq() {
  if port_open 5672; then return 0; fi
  if ! command -v rabbitmq-server >/dev/null; then
    can_install || cannot RabbitMQ 5672
    apt_install rabbitmq-server
  fi
  log "starting RabbitMQ"
  # Installed but with the app stopped (rabbitmqctl stop_app): start the app; otherwise the node.
  if ! rabbitmqctl -q start_app >/dev/null 2>&1; then
    rabbitmq-server -detached || true
  fi
  wait_port 5672 RabbitMQ 120
}

ensure_peers() {
  # The real Python peers the interop tests drive: the seed's kombu publisher and Celery clients.
  if ! /usr/bin/python3 -c 'import kombu, celery, redis' 2>/dev/null; then
    can_install || { log "missing test peers: apt-get install python3-kombu python3-celery python3-redis"; exit 1; }
    apt_install python3-kombu python3-celery python3-redis
  fi
  # nginx's auth_request is the real client of ext-authz's HTTP contract.
  if ! command -v nginx >/dev/null && [[ ! -x /usr/sbin/nginx ]]; then
    can_install || { log "missing test peer: apt-get install nginx-light"; exit 1; }
    apt_install nginx-light
  fi
  # Headless Chromium drives the dashboard (playwright-core launches it).
  if [[ ! -x /usr/bin/chromium ]]; then
    can_install || { log "missing test peer: apt-get install chromium"; exit 1; }
    apt_install chromium
  fi
  # Python's grpcio: a gRPC client on gRPC C-core's own HTTP/2 and HPACK, not nghttp2's, for ext-authz's gRPC server.
  if ! /usr/bin/python3 -c 'import grpc' 2>/dev/null; then
    can_install || { log "missing test peer: apt-get install python3-grpcio"; exit 1; }
    apt_install python3-grpcio
  fi
  # h2load drives ext-authz's HTTP and gRPC checks in the authz bench without being the bottleneck.
  if ! command -v h2load >/dev/null; then
    can_install || { log "missing test peer: apt-get install nghttp2-client"; exit 1; }
    apt_install nghttp2-client
  fi
}

ensure_postgres
ensure_redis
ensure_rabbitmq
[[ $want_peers -eq 1 ]] && ensure_peers
log "PostgreSQL, Redis and RabbitMQ are up on 127.0.0.1"
