#!/usr/bin/env bash
# `npm start`: the whole local stack. First the same step CI runs (RabbitMQ,
# Redis and PostgreSQL reachable: started, or installed on Debian as root, or
# one line saying what to run), then a fresh build, then `cachecast stack` in
# the foreground (migrations, the sample catalog if the database has none,
# every service, the dashboard on http://127.0.0.1:8000). Ctrl-C stops it all.
# Arguments go to `cachecast stack`: npm start -- --port-offset 100
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-services.sh
npm run build --silent
exec node bin/cachecast.js stack "$@"
