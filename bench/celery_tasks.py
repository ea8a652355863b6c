"""Celery side of bench/queue: the peer our queue is measured against, configured as the issue
asks (late acks, prefetch 1, Redis broker). The broker URL comes from the environment (REDIS_URL,
database 2), never a command line."""
import os
import time
import urllib.parse as u

import redis
from celery import Celery

p = u.urlparse(os.environ["REDIS_URL"])
BROKER = p._replace(path="/2").geturl()
app = Celery("bench", broker=BROKER)
app.conf.update(task_acks_late=True, worker_prefetch_multiplier=1, task_ignore_result=True,
                broker_connection_retry_on_startup=True, worker_hijack_root_logger=False)
_r = None


def r():
    global _r
    if _r is None:
        _r = redis.Redis.from_url(BROKER)
    return _r


@app.task
def noop():
    pass


@app.task
def stamp(key, i):
    start = time.time()
    r().hset(key, f"{i}:s", repr(start))
    r().hset(key, f"{i}:e", repr(time.time()))
