"""A Celery 5 client, as the seed's API calls the match worker: send_task + AsyncResult.get().

No Celery configuration beyond the two URLs.

usage: celery_send.py <amqp url> <redis url> [--user-id ID] [--expires-ago S] [--timeout S]
                      [--sentinel-master NAME] <classification json>...

--user-id ID      kwargs={"user_id": ID}; ID is read as JSON when it parses (42 -> int), else a string
--expires-ago S   send with expires = now - S seconds (an already expired task)
--timeout S       AsyncResult.get(timeout=S), default 15
--sentinel-master NAME
                  the result backend is Redis behind Sentinel: <redis url> is then Celery's
                  sentinel://host:port/db;sentinel://... and NAME the master's name

Each classification is sent as args=[classification] (any JSON value, so that
tests can send bad shapes too) and awaited in turn. One JSON line per task:
  {"task_id": "...", "ok": true, "result": <the task's result>}
  {"task_id": "...", "ok": false, "error": "<exception class>", "module": "...", "message": "..."}
"""
import argparse
import json
import sys
from datetime import datetime, timedelta, timezone

from celery import Celery

parser = argparse.ArgumentParser()
parser.add_argument("broker")
parser.add_argument("backend")
parser.add_argument("--user-id")
parser.add_argument("--expires-ago", type=float)
parser.add_argument("--timeout", type=float, default=15.0)
parser.add_argument("--sentinel-master")
parser.add_argument("classifications", nargs="+")
opts = parser.parse_args()

app = Celery(broker=opts.broker, backend=opts.backend)
if opts.sentinel_master:
    app.conf.result_backend_transport_options = {"master_name": opts.sentinel_master}

kwargs = {}
if opts.user_id is not None:
    try:
        kwargs["user_id"] = json.loads(opts.user_id)
    except ValueError:
        kwargs["user_id"] = opts.user_id

for raw in opts.classifications:
    extra = {}
    if opts.expires_ago is not None:
        extra["expires"] = datetime.now(timezone.utc) - timedelta(seconds=opts.expires_ago)
    result = app.send_task(
        "character.match_reward",
        args=[json.loads(raw)],
        kwargs=kwargs,
        queue="character.match",
        **extra,
    )
    try:
        value = result.get(timeout=opts.timeout)
        line = {"task_id": result.id, "ok": True, "result": value}
    except Exception as exc:  # noqa: BLE001 - the class name is the answer
        line = {
            "task_id": result.id,
            "ok": False,
            "error": type(exc).__name__,
            "module": type(exc).__module__,
            "message": str(exc),
        }
    print(json.dumps(line, ensure_ascii=False), flush=True)
sys.exit(0)
