"""Round-trip latency from one Python process, for bench/celery.bench.ts.

usage:
  celery_latency.py celery <amqp url> <redis url> <n> <warmup> <classification json>
      send_task("character.match_reward", queue="character.match") then
      AsyncResult.get(), n times in sequence (after `warmup` unmeasured ones);
      no Celery configuration beyond the two URLs.
  celery_latency.py burst <amqp url> <redis url> <n> <warmup> <classification json>
      throughput: `warmup` tasks in sequence, then n send_task calls in a row
      (no wait between them), until every result is stored (polled with
      EXISTS, for 30 s at most); prints {"tasks_per_s": results stored / time
      from the first send, "send_s", "errors": tasks not done in time}. One Python sender: its send rate bounds the figure.
  celery_latency.py echo-worker <amqp url> <redis url> <queue>
      the ceilings' far end: a bare kombu consumer that stores a result in
      Redis (SETEX + PUBLISH in one pipeline) for each message, then acks. On
      the queue character.match it answers Celery tasks the way Celery's
      backend stores results (celery-task-meta-<id>, result null), so the
      Celery client above can measure it: a worker with no work and no Celery.
  celery_latency.py echo <amqp url> <redis url> <queue> <n> <warmup>
      the ceiling: publish with kombu, wait on the Redis channel: the same hops
      as a Celery round trip, without Celery on either side.

The measuring modes print one JSON line: {"latencies_ms": [...], "errors": k}.
"""
import json
import sys
import threading
import time
import uuid

mode = sys.argv[1]

if mode == "celery":
    from celery import Celery

    broker, backend, n, warmup, raw = sys.argv[2:7]
    app = Celery(broker=broker, backend=backend)
    classification = json.loads(raw)
    latencies, errors = [], 0
    for i in range(int(warmup) + int(n)):
        started = time.perf_counter()
        result = app.send_task(
            "character.match_reward", args=[classification], queue="character.match"
        )
        try:
            result.get(timeout=30)
        except Exception:  # noqa: BLE001
            errors += 1
        elapsed = (time.perf_counter() - started) * 1000
        if i >= int(warmup):
            latencies.append(elapsed)
    print(json.dumps({"latencies_ms": latencies, "errors": errors}), flush=True)

elif mode == "burst":
    from celery import Celery

    broker, backend, n, warmup, raw = sys.argv[2:7]
    app = Celery(broker=broker, backend=backend)
    classification = json.loads(raw)
    send = lambda: app.send_task(  # noqa: E731
        "character.match_reward", args=[classification], queue="character.match"
    )
    for _ in range(int(warmup)):
        send().get(timeout=30)
    import redis

    r = redis.Redis.from_url(backend)
    started = time.perf_counter()
    results = [send() for _ in range(int(n))]
    sent = time.perf_counter() - started
    # Done when every result is stored (polled in Redis, not through get(): the
    # Celery client's result consumer, not the worker, would set the pace).
    keys = ["celery-task-meta-" + res.id for res in results]
    deadline = time.monotonic() + 30
    done = 0
    while done < len(keys) and time.monotonic() < deadline:
        time.sleep(0.002)
        done = r.exists(*keys)
    elapsed = time.perf_counter() - started
    # Past the deadline: the rate so far, the rest counted as errors.
    print(json.dumps({"tasks_per_s": done / elapsed, "send_s": sent, "errors": len(keys) - done}), flush=True)

elif mode == "echo-worker":
    import redis
    from kombu import Connection, Queue

    from datetime import datetime

    from kombu import Exchange

    broker, backend, queue_name = sys.argv[2:5]
    r = redis.Redis.from_url(backend)
    celery_mode = queue_name == "character.match"
    if celery_mode:
        # Declared as Celery declares a queue given by name.
        queue = Queue(queue_name, Exchange(queue_name, type="direct"), routing_key=queue_name)
    else:
        queue = Queue(queue_name, durable=False, auto_delete=True)

    def on_message(body, message):
        task_id = message.headers["id"]
        if celery_mode:
            key = "celery-task-meta-" + task_id
            value = json.dumps({
                "status": "SUCCESS", "result": None, "traceback": None, "children": [],
                "date_done": datetime.utcnow().isoformat(), "task_id": task_id,
            })
        else:
            key = "echo-meta-" + task_id
            value = json.dumps({"status": "SUCCESS", "result": body})
        with r.pipeline() as pipe:
            pipe.setex(key, 60, value)
            pipe.publish(key, value)
            pipe.execute()
        message.ack()

    with Connection(broker) as conn:
        with conn.Consumer(queue, callbacks=[on_message], accept=["json"]):
            print("ready", flush=True)
            while True:
                conn.drain_events()

elif mode == "echo":
    import redis
    from kombu import Connection, Producer

    broker, backend, queue_name, n, warmup = sys.argv[2:7]
    r = redis.Redis.from_url(backend)
    pubsub = r.pubsub(ignore_subscribe_messages=True)
    latencies, errors = [], 0
    with Connection(broker) as conn:
        producer = Producer(conn.channel(), serializer="json")
        for i in range(int(warmup) + int(n)):
            task_id = str(uuid.uuid4())
            key = "echo-meta-" + task_id
            started = time.perf_counter()
            pubsub.subscribe(key)  # before publishing, as Celery's backend does
            producer.publish(
                {"middle_category": "plastic"},
                routing_key=queue_name,
                headers={"id": task_id},
                delivery_mode=2,
            )
            got = None
            deadline = time.monotonic() + 30
            while got is None and time.monotonic() < deadline:
                got = pubsub.get_message(timeout=1.0)
            pubsub.unsubscribe(key)
            elapsed = (time.perf_counter() - started) * 1000
            if got is None:
                errors += 1
            if i >= int(warmup):
                latencies.append(elapsed)
    print(json.dumps({"latencies_ms": latencies, "errors": errors}), flush=True)

else:
    sys.exit(f"unknown mode {mode}")
