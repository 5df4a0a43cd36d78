"""A steady flow of Celery 5 tasks to character.match declared as a quorum queue, until stdin closes.

The Celery settings of README "On a RabbitMQ cluster" for Celery 5.2 (task_queues with
x-queue-type: quorum; 5.5 would say task_default_queue_type='quorum'), publisher confirms,
and the broker given as every node of the cluster (kombu fails over between them).

usage: celery_flow.py <amqp urls, ';'-separated> <redis url> <classification json>

One JSON line per task, in order:
  {"task_id": "...", "sent": true, "ok": true, "result": ...}
  {"task_id": "...", "sent": true, "ok": false, "error": "<exception class>"}   (sent, no result)
  {"sent": false, "error": "<exception class>"}                                 (send_task raised)
"""
import faulthandler
import json
import signal
import sys
import threading

from celery import Celery
from kombu import Exchange, Queue

broker, backend, classification = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])

app = Celery(broker=broker, backend=backend)
app.conf.task_queues = [
    Queue(
        "character.match",
        Exchange("character.match", type="direct"),
        routing_key="character.match",
        queue_arguments={"x-queue-type": "quorum"},
    )
]
app.conf.broker_transport_options = {"confirm_publish": True}
app.conf.task_publish_retry_policy = {"max_retries": 20, "interval_start": 0.2, "interval_step": 0.2, "interval_max": 1}

# Where a stalled client is stuck, on SIGUSR1 (the test's watchdog asks before replacing it).
faulthandler.register(signal.SIGUSR1, all_threads=True)

stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()

while not stop.is_set():
    try:
        result = app.send_task(
            "character.match_reward", args=[classification], queue="character.match", retry=True
        )
    except Exception as exc:  # noqa: BLE001 - the class name is the answer
        print(json.dumps({"sent": False, "error": type(exc).__name__}), flush=True)
        stop.wait(0.2)
        continue
    print(f"sent {result.id}", file=sys.stderr, flush=True)
    try:
        value = result.get(timeout=60)
        line = {"task_id": result.id, "sent": True, "ok": True, "result": value}
    except Exception as exc:  # noqa: BLE001
        line = {"task_id": result.id, "sent": True, "ok": False, "error": type(exc).__name__}
    print(json.dumps(line), flush=True)
