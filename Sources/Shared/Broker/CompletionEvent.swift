import ETLSupport
import Foundation
import RedisClient
import Workflow

/// What a worker reports when an attempt ends.
public struct CompletionEvent: Codable, Sendable, Equatable {
    public var dag: String
    public var runID: Int64
    public var task: String
    public var tryNumber: Int
    /// The state the attempt left the task in (success, failed, up_for_retry).
    public var state: String
    public var worker: String
    public var finishedAt: Double
    /// Every task the event reports when a worker's batch ended several of one run in the same
    /// state (`task` is the first of them); nil for one task.
    public var tasks: [String]?

    public init(
        dag: String, runID: Int64, task: String, tryNumber: Int, state: String, worker: String,
        finishedAt: Double = Date().timeIntervalSince1970, tasks: [String]? = nil
    ) {
        self.dag = dag
        self.runID = runID
        self.task = task
        self.tryNumber = tryNumber
        self.state = state
        self.worker = worker
        self.finishedAt = finishedAt
        self.tasks = tasks
    }

    /// The tasks this event reports.
    public var allTasks: [String] { tasks ?? [task] }

    /// One event per run and state, listing the tasks (in order of first appearance).
    public static func merged(_ events: [CompletionEvent]) -> [CompletionEvent] {
        var out: [CompletionEvent] = []
        var at: [String: Int] = [:]
        for e in events {
            let key = "\(e.runID)\u{0}\(e.state)\u{0}\(e.dag)"
            if let i = at[key] {
                out[i].tasks = out[i].allTasks + e.allTasks
            } else {
                at[key] = out.count
                out.append(e)
            }
        }
        return out
    }
}

extension CompletionEvent {
    /// The wire form, written without Foundation's encoder (see `FlatJSON`).
    public var json: [UInt8] {
        var w = FlatJSON.Writer(capacity: 160)
        w.field("dag", dag)
        w.field("finishedAt", finishedAt)
        w.field("runID", runID)
        w.field("state", state)
        w.field("task", task)
        if let tasks { w.field("tasks", tasks) }
        w.field("tryNumber", tryNumber)
        w.field("worker", worker)
        return w.finished()
    }

    /// Reads the wire form; nil when it is not one (the caller falls back to `JSONDecoder`).
    public init?(flat bytes: [UInt8]) {
        guard let o = FlatJSON.parse(bytes), let dag = o["dag"]?.string, let run = o["runID"]?.int,
            let task = o["task"]?.string,
            let tryNumber = o["tryNumber"]?.int, let state = o["state"]?.string, let worker = o["worker"]?.string,
            let finishedAt = o["finishedAt"]?.double
        else { return nil }
        var tasks: [String]?
        switch o["tasks"] {
        case nil, .null?: tasks = nil
        case .strings(let list)?: tasks = list
        default: return nil
        }
        self.init(
            dag: dag, runID: Int64(run), task: task, tryNumber: tryNumber, state: state, worker: worker,
            finishedAt: finishedAt, tasks: tasks)
    }
}
