"""Fault injection: the six pipelines once clean, once under faults, then compared (bench/faults/run).

Environment (set by bench/faults/run): BIN (our executables), WORK (a scratch folder), WORKERS,
KILL_EVERY, ETL_WEBLOG_LINES, ETL_ORDERS, the servers' DATABASE_URL / REDIS_URL / ETL_SECRET_KEY,
PG* and REDISCLI_* for psql and redis-cli (passwords only in the environment).
"""
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time

BIN, WORK = os.environ["BIN"], os.environ["WORK"]
WORKERS, KILL_EVERY = int(os.environ["WORKERS"]), float(os.environ["KILL_EVERY"])
# A frozen worker or scheduler stays stopped this long; Redis stays down this long (issue 15).
FREEZE, REDIS_DOWN = 20, 8
# A backfill of three days, with the default daily schedule on: the scheduler also makes each DAG's
# run for the latest complete day (yesterday, UTC) on its own, beside the backfill's.
BACKFILL = ("2024-06-13", "2024-06-15")
DATES = ["2024-06-13", "2024-06-14", "2024-06-15",
         time.strftime("%Y-%m-%d", time.gmtime(time.time() - 86400))]
DAGS = ["b2b", "ip2geo", "weblog", "monthly-sales", "popular-devices", "popular-products"]
REPORTS = {"monthly-sales": "monthly_sales", "popular-devices": "popular_devices", "popular-products": "popular_products"}
random.seed(int(os.environ.get("FAULTS_SEED", "1")))
started_at = time.time()


def say(msg):
    print("[%6.1fs] %s" % (time.time() - started_at, msg), flush=True)


def psql(sql):
    out = subprocess.run(["psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-c", sql], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError("psql: %s" % out.stderr.strip())
    return out.stdout.strip()


def psql_soft(sql):
    """None while Postgres is down (during its restart)."""
    try:
        return psql(sql)
    except RuntimeError:
        return None


def redis(*args):
    out = subprocess.run(["redis-cli", "-h", os.environ["REDISCLI_HOST"], "-p", os.environ["REDISCLI_PORT"], "--no-auth-warning", *args],
                         capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else None


class Run:
    """One run of the six DAGs in schemas, key prefix and folders of its own."""

    def __init__(self, label):
        self.label = label
        self.dir = os.path.join(WORK, label)
        os.makedirs(os.path.join(self.dir, "logs"), exist_ok=True)
        self.schema = "f_" + label
        self.env = dict(os.environ)
        self.env.update({
            "ETL_ENV_FILE": "/dev/null", "ETL_SCHEMA": self.schema, "ETL_REDIS_PREFIX": label + ":",
            "ETL_DATALAKE_SCHEMA": label + "_dl", "ETL_LOADS_SCHEMA": label + "_ld", "ETL_DATAMART_SCHEMA": label + "_dm",
            "ETL_GENERATED_DIR": os.path.join(self.dir, "generated"), "ETL_REPORTS_DIR": os.path.join(self.dir, "reports"),
            "ETL_WEBLOG_DIR": os.path.join(self.dir, "apache-logs"), "ETL_HISTORY_START": "2024-01-01",
            "ETL_DAGS_ARE_PAUSED_AT_CREATION": "false", "ETL_SEED": "7", "ETL_LOG_LEVEL": "info",
            "ETL_WORKER_DEAD_AFTER": "3", "ETL_SCHEDULER_LEASE": "3", "ETL_SCHEDULER_RECONCILE": "3",
        })
        self.workers, self.schedulers, self.n = {}, {}, 0
        # Workers this script killed, and those that ended by themselves (a worker must wait out a
        # Redis or Postgres restart, not exit: each is reported as a problem, and replaced).
        self.killed, self.exited = set(), []

    def spawn(self, program, name, args=()):
        self.n += 1
        env = dict(self.env)
        env["ETL_WORKER_NAME" if program == "worker" else "ETL_SCHEDULER_NAME"] = name
        log = open(os.path.join(self.dir, "logs", name + ".log"), "ab")
        return subprocess.Popen([os.path.join(BIN, program), *args], env=env, stdout=log, stderr=subprocess.STDOUT)

    def start_worker(self):
        name = "%s-w%d" % (self.label, self.n + 1)
        self.workers[name] = self.spawn("worker", name, ["--concurrency", "2"])
        return name

    def top_up(self):
        """Replaces the workers that ended without being killed, so that WORKERS stay live (the
        periodic kills assume as much: with one worker left, every kill hits the one running the
        tasks, and a load that needs longer than KILL_EVERY never ends)."""
        for name, p in list(self.workers.items()):
            if p.poll() is not None and name not in self.killed and name not in self.exited:
                self.exited.append(name)
                say("worker %s exited by itself (exit status %s); %s started" % (name, p.returncode, self.start_worker()))

    def start_scheduler(self):
        name = "%s-s%d" % (self.label, self.n + 1)
        self.schedulers[name] = self.spawn("scheduler", name)
        return name

    def etlctl(self, *args):
        out = subprocess.run([os.path.join(BIN, "etlctl"), *args], env=self.env, capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError("etlctl %s: %s" % (" ".join(args), out.stderr.strip()))
        return out.stdout

    def start(self):
        self.etlctl("migrate")
        self.start_scheduler()
        self.start_scheduler()  # a standby
        for _ in range(WORKERS):
            self.start_worker()
        for d in REPORTS:  # a report DAG's backfill brings its upstream DAGs' runs for the same dates
            self.etlctl("dags", "backfill", d, "--from", BACKFILL[0], "--to", BACKFILL[1], "--no-wait")
        self.t0 = time.time()

    def states(self):
        rows = psql_soft("SELECT dag_id || ' ' || logical_date::date || '=' || state FROM %s.dag_run" % self.schema)
        return dict(r.split("=") for r in rows.splitlines()) if rows else None

    def finished(self):
        s = self.states()
        return s is not None and len(s) == len(DAGS) * len(DATES) and all(v in ("success", "failed") for v in s.values())

    def stop(self):
        for p in list(self.workers.values()) + list(self.schedulers.values()):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in list(self.workers.values()) + list(self.schedulers.values()):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()

    def settle(self):
        """Recomputes the reports shown out of date, as an operator would (etlctl reports list
        --out-of-date, then a backfill with --rerun all of each): with the daily schedule and a
        backfill at once, a report for yesterday may be computed before the backfill's older log
        files are loaded (late lines, by their timestamps, for that report); which one comes first
        depends on timing, so the two runs are compared once each has recomputed what it shows out
        of date."""
        self.recomputed = []
        for _ in range(3):
            stale = json.loads(self.etlctl("reports", "list", "--out-of-date", "--json"))
            if not stale:
                return
            for r in stale:
                self.etlctl("dags", "backfill", r["report"], "--from", r["date"], "--to", r["date"], "--rerun", "all",
                            "--timeout", "900")
                self.recomputed.append("%s %s" % (r["report"], r["date"]))
        raise SystemExit("%s run: reports still out of date after recomputing them 3 times; logs in %s"
                         % (self.label, self.dir))

    def leader(self):
        return psql_soft("SELECT holder FROM %s.scheduler_lease WHERE expires_at > now()" % self.schema) or None


def wait_until(cond, timeout, step=0.05):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return True
        time.sleep(step)
    return False


def run_clean():
    r = Run("clean")
    r.start()
    say("clean run: 2 schedulers, %d workers, six DAGs for %s (a backfill and the daily schedule)" % (WORKERS, ", ".join(DATES)))
    if not wait_until(lambda: r.top_up() or r.finished(), 1800, 0.2):
        raise SystemExit("the clean run did not finish in 30 minutes; logs in %s" % r.dir)
    r.duration = time.time() - r.t0
    r.settle()
    r.stop()
    say("clean run finished in %.1f s: %s; recomputed as out of date: %s"
        % (r.duration, r.states(), ", ".join(r.recomputed) or "none"))
    return r


def run_faulty(clean):
    r = Run("faulty")
    r.start()
    say("faulty run started; worker kills every %.1f s" % KILL_EVERY)
    faults = []  # (kind, seconds to recover, detail, recovered)
    # The one-off faults come first, back to back (the scheduler, Redis and Postgres each once the
    # previous one is recovered from; a worker kill's recovery is watched on the side), so that they
    # hit the pipeline while it works; then a worker is killed every KILL_EVERY seconds until the end.
    plan = ["scheduler", "worker", "redis", "worker-frozen", "postgres", "scheduler-frozen", "worker", "redis-stopped"]
    time.sleep(0.5)
    next_kill = time.time()
    while not r.finished():
        r.top_up()
        if plan:
            faults.append(inject(r, plan.pop(0), aim=True))
            next_kill = time.time() + KILL_EVERY
        elif time.time() >= next_kill:
            faults.append(inject(r, "worker"))
            next_kill = time.time() + KILL_EVERY
        else:
            time.sleep(0.1)
        if time.time() - r.t0 > 1800:
            raise SystemExit("the faulty run did not finish in 30 minutes; logs in %s" % r.dir)
    r.duration = time.time() - r.t0
    # Worker kills report when their task has moved; collect them.
    done = []
    for f in faults:
        if isinstance(f, tuple) and len(f) == 2 and isinstance(f[0], threading.Thread):
            f[0].join()
            done.append(f[1]["fault"])
        else:
            done.append(f)
    faults[:] = done
    r.settle()
    r.stop()
    if plan:
        raise SystemExit("the pipeline finished before these faults were injected: %s. Fix: use more data (SIZE=medium, or large with a release build)"
                         % ", ".join(plan))
    say("faulty run finished in %.1f s: %s; recomputed as out of date: %s"
        % (r.duration, r.states(), ", ".join(r.recomputed) or "none"))
    return r, faults


def inject(r, kind, aim=False):
    """Injects one fault. For the scheduler, Redis and Postgres it waits for the recovery and returns
    (kind, seconds, detail, recovered); for a worker it returns (watcher thread, result) and the
    thread fills result["fault"] when the killed worker's tasks run elsewhere."""
    t0 = time.time()
    if kind in ("worker", "worker-frozen"):
        frozen = kind == "worker-frozen"
        live = sorted(n for n, p in r.workers.items() if p.poll() is None)
        busy = (psql_soft("SELECT DISTINCT split_part(worker, '/', 1) FROM %s.task_instance WHERE state = 'running'" % r.schema) or "").split()
        # The kills of the opening sequence aim at a worker with a task running (the interesting
        # case); the periodic ones pick any worker. Aiming every kill at the busy one starves an
        # all-or-nothing task longer than KILL_EVERY (a b2b load of 200,000 orders was killed 12
        # times running, each time 3 s after it restarted).
        name = random.choice([n for n in live if n in busy] or live) if aim else random.choice(live)
        # A worker records its attempts as <worker>/<slot>.
        running = psql_soft("SELECT run_id || ':' || task_id FROM %s.task_instance WHERE state = 'running' AND worker LIKE '%s/%%'"
                            % (r.schema, name)) or ""
        tasks = [t for t in running.splitlines() if t]
        if frozen:
            # SIGSTOP for FREEZE seconds, then SIGCONT: its leases expire, another worker takes its
            # tasks over and ends its backends; once continued it must write nothing more.
            os.kill(r.workers[name].pid, signal.SIGSTOP)
            replacement = "no worker"
        else:
            r.killed.add(name)
            r.workers[name].kill()
            r.workers[name].wait()
            replacement = r.start_worker()

        def moved():
            for t in tasks:
                run, task = t.split(":", 1)
                row = psql_soft("SELECT state || '|' || coalesce(worker, '') FROM %s.task_instance WHERE run_id = %s AND task_id = '%s'"
                                % (r.schema, run, task))
                if row is None or (row.startswith("running|") and row.split("|", 1)[1].startswith(name + "/")):
                    return False
            return True
        detail = "%s %s with %s; %s started" % ("SIGSTOP %d s" % FREEZE if frozen else "SIGKILL", name,
                                                 ", ".join(tasks) if tasks else "no task running", replacement)
        result = {}

        def watch():
            # Waited for on a thread of its own: the next fault does not wait for this recovery
            # (a reclaimed task can wait for a free slot for many seconds while others load). The
            # time measured may therefore include a Redis or Postgres restart injected meanwhile.
            result["fault"] = ("worker", time.time() - t0, detail + "; the watch failed", False)
            ok = wait_until(moved, 120)
            result["fault"] = (kind if tasks else kind + " (idle)", time.time() - t0, detail if ok else detail + "; NOT RECOVERED in 120 s", ok)
            say("  recovered from the %s of %s in %.1f s%s" % ("freeze" if frozen else "kill", name, result["fault"][1], "" if ok else ": NOT RECOVERED"))
            if frozen:
                time.sleep(max(0, FREEZE - (time.time() - t0)))
                try:
                    os.kill(r.workers[name].pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass  # a later kill picked it meanwhile
        say("fault: " + detail)
        watcher = threading.Thread(target=watch)
        watcher.start()
        return (watcher, result)
    if kind == "scheduler":
        if not wait_until(lambda: r.leader() in r.schedulers, 30):
            return ("scheduler", time.time() - t0, "no scheduler held the lease within 30 s: none to kill", False)
        leader = r.leader()
        r.schedulers[leader].kill()
        r.schedulers[leader].wait()
        ok = wait_until(lambda: r.leader() not in (None, leader), 60)
        new_leader = r.leader()
        standby = r.start_scheduler()
        detail = "SIGKILL the leading scheduler %s; %s took over; %s started as the new standby" % (leader, new_leader, standby)
        say("fault: " + detail + " (recovered in %.1f s)" % (time.time() - t0))
        return ("scheduler", time.time() - t0, detail, ok)
    if kind == "scheduler-frozen":
        if not wait_until(lambda: r.leader() in r.schedulers, 30):
            return (kind, time.time() - t0, "no scheduler held the lease within 30 s: none to freeze", False)
        leader = r.leader()
        os.kill(r.schedulers[leader].pid, signal.SIGSTOP)
        ok = wait_until(lambda: r.leader() not in (None, leader), 60)
        took = time.time() - t0
        new_leader = r.leader()
        # Continued FREEZE s after the stop, on the side: the next fault does not wait for it.
        threading.Timer(max(0, FREEZE - took), lambda: os.kill(r.schedulers[leader].pid, signal.SIGCONT)).start()
        detail = "SIGSTOP the leading scheduler %s for %d s; %s took over" % (leader, FREEZE, new_leader)
        say("fault: " + detail + " (recovered in %.1f s)" % took)
        return (kind, took, detail, ok)
    if kind in ("redis", "redis-stopped"):
        if kind == "redis":
            subprocess.run(["scripts/services", "restart", "redis"], check=True, capture_output=True)
        else:
            subprocess.run(["scripts/services", "stop", "redis"], check=True, capture_output=True)
            time.sleep(REDIS_DOWN)
            subprocess.run(["scripts/services", "start-one", "redis"], check=True, capture_output=True)
        up = time.time()
        live = [n for n, p in r.workers.items() if p.poll() is None]

        def heartbeats():
            for n in live:
                score = redis("ZSCORE", r.label + ":heartbeats", n)
                if not score or float(score) / 1000 < up:
                    return False
            return True
        ok = wait_until(heartbeats, 60)
        detail = "%s Redis (down %.1f s); every live worker heartbeating again" % (
            "restart" if kind == "redis" else "stop, then start", up - t0)
        say("fault: " + detail + " (recovered in %.1f s)" % (time.time() - t0))
        return (kind, time.time() - t0, detail, ok)
    if kind == "postgres":
        before = psql_soft("SELECT extract(epoch FROM expires_at) FROM %s.scheduler_lease" % r.schema)
        subprocess.run(["scripts/services", "restart", "postgres"], check=True, capture_output=True)
        up = time.time()

        def renewed():
            v = psql_soft("SELECT extract(epoch FROM expires_at) FROM %s.scheduler_lease" % r.schema)
            return v is not None and before is not None and float(v) > float(before) and float(v) > up
        ok = wait_until(renewed, 60)
        detail = "restart Postgres (down %.1f s); the scheduler renewed its lease again" % (up - t0)
        say("fault: " + detail + " (recovered in %.1f s)" % (time.time() - t0))
        return ("postgres", time.time() - t0, detail, ok)
    raise ValueError(kind)


def compare(clean, faulty):
    problems, rows = [], 0
    for dag, state in sorted(faulty.states().items()):
        if state != "success":
            problems.append("DAG %s ended %s in the faulty run" % (dag, state))
    for report, table in REPORTS.items():
        q = "COPY (SELECT * FROM %s.%s ORDER BY 1, 2, 3) TO STDOUT"
        a, b = psql(q % (clean.env["ETL_DATAMART_SCHEMA"], table)), psql(q % (faulty.env["ETL_DATAMART_SCHEMA"], table))
        n = len(a.splitlines())
        rows += n
        if a != b:
            problems.append("datamart table %s differs (%d rows clean, %d faulty)" % (table, n, len(b.splitlines())))
        if n == 0:
            problems.append("datamart table %s is empty" % table)
        for date in DATES:
            path = "%s/date=%s/report.csv" % (report, date)
            fa, fb = (os.path.join(r.env["ETL_REPORTS_DIR"], path) for r in (clean, faulty))
            if not (os.path.exists(fa) and os.path.exists(fb) and open(fa, "rb").read() == open(fb, "rb").read()):
                problems.append("report file %s differs or is missing" % path)
    tables = {"company": "t", "product": "t", "inventory": "t", "customer": "t", "orders": "t", "sales": "t", "ip2geo": "t",
              # a file's id comes from a sequence, which a rolled-back transaction may advance: compare the rows without it
              "weblogs": "(t.line_number, t.client_ip, t.username, t.requested_at, t.method, t.path, t.status, t.bytes,"
                         " t.referer, t.user_agent, t.device, t.os, t.country_code)"}
    for table, row in tables.items():
        q = "SELECT count(*) || ' ' || count(DISTINCT %s) || ' ' || coalesce(md5(string_agg(%s::text, E'\\n' ORDER BY %s::text)), '-') FROM %%s.%s t" % (row, row, row, table)
        a, b = psql(q % clean.env["ETL_DATALAKE_SCHEMA"]), psql(q % faulty.env["ETL_DATALAKE_SCHEMA"])
        total, distinct, _ = b.split()
        rows += int(a.split()[0])
        if total != distinct:
            problems.append("datalake %s has %d duplicate rows" % (table, int(total) - int(distinct)))
        if a != b:
            problems.append("datalake %s differs: clean %s, faulty %s (count, distinct, md5)" % (table, a.split()[0], total))
    return problems, rows


def main():
    clean = run_clean()
    faulty, faults = run_faulty(clean)
    problems, rows = compare(clean, faulty)
    redelivered = psql("SELECT count(*) FROM %s.task_attempt WHERE log LIKE '%%delivered again to%%'" % faulty.schema)
    retried = psql("SELECT count(*) FROM %s.task_attempt WHERE try_number > 1" % faulty.schema)
    print("\n== fault injection: %s log lines, %s orders, %d workers" % (os.environ["ETL_WEBLOG_LINES"], os.environ["ETL_ORDERS"], WORKERS))
    print("clean run %.1f s, faulty run %.1f s" % (clean.duration, faulty.duration))
    print("faults injected: %d" % len(faults))
    by_kind = {}
    for kind, secs, _, ok in faults:
        by_kind.setdefault(kind, []).append(secs)
        if not ok:
            problems.append("no recovery from a %s fault" % kind)
    print("| fault | count | recovery median s | recovery max s |")
    print("|---|---|---|---|")
    for kind in ("worker", "worker (idle)", "worker-frozen", "worker-frozen (idle)", "scheduler", "scheduler-frozen",
                 "redis", "redis-stopped", "postgres"):
        if kind in by_kind:
            v = by_kind[kind]
            print("| %s | %d | %.1f | %.1f |" % (kind, len(v), statistics.median(v), max(v)))
    print("tasks redelivered after a worker died: %s; attempts retried (try > 1): %s" % (redelivered, retried))
    exited = clean.exited + faulty.exited
    print("workers that exited by themselves: %d%s" % (len(exited), " (%s)" % ", ".join(exited) if exited else ""))
    if exited:
        problems.append("workers exited by themselves instead of waiting for Redis or Postgres: %s (see their logs)"
                        % ", ".join(exited))
    print("reports shown out of date and recomputed by a backfill: clean run %d, faulty run %d"
          % (len(clean.recomputed), len(faulty.recomputed)))
    print("rows compared with the clean run: %d (datamart and datalake), and the %d report files byte for byte"
          % (rows, len(REPORTS) * len(DATES)))
    if problems:
        print("PROBLEMS:\n  " + "\n  ".join(problems))
        print("logs: %s" % WORK)
        sys.exit(1)
    print("nothing lost, nothing doubled: every DAG run succeeded; datamart, reports and datalake equal the clean run's")


if __name__ == "__main__":
    main()
