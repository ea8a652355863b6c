"""Measures Celery 5 the way bench/queue measures ours; prints
`tasks_per_s_1_worker tasks_per_s_2_workers chain_p50_ms chain_p99_ms`."""
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from celery import chain  # noqa: E402

import celery_tasks as ct  # noqa: E402

tasks, chain_len = int(sys.argv[1]), int(sys.argv[2])
here = os.path.dirname(os.path.abspath(__file__))
r = ct.r()


def start_workers(n):
    procs = []
    for i in range(n):
        procs.append(subprocess.Popen(
            [os.path.join(here, ".venv/bin/celery"), "-A", "celery_tasks", "worker", "-c", "1", "--pool", "prefork",
             "-n", f"bench{i}@%h", "--loglevel", "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"],
            cwd=here, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    # Wait until every worker answers a ping.
    deadline = time.time() + 60
    while time.time() < deadline:
        replies = ct.app.control.ping(timeout=0.5) or []
        if len(replies) >= n:
            break
    return procs


def stop(procs):
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait()


def throughput(n):
    r.flushdb()
    procs = start_workers(n)
    t0 = time.time()
    for _ in range(tasks):
        ct.noop.apply_async()
    # Drained: nothing waiting in the queue and nothing unacknowledged.
    while r.llen("celery") > 0 or r.hlen("unacked") > 0:
        time.sleep(0.005)
    elapsed = time.time() - t0
    stop(procs)
    return tasks / elapsed


def latency():
    r.flushdb()
    procs = start_workers(1)
    key = "bench:chain"
    chain(*[ct.stamp.si(key, i) for i in range(chain_len)]).apply_async()
    while r.hlen(key) < 2 * chain_len:
        time.sleep(0.01)
    h = {k.decode(): float(v) for k, v in r.hgetall(key).items()}
    gaps = sorted((h[f"{i + 1}:s"] - h[f"{i}:e"]) * 1000 for i in range(chain_len - 1))
    stop(procs)
    return statistics.median(gaps), gaps[min(len(gaps) - 1, int(0.99 * len(gaps)))]


one = throughput(1)
two = throughput(2)
p50, p99 = latency()
print(f"{one:.1f} {two:.1f} {p50:.2f} {p99:.2f}")
