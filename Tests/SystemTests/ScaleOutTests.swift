import ETLSupport
import Foundation
import TestSupport
import Testing

@testable import Tasks

/// Horizontal scale across machines: the six DAGs with workers on three hosts and two schedulers on
/// two more (network namespaces, NetworkLab), against the same DAGs on one host.
@Suite("Scale out: workers and schedulers on hosts of their own", .serialized, .timeLimit(.minutes(15)))
struct ScaleOutTests {
    static let settings = [
        "ETL_WEBLOG_LINES": "20000", "ETL_ORDERS": "5", "ETL_HISTORY_START": "2023-06-01", "ETL_WEBLOG_PARTS": "3",
        "ETL_WEBLOG_RANGE_MB": "1",
    ]
    static let date = Date(timeIntervalSince1970: 1_718_409_600)  // 2024-06-15

    /// What a run of the six DAGs leaves that people read: the report files' bytes, the datamart and
    /// the b2b tables' digests, the weblog and reject counts.
    struct Results: Equatable {
        var reports: [String: Data] = [:]
        var tables: [String: String] = [:]
    }

    func sixDAGs(_ fx: PipelineFixture, _ c: Cluster) throws -> Results {
        let reports = try ["monthly-sales", "popular-devices", "popular-products"].map {
            try c.trigger($0, date: Self.date)
        }
        let ingestions = try ["b2b", "ip2geo", "weblog"].map { try c.trigger($0, date: Self.date) }
        for run in ingestions + reports { #expect(try c.wait(run: run, timeout: 300) == .success, "\(c.logs())") }
        let s = fx.settings
        var r = Results()
        for name in ["monthly-sales", "popular-devices", "popular-products"] {
            r.reports[name] = try Data(
                contentsOf: URL(fileURLWithPath: "\(s.reportsDir)/\(name)/date=2024-06-15/report.csv"))
        }
        r.tables = try fx.b2bDigests()
        for t in ["monthly_sales", "popular_devices", "popular_products"] {
            r.tables[t] = try fx.digest("\(s.datamart).\(t)")
        }
        r.tables["weblogs"] = String(try fx.count("SELECT count(*) FROM \(s.datalake).weblogs"))
        r.tables["rejects"] = String(try fx.count("SELECT count(*) FROM \(s.loads).reject"))
        return r
    }

    @Test(
        """
        the six DAGs with workers on three hosts and two schedulers on two more: every run succeeds, the work \
        spreads over the hosts, and reports and tables are identical to one host's
        """
    )
    func sixDAGsOnFiveHosts() throws {
        // One host: one scheduler and one worker beside the servers.
        let one: Results
        do {
            let fx = try PipelineFixture(name: "oneHost", extra: Self.settings)
            let c = try Cluster.pipelines(fx, Self.settings, name: "oneHost")
            defer { c.stopAll() }
            try c.startScheduler()
            try c.startWorker(["--concurrency", "2"])
            one = try sixDAGs(fx, c)
        }
        #expect(one.reports.values.allSatisfy { $0.count > 30 }, "\(one.reports.mapValues { $0.count })")

        let lab = try NetworkLab()
        let fx = try PipelineFixture(extra: Self.settings, lab: lab)
        let c = try Cluster.pipelines(fx, Self.settings)
        defer { c.stopAll() }
        try c.startScheduler(name: "a", host: "s0")
        try c.startScheduler(name: "b", host: "s1")
        let names = ["w0", "w1", "w2"]
        for h in names { try c.startWorker(["--concurrency", "2"], name: "worker-on-\(h)", host: h) }
        let many = try sixDAGs(fx, c)
        #expect(many == one, "five hosts: \(many.tables)\none host: \(one.tables)")

        // Spread: tasks ran on more than one worker host, each worker connected from its host's
        // address, and one scheduler leads while the other stands by.
        let ran = try c.store.pg.query(
            "SELECT DISTINCT worker FROM \(c.schema).task_instance WHERE worker IS NOT NULL"
        ).rows.map { try $0.decode(String.self, 0) }
        let hosts = Set(ran.map { $0.split(separator: "/").first.map(String.init) ?? $0 })
        #expect(hosts.count >= 2, "every task ran on \(ran)")
        let leader = try c.store.pg.query("SELECT holder FROM \(c.schema).scheduler_lease").rows[0].decode(
            String.self, 0)
        #expect(["a", "b"].contains(leader), "the lease is held by \(leader)")
        let from = Set(
            try c.store.pg.query(
                "SELECT DISTINCT host(client_addr) FROM pg_stat_activity WHERE client_addr IS NOT NULL"
            ).rows.map { try $0.decode(String.self, 0) })
        let workerHosts = Set(names.compactMap { lab.address($0) })
        let all = workerHosts.union(["s0", "s1"].compactMap { lab.address($0) }).union(["\(lab.net).254"])
        #expect(workerHosts.isSubset(of: from), "sessions came from \(from), the workers' hosts are \(workerHosts)")
        #expect(from.isSubset(of: all), "sessions came from \(from), the lab's hosts are \(all)")
        #expect(c.schedulers.allSatisfy(\.isRunning) && c.workers.allSatisfy(\.isRunning))
    }
}
