import Broker
import ETLSupport
import Foundation
import Metadata
import Orchestration
import PostgresClient
import RedisClient
import Tasks
import Workflow

/// The server-rendered pages. Each takes the data the matching API route returns, so what a page
/// shows is exactly what `/api` answers.
enum Pages {
    static func login(error: String?, next: String) -> HTML {
        let problem: HTML = error.map { "<p class=\"err\">\($0)</p>" } ?? ""
        let body: HTML = """
            <div class="card" style="max-width:360px">\(problem)
            <form method="post" action="/login"><input type="hidden" name="next" value="\(next)">
            <p><label>User<br><input name="username" autocomplete="username" required autofocus></label></p>
            <p><label>Password<br>\
            <input name="password" type="password" autocomplete="current-password" required></label></p>
            <p><button class="primary">Log in</button></p></form></div>
            """
        return Layout.page("Log in", section: "", session: nil, body)
    }

    static func error(_ message: String, session: Session?) -> HTML {
        Layout.page(
            "Something is wrong", section: "", session: session,
            "<p class=\"err\">\(message)</p><p><a href=\"/dags\">Back to the DAGs</a></p>")
    }

    // MARK: DAGs

    static func runTitle(_ r: MetadataStore.RunRow) -> String {
        """
        run \(r.id) · \(HTML.time(r.logicalDate).prefix(10)) · \(r.type) · \(r.state) · \
        \(HTML.duration(r.startedAt, r.endedAt))
        """
    }

    static func dags(
        _ list: [Backend.DAGSummary], allTags: [String], tag: String?, search: String?, session: Session, flash: String?
    ) -> HTML {
        let tagOptions: [HTML] = allTags.map { t in
            t == tag ? "<option selected>\(t)</option>" : "<option>\(t)</option>"
        }
        let rows: [HTML] = list.map { d in
            let squares: [HTML] = d.recentRuns.reversed().map { r in
                Layout.square(r.state.rawValue, title: runTitle(r), href: "/dags/\(HTML.component(d.dag))/runs/\(r.id)")
            }
            let tags: [HTML] = d.tags.map { "<a class=\"tag\" href=\"/dags?tag=\(HTML.component($0))\">\($0)</a>" }
            let toggle =
                d.paused
                ? Layout.button(
                    "Unpause", action: "/dags/\(HTML.component(d.dag))/unpause", session: session, style: "primary")
                : Layout.button("Pause", action: "/dags/\(HTML.component(d.dag))/pause", session: session)
            let next: HTML =
                d.nextLogicalDate.map { (date: Date) -> HTML in
                    "\(HTML.time(date).prefix(16)) <span class=\"muted\">at \(HTML.time(d.nextRunAt))</span>"
                } ?? "<span class=\"muted\">manual</span>"
            let upstream: HTML =
                d.upstreamDAGs.isEmpty
                ? "" : "<div class=\"muted\">waits for \(d.upstreamDAGs.joined(separator: ", "))</div>"
            return """
                <tr><td>\(toggle)</td>\
                <td><a href="/dags/\(HTML.component(d.dag))"><b>\(d.dag)</b></a>\(upstream)</td><td>\(tags)</td>
                <td>\(d.schedule)</td><td>\(squares)</td><td>\(next)</td>
                <td>\
                \(Layout.button("Trigger", action: "/dags/\(HTML.component(d.dag))/trigger", session: session))\
                </td></tr>
                """
        }
        let body: HTML = """
            <form class="filters" method="get" action="/dags">
            <input name="q" placeholder="Search DAGs" value="\(search ?? "")">
            <select name="tag"><option value="">All tags</option>\(tagOptions)</select> <button>Filter</button>
            \(tag != nil || search != nil ? HTML("<a href=\"/dags\">clear</a>") : "")</form><br>
            <table><tr><th>On</th><th>DAG</th><th>Tags</th><th>Schedule</th>\
            <th>Recent runs</th><th>Next run</th><th></th></tr>\(rows)</table>
            \(legend)
            """
        return Layout.page("DAGs", section: "/dags", session: session, flash: flash, body)
    }

    static let legend: HTML = {
        let states = [
            "scheduled", "queued", "running", "success", "failed", "up_for_retry", "upstream_failed", "cancelled",
        ]
        let items: [HTML] = states.map {
            "<span>\(Layout.square($0, title: $0)) \($0.replacingOccurrences(of: "_", with: " "))</span>"
        }
        return "<p class=\"legend muted\">\(items)</p>"
    }()

    /// The task graph as inline SVG: tasks in columns by depth, upstream DAGs in a column of their
    /// own before them; each box coloured by its state in the newest run.
    static func graph(_ detail: Backend.DAGDetail, latest: [String: String]) -> HTML {
        var depth: [String: Int] = [:]
        for t in detail.tasks { depth[t.task] = (t.upstream.compactMap { depth[$0] }.max() ?? -1) + 1 }
        let hasUpstreamDAGs = !detail.summary.upstreamDAGs.isEmpty
        let shift = hasUpstreamDAGs ? 1 : 0
        var column: [Int: [String]] = [:]
        for t in detail.tasks { column[depth[t.task]! + shift, default: []].append(t.task) }
        if hasUpstreamDAGs { column[0] = detail.summary.upstreamDAGs.map { "dag:" + $0 } }
        let boxW = 170.0
        let boxH = 30.0
        let gapX = 60.0
        let gapY = 14.0
        var pos: [String: (x: Double, y: Double)] = [:]
        for (c, names) in column {
            for (i, n) in names.enumerated() {
                pos[n] = (20 + Double(c) * (boxW + gapX), 20 + Double(i) * (boxH + gapY))
            }
        }
        let width = 40 + Double((column.keys.max() ?? 0) + 1) * (boxW + gapX) - gapX
        let height = 40 + Double(column.values.map(\.count).max() ?? 1) * (boxH + gapY) - gapY
        var edges: [HTML] = []
        func edge(_ a: String, _ b: String, dashed: Bool) {
            guard let p = pos[a], let q = pos[b] else { return }
            edges.append(
                """
                <path d="M\(Int(p.x + boxW)) \(Int(p.y + boxH / 2)) \
                C\(Int(p.x + boxW + gapX / 2)) \(Int(p.y + boxH / 2)) \(Int(q.x - gapX / 2)) \(Int(q.y + boxH / 2)) \
                \(Int(q.x)) \(Int(q.y + boxH / 2))" fill="none" stroke="#7b8698" \
                \(dashed ? HTML("stroke-dasharray=\"4 3\"") : "") marker-end="url(#arrow)"/>
                """
            )
        }
        for t in detail.tasks {
            for u in t.upstream { edge(u, t.task, dashed: false) }
            if t.upstream.isEmpty { for u in detail.summary.upstreamDAGs { edge("dag:" + u, t.task, dashed: true) } }
        }
        let colours = [
            "success": "#2e9e47", "failed": "#d64235", "running": "#40a9e0", "queued": "#9a8be0",
            "scheduled": "#c9ced6",
            "up_for_retry": "#f0b429", "upstream_failed": "#f28b30", "cancelled": "#8e5bd0",
        ]
        var nodes: [HTML] = []
        for (name, p) in pos.sorted(by: { $0.key < $1.key }) {
            if name.hasPrefix("dag:") {
                let dag = String(name.dropFirst(4))
                nodes.append(
                    """
                    <a href="/dags/\(HTML.component(dag))">\
                    <rect x="\(Int(p.x))" y="\(Int(p.y))" width="\(Int(boxW))" height="\(Int(boxH))" rx="4" \
                    fill="#fff" stroke="#1f5fbf" stroke-dasharray="4 3"/>\
                    <text x="\(Int(p.x + 8))" y="\(Int(p.y + 19))" fill="#1f5fbf">DAG \(dag)</text></a>
                    """)
            } else {
                let state = latest[name]
                nodes.append(
                    """
                    <g><title>\(name): \(state ?? "no run yet")</title>\
                    <rect x="\(Int(p.x))" y="\(Int(p.y))" width="\(Int(boxW))" height="\(Int(boxH))" rx="4" \
                    fill="#fff" stroke="#56627a"/>\
                    <rect x="\(Int(p.x))" y="\(Int(p.y))" width="6" height="\(Int(boxH))" rx="2" \
                    fill="\(colours[state ?? ""] ?? "#eef0f3")"/>\
                    <text x="\(Int(p.x + 14))" y="\(Int(p.y + 19))">\(String(name.prefix(22)))</text></g>
                    """)
            }
        }
        return """
            <div class="card" style="overflow:auto">\
            <svg width="\(Int(width))" height="\(Int(height))" role="img" aria-label="task graph">
            <defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" \
            orient="auto-start-reverse"><path d="M0 0 L10 5 L0 10 z" fill="#7b8698"/></marker></defs>
            \(edges)\(nodes)</svg></div>
            """
    }

    /// Tasks drawn in a DAG's graph and grid; a larger DAG shows its first ones in dependency
    /// order, and the API has them all.
    static let maxDrawnTasks = 100

    static func dag(_ full: Backend.DAGDetail, session: Session, flash: String?) -> HTML {
        let detail = Backend.DAGDetail(
            summary: full.summary, tasks: Array(full.tasks.prefix(maxDrawnTasks)), grid: full.grid, params: full.params)
        let d = detail.summary
        let dagPath = "/dags/\(HTML.component(d.dag))"
        let runs = Array(d.recentRuns.reversed())  // oldest first, as in Airflow's grid
        var cell: [String: MetadataStore.GridCell] = [:]
        for c in detail.grid { cell["\(c.run)/\(c.task)"] = c }
        let latest =
            d.recentRuns.first.map { r in
                detail.grid.filter { $0.run == r.id }.reduce(into: [String: String]()) { $0[$1.task] = $1.state }
            } ?? [:]
        let head: [HTML] = runs.map { r in
            "<th>\(Layout.square(r.state.rawValue, title: runTitle(r), href: "\(dagPath)/runs/\(r.id)"))</th>"
        }
        let gridRows: [HTML] = detail.tasks.map { t in
            let cells: [HTML] = runs.map { r in
                guard let c = cell["\(r.id)/\(t.task)"] else {
                    return "<td>\(Layout.square(nil, title: "not in this run"))</td>"
                }
                let title = "\(t.task) · \(c.state) · try \(c.tryNumber) · \(HTML.duration(c.startedAt, c.endedAt))"
                let href = "\(dagPath)/runs/\(r.id)/tasks/\(HTML.component(t.task))"
                return "<td>\(Layout.square(c.state, title: title, href: href))</td>"
            }
            return "<tr><td class=\"task\">\(t.task)</td>\(cells)</tr>"
        }
        let runRows: [HTML] = d.recentRuns.map { r in
            var actions: [HTML] = []
            if r.state == .failed
                || detail.grid.contains(where: {
                    $0.run == r.id && ($0.state == "failed" || $0.state == "upstream_failed")
                })
            {
                actions.append(
                    Layout.button("Clear failed", action: "\(dagPath)/runs/\(r.id)/clear-failed", session: session))
            }
            if !r.state.isFinished {
                actions.append(
                    Layout.button(
                        "Mark failed", action: "\(dagPath)/runs/\(r.id)/mark-failed", session: session, style: "danger")
                )
            }
            return """
                <tr><td><a href="\(dagPath)/runs/\(r.id)">\(r.id)</a></td>\
                <td>\(HTML.time(r.logicalDate).prefix(10))</td><td>\(r.type.rawValue)</td>
                <td>\(Layout.square(r.state.rawValue, title: r.state.rawValue)) \(r.state.rawValue)</td>\
                <td>\(HTML.time(r.startedAt))</td><td>\(HTML.duration(r.startedAt, r.endedAt))</td>\
                <td>\(actions)</td></tr>
                """
        }
        let tasks: [HTML] = detail.tasks.map { t in
            """
            <tr><td>\(t.task)</td><td>\(t.operation)</td><td>\(t.upstream.joined(separator: ", "))</td>\
            <td class="num">\(t.retries)</td>\
            <td class="num">\(t.timeoutSeconds > 0 ? "\(Int(t.timeoutSeconds)) s" : "none")</td><td>\(t.queue)</td></tr>
            """
        }
        let toggle =
            d.paused
            ? Layout.button(
                "Unpause", action: "\(dagPath)/unpause", session: session, fields: [("back", dagPath)], style: "primary"
            )
            : Layout.button("Pause", action: "\(dagPath)/pause", session: session, fields: [("back", dagPath)])
        let tags: [HTML] = d.tags.map { "<a class=\"tag\" href=\"/dags?tag=\(HTML.component($0))\">\($0)</a>" }
        let truncated: HTML =
            full.tasks.count > maxDrawnTasks
            ? """
            <p class="muted">This DAG has \(full.tasks.count) tasks: the graph, grid and table show the first \
            \(maxDrawnTasks) in dependency order; \
            <a href="/api/dags/\(HTML.component(d.dag))">/api/dags/\(d.dag)</a> has them all.</p>
            """
            : ""
        let gridTable: HTML =
            runs.isEmpty
            ? "<p class=\"muted\">No runs yet.</p>"
            : "<table class=\"grid\" style=\"width:auto\"><tr><th></th>\(head)</tr>\(gridRows)</table>"
        let pools = d.pools.sorted { $0.key < $1.key }.map { "\($0.key) (\($0.value) slots)" }
        let poolText = pools.isEmpty ? "" : " · pools: " + pools.joined(separator: ", ")
        let brings: HTML =
            d.upstreamDAGs.isEmpty
            ? ""
            : " <span class=\"muted\">(with \(d.upstreamDAGs.joined(separator: ", "))'s runs for the same dates)</span>"
        // One field per run parameter, empty for its default; a wrong value is refused with the fix.
        let paramFields: [HTML] = detail.params.map { p -> HTML in
            let title = "\(p.help) (\(p.type); \(p.effect))"
            let placeholder = p.default.isEmpty ? "none" : p.default
            return """
                 <label title="\(title)">\(p.name) <input name="param.\(p.name)" placeholder="\(placeholder)" \
                size="10"></label>
                """
        }
        let body: HTML = """
            <p>\(toggle) <form class="inline" method="post" action="\(dagPath)/trigger">\
            <input type="hidden" name="csrf" value="\(session.csrf)">
            <input name="date" placeholder="YYYY-MM-DD (today)" size="16">\(paramFields) <button>Trigger</button></form>
            &nbsp; \(tags) <span class="muted">\(d.schedule)\(d.paused ? " · paused" : "") · \
            \(d.maxActiveRuns == 1 ? "one run at a time" : "up to \(d.maxActiveRuns) runs at a time")\
            \(poolText)</span></p>
            <form class="inline" method="post" action="\(dagPath)/backfill">\
            <input type="hidden" name="csrf" value="\(session.csrf)">
            Backfill from <input name="from" placeholder="YYYY-MM-DD" size="11" required> \
            to <input name="to" placeholder="YYYY-MM-DD" size="11" required> \
            dates with a run: <select name="rerun"><option value="none">keep</option>\
            <option value="failed">rerun failed tasks</option><option value="all">rerun all</option></select> \
            <button>Backfill</button></form>\
            \(brings)
            \(truncated)
            <h2>Graph</h2>\(graph(detail, latest: latest))
            <h2>Grid</h2>\(gridTable)
            \(legend)
            <h2>Runs</h2><table><tr><th>Run</th><th>Logical date</th><th>Type</th><th>State</th><th>Started</th>\
            <th>Duration</th><th></th></tr>\(runRows)</table>
            <h2>Tasks</h2><table><tr><th>Task</th><th>Operation</th><th>Upstream</th><th class="num">Retries</th>\
            <th class="num">Timeout</th><th>Queue</th></tr>\(tasks)</table>
            """
        return Layout.page("DAG \(d.dag)", section: "/dags", session: session, flash: flash, body)
    }

    static func run(_ dag: String, _ detail: Backend.RunDetail, session: Session, flash: String?) -> HTML {
        let dagPath = "/dags/\(HTML.component(dag))"
        let r = detail.run
        let rows: [HTML] = detail.tasks.map { t in
            let taskPath = "\(dagPath)/runs/\(r.id)/tasks/\(HTML.component(t.task))"
            let retry: HTML =
                ["failed", "upstream_failed", "success", "cancelled"].contains(t.state)
                ? Layout.button("Retry", action: "\(taskPath)/retry", session: session)
                : ["scheduled", "queued", "running", "up_for_retry"].contains(t.state)
                    ? Layout.button("Cancel", action: "\(taskPath)/cancel", session: session, style: "danger") : ""
            return """
                <tr><td><a href="\(dagPath)/runs/\(r.id)/tasks/\(HTML.component(t.task))">\(t.task)</a></td>\
                <td>\(Layout.square(t.state, title: t.state)) \(t.state)</td>
                <td class="num">\(t.tryNumber)/\(t.maxTries)</td><td>\(t.worker ?? "–")</td>\
                <td>\(HTML.time(t.startedAt))</td><td>\(HTML.duration(t.startedAt, t.endedAt))</td>
                <td class="err">\(String((t.error ?? "").prefix(160)))</td><td>\(retry)</td></tr>
                """
        }
        var actions: [HTML] = []
        if detail.tasks.contains(where: { $0.state == "failed" || $0.state == "upstream_failed" }) {
            actions.append(
                Layout.button("Clear failed", action: "\(dagPath)/runs/\(r.id)/clear-failed", session: session))
        }
        if !r.state.isFinished {
            actions.append(
                Layout.button(
                    "Mark failed", action: "\(dagPath)/runs/\(r.id)/mark-failed", session: session, style: "danger"))
        }
        let given: [String] = r.params.keys.sorted().map { k in
            let v = r.params[k] ?? ""
            return "\(k)=\(v.isEmpty ? "(none)" : v)"
        }
        let parameters: HTML = given.isEmpty ? "" : "<p>Parameters: \(given.joined(separator: ", "))</p>"
        let body: HTML = """
            <p><a href="\(dagPath)">← \(dag)</a> · logical date \(HTML.time(r.logicalDate).prefix(10)) · \
            \(r.type.rawValue) · \(Layout.square(r.state.rawValue, title: r.state.rawValue)) <b>\(r.state.rawValue)</b>
            · started \(HTML.time(r.startedAt)) · \(HTML.duration(r.startedAt, r.endedAt)) \(actions)</p>
            \(parameters)
            <table><tr><th>Task</th><th>State</th><th class="num">Try</th><th>Worker</th><th>Started</th>\
            <th>Duration</th><th>Error</th><th></th></tr>\(rows)</table>
            """
        return Layout.page("\(dag) run \(r.id)", section: "/dags", session: session, flash: flash, body)
    }

    static func attempts(
        dag: String, run: Int64, task: String, _ list: [MetadataStore.AttemptRow], session: Session, flash: String?
    ) -> HTML {
        let dagPath = "/dags/\(HTML.component(dag))"
        let items: [HTML] = list.reversed().map { a in
            let error: HTML = a.error.map { "<p class=\"err\">\($0)</p>" } ?? ""
            return """
                <div class="card"><b>Try \(a.tryNumber)</b> · \(Layout.square(a.state, title: a.state)) \(a.state) · \
                worker \(a.worker ?? "–")
                · started \(HTML.time(a.startedAt)) · ended \(HTML.time(a.endedAt)) · \
                \(HTML.duration(a.startedAt, a.endedAt))
                \(error)<pre>\(a.log.isEmpty ? "(no log lines)" : a.log)</pre></div>
                """
        }
        let retry = Layout.button(
            "Retry", action: "\(dagPath)/runs/\(run)/tasks/\(HTML.component(task))/retry", session: session)
        let body: HTML = """
            <p><a href="\(dagPath)/runs/\(run)">← run \(run) of \(dag)</a> \(retry)</p>
            \(list.isEmpty ? HTML("<p class=\"muted\">No attempts yet.</p>") : HTML("\(items)"))
            """
        // A running attempt's log grows (its worker writes new lines about every second): the page
        // loads itself again every 2 s while it runs (no script: a meta refresh).
        let running = list.last?.state == "running"
        return Layout.page(
            "\(dag) · \(task) · run \(run)", section: "/dags", session: session, flash: flash,
            refresh: running ? 2 : nil, body)
    }

    // MARK: Queues

    static func queues(_ o: Backend.QueueOverview, session: Session, flash: String?) -> HTML {
        let queueRows: [HTML] = o.queues.map { q in
            """
            <tr><td>\(q.queue)</td><td class="num">\(q.waiting)</td><td class="num">\(q.inFlight.count)</td>\
            <td class="num">\(String(format: "%.1f s", q.oldestAgeSeconds))</td></tr>
            """
        }
        let flight: [HTML] = o.queues.flatMap { q in
            q.inFlight.map { f in
                """
                <tr><td>\(q.queue)</td><td>\(f.id)</td><td>\(f.consumer)</td>\
                <td class="num">\(String(format: "%.1f s", f.idleSeconds))</td><td class="num">\(f.deliveries)</td></tr>
                """
            }
        }
        let workers: [HTML] = o.workers.map { w in
            """
            <tr><td>\(w.worker)</td>\
            <td>\(w.alive ? HTML("<span class=\"ok\">alive</span>") : HTML("<span class=\"err\">silent</span>"))</td>\
            <td class="num">\(String(format: "%.1f s", w.heartbeatAgeSeconds))</td>\
            <td class="num">\(w.concurrency)</td>\
            <td>\(w.queues.joined(separator: ", "))</td><td>\(w.tasks.joined(separator: "; "))</td></tr>
            """
        }
        let retries: [HTML] = o.delayedRetries.map { r in
            """
            <tr><td><a href="/dags/\(HTML.component(r.dag))/runs/\(r.run)">\(r.dag) run \(r.run)</a></td>\
            <td>\(r.task)</td><td class="num">\(r.tryNumber)</td><td>\(HTML.time(r.nextTryAt))</td></tr>
            """
        }
        let dead: [HTML] = o.deadLetters.map { d in
            let requeue = Layout.button(
                "Requeue", action: "/dead-letters/requeue", session: session, fields: [("id", d.id)])
            return """
                <tr><td>\(d.id)</td><td>\(d.queue)</td><td>\(d.reason)</td><td class="num">\(d.bytes)</td>\
                <td>\(requeue)</td></tr>
                """
        }
        let flightTable: HTML =
            flight.isEmpty
            ? "<p class=\"muted\">Nothing in flight.</p>"
            : """
            <table><tr><th>Queue</th><th>Message</th><th>Consumer</th><th class="num">For</th>\
            <th class="num">Deliveries</th></tr>\(flight)</table>
            """
        let workersTable: HTML =
            workers.isEmpty
            ? "<p class=\"muted\">No worker has reported. Start one: <code>worker --concurrency 2</code></p>"
            : """
            <table><tr><th>Worker</th><th>State</th><th class="num">Heartbeat</th><th class="num">Slots</th>\
            <th>Queues</th><th>Current tasks</th></tr>\(workers)</table>
            """
        let retriesTable: HTML =
            retries.isEmpty
            ? "<p class=\"muted\">None.</p>"
            : """
            <table><tr><th>Run</th><th>Task</th><th class="num">Next try</th><th>Due</th></tr>\(retries)</table>
            """
        let requeueAll = Layout.button(
            "Requeue all", action: "/dead-letters/requeue", session: session, fields: [("all", "1")])
        let deadTable: HTML =
            dead.isEmpty
            ? "<p class=\"muted\">None.</p>"
            : """
            <p>\(requeueAll)</p>\
            <table><tr><th>Id</th><th>Queue</th><th>Reason</th><th class="num">Bytes</th><th></th></tr>\(dead)</table>
            """
        let body: HTML = """
            <h2>Queues</h2><table><tr><th>Queue</th><th class="num">Waiting</th><th class="num">In flight</th>\
            <th class="num">Oldest message</th></tr>\(queueRows)</table>
            <h2>In flight</h2>\(flightTable)
            <h2>Workers</h2>\(workersTable)
            <h2>Delayed retries (\(o.delayedRetries.count))</h2>\(retriesTable)
            <h2>Dead letters (\(o.deadLetters.count))</h2>\(deadTable)
            """
        return Layout.page("Queues & workers", section: "/queues", session: session, flash: flash, body)
    }

    // MARK: Loads

    /// The web users and their roles (admins only).
    static func users(_ list: [MetadataStore.WebUser], session: Session) -> HTML {
        let rows: [HTML] = list.map { u in
            """
            <tr><td>\(u.name)</td><td>\(u.role.rawValue)</td><td>\(HTML.time(u.createdAt))</td>\
            <td>\(HTML.time(u.updatedAt))</td></tr>
            """
        }
        let body: HTML = """
            <p class="muted">Roles: viewer (reads), operator (triggers, backfills, retries, clears, cancels, \
            marks failed, pauses, requeues), admin (also users). Users are managed with \
            <code>etlctl users add|list|remove|set-role|set-password</code>.</p>
            <table><tr><th>User</th><th>Role</th><th>Created</th><th>Changed</th></tr>\(rows)</table>
            """
        return Layout.page("Users", section: "/users", session: session, body)
    }

    /// The audit trail: every operator action, newest first.
    static func audit(_ list: [MetadataStore.AuditRow], session: Session) -> HTML {
        let rows: [HTML] = list.map { a in
            """
            <tr><td>\(HTML.time(a.at))</td><td>\(a.actor)</td><td>\(a.origin)</td><td>\(a.action)</td>\
            <td>\(a.target)</td><td>\(a.detail)</td>\
            <td>\(Layout.square(a.ok ? "success" : "failed", title: a.ok ? "done" : "refused")) \
            \(a.ok ? "done" : "refused")</td>\
            <td class="err">\(String((a.error ?? "").prefix(200)))</td></tr>
            """
        }
        let body: HTML =
            list.isEmpty
            ? "<p class=\"muted\">No operator action yet.</p>"
            : """
            <p class="muted">The newest \(list.count) operator actions (web UI, API, etlctl; \
            <code>etlctl audit</code> shows the same).</p>
            <table><tr><th>When</th><th>Who</th><th>From</th><th>Action</th><th>On</th><th>Detail</th>\
            <th>Outcome</th><th>Error</th></tr>\(rows)</table>
            """
        return Layout.page("Audit", section: "/audit", session: session, body)
    }

    static func loads(_ list: [LoadQueries.Load], pipeline: String?, session: Session) -> HTML {
        let filters: [HTML] = PipelineDAGs.ingestions.map { p in
            p == pipeline ? "<b>\(p)</b>" : "<a href=\"/loads?pipeline=\(p)\">\(p)</a>"
        }
        let rows: [HTML] = list.map { l in
            let rejected: HTML = l.rowsRejected > 0 ? "<a href=\"/loads/\(l.id)\">\(l.rowsRejected)</a>" : "0"
            let square = Layout.square(
                l.state == "finished" ? "success" : l.state == "broken" ? "failed" : "running", title: l.state)
            return """
                <tr><td><a href="/loads/\(l.id)">\(l.id)</a></td><td>\(l.pipeline)</td><td>\(l.source)</td>\
                <td>\(square) \(l.state)</td>
                <td>\(HTML.time(l.startedAt))</td><td>\(HTML.time(l.brokeAt))</td><td>\(HTML.time(l.finishedAt))</td>
                <td class="num">\(l.rowsRead)</td><td class="num">\(l.rowsLoaded)</td><td class="num">\(rejected)</td>\
                <td class="err">\(String(l.error.prefix(120)))</td></tr>
                """
        }
        let table: HTML =
            list.isEmpty
            ? "<p class=\"muted\">\(LoadQueries.emptyMessage(pipeline: pipeline))</p>"
            : """
            <table><tr><th>Load</th><th>Pipeline</th><th>Source</th><th>State</th><th>Started</th><th>Broke</th>\
            <th>Finished</th>
            <th class="num">Read</th><th class="num">Loaded</th><th class="num">Rejected</th><th>Error</th></tr>\
            \(rows)</table>
            """
        let body: HTML = """
            <p>Pipeline: <a href="/loads">all</a> · \
            \(filters.enumerated().map { i, f in i == 0 ? f : HTML(" · \(f)") })</p>
            \(table)
            """
        return Layout.page("Loads", section: "/loads", session: session, body)
    }

    static func rejects(load: Int64, _ list: [LoadQueries.Reject], session: Session) -> HTML {
        let rows: [HTML] = list.map { r in
            """
            <tr><td>\(r.source)</td><td class="num">\(r.line)</td><td>\(r.reason)</td>\
            <td><code>\(String(r.raw.prefix(300)))</code></td></tr>
            """
        }
        let table: HTML =
            list.isEmpty
            ? "<p class=\"muted\">This load rejected nothing.</p>"
            : """
            <table><tr><th>Source</th><th class="num">Line</th><th>Reason</th><th>Raw</th></tr>\(rows)</table>
            """
        let body: HTML = """
            <p><a href="/loads">← loads</a> · the first \(list.count) rejected rows, by line</p>
            \(table)
            """
        return Layout.page("Load \(load): rejected rows", section: "/loads", session: session, body)
    }

    // MARK: Reports

    /// Each report's title, from its declaration (Reports.all).
    static func title(_ report: String) -> String { Reports.named(report)?.title ?? report }

    static func reportIndex(_ data: [Backend.ReportData], session: Session) -> HTML {
        let cards: [HTML] = data.map { r in
            let latest: HTML =
                r.date.map { "latest: \($0) (\(r.rows.count) rows)" } ?? "no data yet: run the \(r.report) DAG"
            let stale: HTML =
                r.outOfDate.isEmpty ? "" : "<br><span class=\"err\">\(r.outOfDate.count) date(s) out of date</span>"
            return """
                <div class="card"><a href="/reports/\(r.report)"><b>\(title(r.report))</b></a><br>\
                <span class="muted">\(latest)</span>\(stale)</div>
                """
        }
        return Layout.page("Reports", section: "/reports", session: session, "\(cards)")
    }

    /// When the shown date was computed, whether it is out of date (and how to recompute it), and
    /// the watermarks of the sources the report reads.
    static func status(_ r: Backend.ReportData) -> HTML {
        var parts: [HTML] = []
        if let c = r.computed {
            if c.outOfDate.isEmpty {
                parts.append("<p class=\"muted\">Computed \(c.computedAt) UTC; current.</p>")
            } else {
                let why: [HTML] = c.outOfDate.map { "<li>\($0)</li>" }
                parts.append(
                    """
                    <div class="card"><b class="err">Out of date</b>: computed \(c.computedAt) UTC, before these \
                    corrections of data it reads were loaded:<ul>\(why)</ul>Recompute it with a backfill: \
                    <code>etlctl dags backfill \(r.report) --from \(c.date) --to \(c.date) --rerun all</code> \
                    (or the backfill form on the <a href="/dags/\(r.report)">DAG page</a>, rerun all).</div>
                    """)
            }
        }
        let others = r.outOfDate.filter { $0 != r.date }
        if !others.isEmpty {
            let links: [HTML] = others.prefix(30).map { "<a href=\"/reports/\(r.report)?date=\($0)\">\($0)</a> " }
            parts.append("<p><span class=\"err\">Out of date</span> on other dates: \(links)</p>")
        }
        if !r.watermarks.isEmpty {
            let marks: [String] = r.watermarks.map { w in
                "\(w.name) through \(w.through ?? "nothing yet")\(w.pending.isEmpty ? "" : " (\(w.pending))")"
            }
            parts.append("<p class=\"muted\">Sources complete: \(marks.joined(separator: "; "))</p>")
        }
        return "\(parts)"
    }

    static func report(_ r: Backend.ReportData, session: Session) -> HTML {
        let dates: [HTML] = r.dates.prefix(30).map { d in
            d == r.date ? "<b>\(d)</b> " : "<a href=\"/reports/\(r.report)?date=\(d)\">\(d)</a> "
        }
        let head: [HTML] = r.columns.map { "<th>\($0)</th>" }
        let rows: [HTML] = r.rows.map { row in
            let cells: [HTML] = row.enumerated().map { i, v in
                Double(v) != nil && r.columns[i] != "month" ? "<td class=\"num\">\(v)</td>" : "<td>\(v)</td>"
            }
            return "<tr>\(cells)</tr>"
        }
        let chart: HTML
        if let c = Reports.named(r.report)?.chart, let l = r.columns.firstIndex(of: c.label),
            let v = r.columns.firstIndex(of: c.value)
        {
            let labels = r.rows.map { row in c.labelLength.map { String(row[l].prefix($0)) } ?? row[l] }
            let values = r.rows.map { Double($0[v]) ?? 0 }
            switch c.style {
            case .columns: chart = Charts.columns(labels: labels, values: values, unit: c.value)
            case .bars: chart = Charts.bars(labels: labels, values: values, unit: c.value)
            }
        } else {
            chart = ""
        }
        let csv: HTML = r.date.map { "<a href=\"/reports/\(r.report)/\($0)/report.csv\">Download CSV</a>" } ?? ""
        let body: HTML =
            r.date == nil
            ? """
            <p class="muted">No data yet. Run the \(r.report) DAG \
            (trigger it from <a href="/dags">DAGs</a>).</p>
            """
            : """
            <p><a href="/reports">← reports</a> · logical date: \(dates) · \(csv)</p>
            \(status(r))
            <div class="card">\(chart)</div>
            <table><tr>\(head)</tr>\(rows)</table>
            """
        return Layout.page(title(r.report), section: "/reports", session: session, body)
    }
}

/// Bar charts as inline SVG (no script, no library).
enum Charts {
    static func label(_ v: Double) -> String {
        v >= 1_000_000
            ? String(format: "%.1fM", v / 1_000_000)
            : v >= 10_000
                ? String(format: "%.0fk", v / 1000) : v == v.rounded() ? String(Int(v)) : String(format: "%.2f", v)
    }

    /// Vertical columns, one per label, left to right (months).
    static func columns(labels: [String], values: [Double], unit: String) -> HTML {
        let top = max(values.max() ?? 1, 1)
        let w = 56.0
        let h = 220.0
        var parts: [HTML] = []
        for (i, v) in values.enumerated() {
            let bh = v / top * (h - 30)
            let x = 40 + Double(i) * w
            parts.append(
                """
                <rect x="\(Int(x))" y="\(Int(h - bh))" width="\(Int(w - 10))" height="\(Int(bh))" fill="#1f5fbf">\
                <title>\(labels[i]): \(label(v)) \(unit)</title></rect>\
                <text x="\(Int(x + (w - 10) / 2))" y="\(Int(h - bh - 4))" text-anchor="middle">\(label(v))</text>\
                <text x="\(Int(x + (w - 10) / 2))" y="\(Int(h + 16))" text-anchor="middle">\(labels[i])</text>
                """)
        }
        return """
            <svg width="\(Int(60 + Double(values.count) * w))" height="\(Int(h + 26))" role="img" \
            aria-label="\(unit) by month">\(parts)\
            <line x1="36" y1="\(Int(h))" x2="\(Int(40 + Double(values.count) * w))" y2="\(Int(h))" \
            stroke="#56627a"/></svg>
            """
    }

    /// Horizontal bars, ranked top to bottom.
    static func bars(labels: [String], values: [Double], unit: String) -> HTML {
        let top = max(values.max() ?? 1, 1)
        let rowH = 26.0
        let labelW = 260.0
        let barW = 420.0
        var parts: [HTML] = []
        for (i, v) in values.enumerated() {
            let y = 6 + Double(i) * rowH
            let bw = max(2, v / top * barW)
            parts.append(
                """
                <text x="\(Int(labelW - 8))" y="\(Int(y + 16))" text-anchor="end">\
                \(String(labels[i].prefix(38)))</text>\
                <rect x="\(Int(labelW))" y="\(Int(y + 3))" width="\(Int(bw))" height="\(Int(rowH - 8))" fill="#2e9e47">\
                <title>\(labels[i]): \(label(v)) \(unit)</title></rect>\
                <text x="\(Int(labelW + bw + 6))" y="\(Int(y + 16))">\(label(v)) \(unit)</text>
                """)
        }
        return """
            <svg width="\(Int(labelW + barW + 110))" height="\(Int(12 + Double(values.count) * rowH))" role="img" \
            aria-label="ranked by \(unit)">\(parts)</svg>
            """
    }
}
