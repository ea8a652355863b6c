import Broker
import ETLSupport
import Foundation
import Metadata
import Orchestration
import PostgresClient
import Prometheus
import RedisClient
import Tasks
import Workflow

/// `/metrics` in Prometheus's text format. Each scrape reads the current state (queue depth, task
/// instances by state, live workers, rows ingested) and adds the durations of the attempts that
/// ended since the previous scrape to a histogram per DAG.
public final class WebMetrics: @unchecked Sendable {
    public let registry = PrometheusCollectorRegistry()
    private let lock = NSLock()
    /// Attempts that ended after this moment are not in the histograms yet.
    private var watermark: Date
    static let buckets: [Double] = [0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 7200]

    public init(since: Date = Date().addingTimeInterval(-86_400)) {
        watermark = since
    }

    private func gauge(_ name: String, _ unit: String, _ help: String, _ labels: [(String, String)] = []) -> Gauge {
        registry.makeGauge(
            descriptor: MetricNameDescriptor(namespace: "etl", metricName: name, unitName: unit, helpText: help),
            labels: labels)
    }

    /// Refreshes every metric from the backend and returns the exposition text.
    func scrape(_ backend: Backend) async throws -> [UInt8] {
        let names = backend.registry.queues.isEmpty ? ["default"] : backend.registry.queues
        let since = lock.withLock { watermark }
        let s = backend.settings
        let deadAfter = backend.workerDeadAfter
        let snap = try await backend.run { c in
            let depths = try c.queue.depths(names)
            let dead = try c.queue.deadLetterCount()
            let workers = try c.queue.workers(deadAfter: deadAfter).filter(\.alive).count
            let states = try c.store.taskStateCounts()
            let ended = try c.store.finishedAttempts(since: since, limit: 100_000).map {
                ($0.dag, $0.seconds, $0.endedAt)
            }
            // Before the first load the schema may not exist yet: no ingest counters then.
            let ingest = (try? LoadQueries.totals(c.pg, s)) ?? []
            return (depths, dead, workers, states, ended, ingest)
        }
        let (depths, dead, workers, states, ended, ingest) = snap
        for d in depths {
            gauge("queue_waiting", "messages", "Messages waiting in a queue for a worker", [("queue", d.queue)]).set(
                Double(d.waiting))
            gauge(
                "queue_in_flight", "messages", "Messages handed to a worker and not yet acknowledged",
                [("queue", d.queue)]
            ).set(Double(d.inFlight.count))
            gauge("queue_oldest_age", "seconds", "Age of the oldest message still in the queue", [("queue", d.queue)])
                .set(d.oldestAgeSeconds)
        }
        gauge("dead_letters", "", "Messages refused by workers, with a reason (etlctl dead-letters list)").set(
            Double(dead))
        gauge("workers_alive", "", "Workers whose heartbeat is recent").set(Double(workers))
        for state in TaskState.allCases {
            gauge("task_instances", "", "Task instances by state", [("state", state.rawValue)]).set(
                Double(states[state.rawValue] ?? 0))
        }
        for t in ingest {
            gauge(
                "ingest", "rows", "Rows loaded and rejected by all loads of a pipeline",
                [("pipeline", t.pipeline), ("outcome", "loaded")]
            ).set(Double(t.loaded))
            gauge(
                "ingest", "rows", "Rows loaded and rejected by all loads of a pipeline",
                [("pipeline", t.pipeline), ("outcome", "rejected")]
            ).set(Double(t.rejected))
        }
        // Two scrapes at once read the same attempts: only the one that still finds the watermark
        // where it started records them.
        let mine = lock.withLock { () -> Bool in
            guard watermark == since else { return false }
            if let last = ended.last?.2 { watermark = last }
            return true
        }
        if mine {
            for (dag, seconds, _) in ended {
                registry.makeValueHistogram(
                    descriptor: MetricNameDescriptor(
                        namespace: "etl", metricName: "task_duration", unitName: "seconds",
                        helpText: "Duration of finished task attempts"),
                    labels: [("dag", dag)], buckets: Self.buckets
                ).record(max(0, seconds))
            }
        }
        var out: [UInt8] = []
        registry.emit(into: &out)
        return out
    }
}
