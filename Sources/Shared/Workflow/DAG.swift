import ETLSupport
import Foundation

/// A DAG: tasks with dependencies, a schedule, and DAGs it waits for (same logical date).
public struct DAG: Sendable {
    public let id: String
    public var schedule: Schedule
    public var startDate: Date
    public var catchup: Bool
    public var tags: [String]
    /// New DAGs start paused, as in the original; `ETL_DAGS_ARE_PAUSED_AT_CREATION=false` overrides.
    public var pausedOnCreation: Bool
    /// DAGs whose run for the same logical date must have succeeded before this one's tasks start.
    /// Waiting costs no worker: the scheduler just does not enqueue yet.
    public var upstreamDAGs: [String]
    /// How many runs of this DAG may be active (queued with work under way, or running) at once;
    /// the others wait, queued, and start in logical-date order (Airflow's `max_active_runs`,
    /// whose default, 16, this shares).
    public var maxActiveRuns: Int
    /// The parameters a run may be given (`DAGParam`), each with its default.
    public let params: [DAGParam]
    public private(set) var tasks: [TaskSpec]
    private var index: [String: Int]
    private var children: [String: [String]] = [:]

    public init(
        _ id: String, schedule: Schedule, startDate: Date, catchup: Bool = false, tags: [String] = [],
        pausedOnCreation: Bool = true, upstreamDAGs: [String] = [], maxActiveRuns: Int = 16,
        params: [DAGParam] = [], tasks: [TaskSpec]
    ) throws {
        for (i, p) in params.enumerated() {
            guard !params[..<i].contains(where: { $0.name == p.name }) else {
                throw DAGError(dag: id, problem: "parameter \(p.name) is declared twice")
            }
            guard !p.name.isEmpty, p.name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else {
                throw DAGError(dag: id, problem: "parameter name \"\(p.name)\" is not letters, digits and _")
            }
            if case .failure(let e) = p.canonical(p.defaultValue) {
                throw DAGError(dag: id, problem: "the default of \(e)")
            }
        }
        self.params = params
        guard maxActiveRuns >= 1 else {
            throw DAGError(dag: id, problem: "max active runs is \(maxActiveRuns). Fix: allow at least 1")
        }
        self.maxActiveRuns = maxActiveRuns
        self.id = id
        self.schedule = schedule
        self.startDate = startDate
        self.catchup = catchup
        self.tags = tags
        self.pausedOnCreation = pausedOnCreation
        self.upstreamDAGs = upstreamDAGs
        self.tasks = tasks
        index = [:]
        for (i, t) in tasks.enumerated() {
            guard index[t.id] == nil else { throw DAGError(dag: id, problem: "task \(t.id) is defined twice") }
            index[t.id] = i
        }
        for t in tasks {
            for u in t.upstream where index[u] == nil {
                throw DAGError(dag: id, problem: "task \(t.id) depends on \(u), which is not a task of this DAG")
            }
        }
        _ = try topologicalOrder()
        for t in tasks { for u in t.upstream { children[u, default: []].append(t.id) } }
    }

    /// Tasks that depend directly on `task`.
    public func directDownstream(of task: String) -> [String] { children[task] ?? [] }

    public func task(_ id: String) -> TaskSpec? { index[id].map { tasks[$0] } }

    /// Tasks in an order where each comes after its upstream tasks; throws on a cycle.
    public func topologicalOrder() throws -> [String] {
        var indegree = tasks.map { $0.upstream.count }
        var downstream = [[Int]](repeating: [], count: tasks.count)
        for (i, t) in tasks.enumerated() { for u in t.upstream { downstream[index[u]!].append(i) } }
        var ready = indegree.indices.filter { indegree[$0] == 0 }
        var order: [String] = []
        while let i = ready.first {
            ready.removeFirst()
            order.append(tasks[i].id)
            for d in downstream[i] {
                indegree[d] -= 1
                if indegree[d] == 0 { ready.append(d) }
            }
        }
        guard order.count == tasks.count else {
            let stuck = tasks.indices.filter { indegree[$0] > 0 }.map { tasks[$0].id }
            throw DAGError(dag: id, problem: "the dependencies form a cycle through \(stuck.joined(separator: ", "))")
        }
        return order
    }

    /// Tasks that should be enqueued now given the current states: scheduled, with every upstream
    /// task succeeded.
    public func readyTasks(states: [String: TaskState]) -> [String] {
        tasks.filter { t in
            states[t.id] == .scheduled && t.upstream.allSatisfy { states[$0] == .success }
        }.map(\.id)
    }

    /// Tasks that can never run because an upstream task failed (directly or transitively).
    public func blockedTasks(states: [String: TaskState]) -> [String] {
        var blocked = Set<String>()
        for id in (try? topologicalOrder()) ?? [] {
            let t = task(id)!
            guard states[id] == .scheduled || states[id] == .upstreamFailed else { continue }
            if t.upstream.contains(where: {
                states[$0]?.isFailure == true || blocked.contains($0)
            }) {
                blocked.insert(id)
            }
        }
        return tasks.map(\.id).filter { blocked.contains($0) && states[$0] == .scheduled }
    }

    /// Every task downstream of `ids` (not including them).
    public func downstream(of ids: Set<String>) -> Set<String> {
        var result = Set<String>()
        var changed = true
        while changed {
            changed = false
            for t in tasks where !result.contains(t.id) && !ids.contains(t.id) {
                if t.upstream.contains(where: { ids.contains($0) || result.contains($0) }) {
                    result.insert(t.id)
                    changed = true
                }
            }
        }
        return result
    }
}
