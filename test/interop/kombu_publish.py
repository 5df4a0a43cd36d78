"""The seed 000 publisher, as the Eco2 Python services run it (kombu, JSON).

usage: kombu_publish.py <amqp url> <exchange> <json event>...
"""
import json
import sys

from kombu import Connection, Exchange, Producer

url, exchange_name, *events = sys.argv[1:]
exchange = Exchange(exchange_name, type="fanout", durable=True)
with Connection(url) as conn:
    producer = Producer(conn.channel(), exchange=exchange, serializer="json")
    for raw in events:
        producer.publish(json.loads(raw), exchange=exchange, declare=[exchange])
print("published", len(events))
