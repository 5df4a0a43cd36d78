"""The seed's Python match worker, for bench/celery.bench.ts: a Celery worker
(`-P threads`) whose task matches from an in-process dict (seed 000 after its
local-cache change). The catalog comes as JSON in the CATALOG_JSON environment
variable; broker and backend in CELERY_BROKER / CELERY_BACKEND.

run: python3 -m celery -A celery_worker worker -P threads -c 4 -Q character.match
"""
import json
import os

from celery import Celery

app = Celery(
    "celery_worker", broker=os.environ["CELERY_BROKER"], backend=os.environ["CELERY_BACKEND"]
)
_BY_LABEL = {}
for character in json.loads(os.environ.get("CATALOG_JSON", "[]")):
    _BY_LABEL.setdefault(character["match_label"], character)


@app.task(name="character.match_reward")
def match_reward(classification, user_id=None):
    return _BY_LABEL.get((classification or {}).get("middle_category"))
