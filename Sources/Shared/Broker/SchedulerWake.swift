import ETLSupport
import Foundation

/// A message for the scheduler that is not an attempt's end: a run changed outside the scheduler
/// (triggered, cleared, its tasks retried) and should be looked at now rather than at the next
/// tick. It travels on the event stream beside the completion events, under its own field
/// (`wake`), so nothing mistakes it for a task that finished.
public struct SchedulerWake: Sendable, Equatable {
    public var dag: String
    public var runID: Int64
    /// What happened ("triggered", "cleared").
    public var reason: String
    /// Who did it ("etlctl", "web:admin").
    public var by: String

    public init(dag: String, runID: Int64, reason: String, by: String) {
        self.dag = dag
        self.runID = runID
        self.reason = reason
        self.by = by
    }

    /// The wire form.
    public var json: [UInt8] {
        var w = FlatJSON.Writer(capacity: 96)
        w.field("by", by)
        w.field("dag", dag)
        w.field("reason", reason)
        w.field("runID", runID)
        return w.finished()
    }

    /// Reads the wire form; nil when it is not one.
    public init?(flat bytes: [UInt8]) {
        guard let o = FlatJSON.parse(bytes), let dag = o["dag"]?.string, let run = o["runID"]?.int,
            let reason = o["reason"]?.string, let by = o["by"]?.string
        else { return nil }
        self.init(dag: dag, runID: Int64(run), reason: reason, by: by)
    }
}

/// What the scheduler reads from the event stream.
public enum SchedulerNotice: Sendable, Equatable {
    /// Attempts ended (one event per run and state of a worker's batch).
    case completion(CompletionEvent)
    /// A run changed outside the scheduler.
    case wake(SchedulerWake)

    /// The run the notice is about.
    public var runID: Int64 {
        switch self {
        case .completion(let e): e.runID
        case .wake(let w): w.runID
        }
    }
}
