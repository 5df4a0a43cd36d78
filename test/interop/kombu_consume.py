"""A kombu consumer with accept=['json'] (the strictest the seed uses): prints
each event body cachecast publishes, as kombu decoded it, one JSON per line.

usage: kombu_consume.py <amqp url> <exchange> <count> <timeout s>
"""
import json
import sys

from kombu import Connection, Consumer, Exchange, Queue

url, exchange_name, count, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
exchange = Exchange(exchange_name, type="fanout", durable=True)
queue = Queue(name="", exchange=exchange, exclusive=True, auto_delete=True)
received = []


def on_message(body, message):
    received.append(body)
    message.ack()


with Connection(url) as conn:
    with Consumer(conn.channel(), queues=[queue], callbacks=[on_message], accept=["json"]):
        print("ready", flush=True)
        while len(received) < count:
            conn.drain_events(timeout=timeout)
for body in received:
    print(json.dumps(body), flush=True)
