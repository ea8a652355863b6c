"""The web benchmark's client (run by bench/web/run, which sets the environment).

Fills the metadata with RUNS finished DAG runs through psql, then times each route: REQUESTS
requests after 3 warm-ups, one at a time, reading the server's own time from Server-Timing.
"""
import http.cookiejar
import json
import os
import statistics
import subprocess
import time
import urllib.parse
import urllib.request

base = "http://127.0.0.1:%s" % os.environ["ETL_WEB_PORT"]
runs, requests = int(os.environ["RUNS"]), int(os.environ["REQUESTS"])
schema, loads, mart = os.environ["ETL_SCHEMA"], os.environ["ETL_LOADS_SCHEMA"], os.environ["ETL_DATAMART_SCHEMA"]
token = os.environ["ETL_WEB_API_TOKEN"]


def api(path):
    req = urllib.request.Request(base + path, headers={"Authorization": "Bearer " + token})
    return json.load(urllib.request.urlopen(req))


def psql(sql):
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1"], input=sql.encode(), check=True)


# 1. The DAGs and their tasks, from the API; RUNS runs spread over them, newest last.
dags = {d["dag"]: [t["task"] for t in api("/api/dags/" + d["dag"])["tasks"]] for d in api("/api/dags")}
names = sorted(dags)
sql = ["BEGIN;"]
for i, dag in enumerate(names):
    k = runs // len(names) + (1 if i < runs % len(names) else 0)
    tasks = "ARRAY[%s]" % ",".join("'%s'" % t for t in dags[dag])
    sql.append(f"""
WITH r AS (
  INSERT INTO {schema}.dag_run (dag_id, logical_date, run_type, state, started_at, ended_at)
  SELECT '{dag}', timestamptz '2023-01-01' + g * interval '1 day', 'scheduled', CASE WHEN g % 17 = 0 THEN 'failed' ELSE 'success' END,
         timestamptz '2023-01-01' + g * interval '1 day' + interval '1 day', timestamptz '2023-01-01' + g * interval '1 day' + interval '1 day 3 minutes'
  FROM generate_series(1, {k}) g RETURNING run_id, state, started_at
), t AS (
  INSERT INTO {schema}.task_instance (run_id, task_id, state, try_number, max_tries, queue, worker, started_at, ended_at, error)
  SELECT r.run_id, t, CASE WHEN r.state = 'failed' AND n = 1 THEN 'failed' WHEN r.state = 'failed' THEN 'upstream_failed' ELSE 'success' END,
         1, 1, 'default', 'bench-worker', r.started_at + n * interval '5 seconds', r.started_at + n * interval '5 seconds' + interval '4 seconds',
         CASE WHEN r.state = 'failed' AND n = 1 THEN 'bench: a failure' END
  FROM r, unnest({tasks}) WITH ORDINALITY AS u(t, n) RETURNING run_id, task_id, state, worker, started_at, ended_at, error
)
INSERT INTO {schema}.task_attempt (run_id, task_id, try_number, worker, state, started_at, ended_at, error, log)
SELECT run_id, task_id, 1, worker, state, started_at, ended_at, error, repeat('a log line of the attempt, as tasks write them' || E'\\n', 20)
FROM t WHERE state <> 'upstream_failed';""")
sql.append(f"""
INSERT INTO {loads}.load (pipeline, source, state, started_at, finished_at, rows_read, rows_loaded, rows_rejected, bytes)
SELECT (ARRAY['b2b','ip2geo','weblog'])[1 + g % 3], 'source-' || g, 'finished', now() - g * interval '1 hour', now() - g * interval '1 hour' + interval '40 seconds',
       1000100, 1000000, 100, 123456789 FROM generate_series(1, 200) g;
INSERT INTO {loads}.reject (load_id, source, line_number, raw, reason)
SELECT l.id, l.source, n * 97, 'a malformed line ' || n, 'expected 6 fields, found 2' FROM {loads}.load l, generate_series(1, 100) n;
INSERT INTO {mart}.monthly_sales (logical_date, month, orders, units, revenue)
SELECT d::date, (date_trunc('month', d) - m * interval '1 month')::date, 100 + m, 1000 + m, 12345.67
FROM generate_series(timestamptz '2024-01-01', timestamptz '2024-01-30', interval '1 day') d, generate_series(1, 12) m;
COMMIT;""")
started = time.time()
psql("\n".join(sql))
print("filled %d runs (%d DAGs) in %.1f s" % (runs, len(names), time.time() - started))
biggest = max(names, key=lambda d: len(dags[d]))
run = api("/api/dags/" + biggest)["summary"]["recent_runs"][0]["run"]
task = dags[biggest][0]

# 2. A browser session.
jar = http.cookiejar.CookieJar()
opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
form = urllib.parse.urlencode({"username": os.environ["ETL_WEB_USER"], "password": os.environ["ETL_WEB_PASSWORD"]}).encode()
opener.open(base + "/login", form)

routes = ["/dags", "/dags?tag=report", "/dags/%s" % biggest, "/dags/%s/runs/%d" % (biggest, run),
          "/dags/%s/runs/%d/tasks/%s" % (biggest, run, task), "/queues", "/loads", "/loads/1", "/reports",
          "/reports/monthly-sales", "/api/dags", "/api/dags/%s" % biggest, "/metrics"]
print("\n| route | server p50 ms | server p95 ms | server max ms | client p50 ms | bytes |")
print("|---|---|---|---|---|---|")
worst = 0.0
for route in routes:
    server, client, size = [], [], 0
    for i in range(requests + 3):
        t0 = time.perf_counter()
        req = urllib.request.Request(base + route, headers={"Authorization": "Bearer " + token} if route.startswith(("/api", "/metrics")) else {})
        resp = (urllib.request.urlopen if route.startswith(("/api", "/metrics")) else opener.open)(req)
        body = resp.read()
        elapsed = (time.perf_counter() - t0) * 1000
        if resp.status != 200 or "/login" in resp.url:
            raise SystemExit("bench: %s answered %s at %s" % (route, resp.status, resp.url))
        if i >= 3:
            timing = resp.headers.get("Server-Timing", "app;dur=0").split("dur=")[1]
            server.append(float(timing))
            client.append(elapsed)
            size = len(body)
    server.sort()
    p95 = server[int(len(server) * 0.95) - 1]
    worst = max(worst, p95)
    print("| `%s` | %.1f | %.1f | %.1f | %.1f | %d |" % (route, statistics.median(server), p95, server[-1], statistics.median(client), size))
print("\nworst p95 server time: %.1f ms (target < 100 ms) with %d runs" % (worst, runs))
