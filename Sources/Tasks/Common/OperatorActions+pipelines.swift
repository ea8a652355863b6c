import Orchestration

/// The operator actions on the pipelines' data, beside those on DAGs and queues: the loads, the
/// rows they rejected, and what the pipeline DAGs did for a date. etlctl (`loads`, `summary`) and
/// the web UI (`/loads`, `/api/loads`) both call these.
extension OperatorActions {
    /// The newest `limit` loads, of one pipeline when `pipeline` is given.
    public func loads(pipeline: String?, limit: Int, settings: PipelineSettings) throws -> [LoadQueries.Load] {
        try LoadQueries.loads(try store.pg, settings, pipeline: pipeline, limit: limit)
    }

    /// The rows load `load` rejected, with their line and reason; `notFound` when there is no such load.
    public func rejects(load: Int64, limit: Int, settings: PipelineSettings) throws -> [LoadQueries.Reject] {
        let pg = try store.pg
        guard try LoadQueries.load(pg, settings, id: load) != nil else {
            throw OperatorError(
                .notFound, "there is no load \(load). Fix: pick one from the loads page (/loads) or etlctl loads list")
        }
        return try LoadQueries.rejects(pg, settings, load: load, limit: limit)
    }

    /// What each pipeline DAG did for `day`: its run, the loads of those runs, the reports.
    public func summary(day: Day, settings: PipelineSettings) throws -> PipelineSummary {
        let store = try self.store
        return try PipelineSummary.read(day: day, store: store, pg: store.pg, settings: settings)
    }
}

extension OperatorActions {
    /// The computed reports (of `report`, for `date`), each with what makes it out of date.
    public func computedReports(
        report: String?, date: Day?, limit: Int, settings: PipelineSettings
    ) throws
        -> [Freshness.Computed]
    {
        if let report, Reports.named(report) == nil {
            throw OperatorError(
                .notFound,
                "there is no report named '\(report)'. Fix: use one of: "
                    + Reports.all.map(\.name).joined(separator: ", "))
        }
        return try Freshness.computed(pg: try store.pg, settings: settings, report: report, date: date, limit: limit)
    }

    /// How far each source is complete.
    public func watermarks(settings: PipelineSettings) throws -> [Watermarks.Source] {
        try Watermarks.sources(pg: try store.pg, settings: settings)
    }
}
