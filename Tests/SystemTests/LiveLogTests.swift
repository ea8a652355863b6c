import ETLSupport
import Foundation
import Metadata
import PostgresClient
import TestSupport
import Testing
import Workflow

@Suite("Live task logs", .serialized, .timeLimit(.minutes(5)))
struct LiveLogTests {
    @Test(
        """
        a task's log lines reach Postgres while it runs, what was written before its worker's SIGKILL stays, \
        and etlctl logs --follow prints the attempt's log exactly as stored until the task ends
        """)
    func liveLogSurvivesKillAndIsFollowed() throws {
        let c = try Cluster(extra: ["ETL_LEASE_TTL": "4"])
        defer { c.stopAll() }
        try c.startScheduler()
        let first = try c.startWorker()
        let run = try c.trigger("example_live_log")
        func stored() throws -> (log: String, state: String)? {
            try c.store.pg.query(
                "SELECT log, state FROM \(c.schema).task_attempt WHERE run_id = $1 AND task_id = 'chatty'", [run]
            ).rows.first.map { (try $0.decode(String.self, 0), try $0.decode(String.self, 1)) }
        }
        // While it runs, lines written by it are in Postgres within about a second.
        try c.waitFor("the running task's fifth line in Postgres", timeout: 20) {
            guard let s = try stored() else { return false }
            return s.state == "running" && s.log.contains("line 5 of 40")
        }
        let seenAt = Date()
        let live = try #require(try stored())
        #expect(!live.log.contains("succeeded"))
        // The newest stored line is at most ~2 s old (flushes every second, plus this poll).
        let newest = try #require(live.log.split(separator: "\n").last { $0.contains("line ") })
        let stamp = try #require(PostgresTimestamp.parse(newest.split(separator: " ").prefix(2).joined(separator: " ")))
        print("live log: newest stored line is \(Int(seenAt.timeIntervalSince(stamp) * 1000)) ms old")
        #expect(seenAt.timeIntervalSince(stamp) < 3, "\(newest)")

        usleep(1_500_000)
        kill(first.processIdentifier, SIGKILL)
        _ = TestServices.waitForExit(first)
        let atKill = try #require(try stored()).log
        #expect(atKill.hasPrefix(live.log), "what was stored before the kill stays")
        #expect(atKill.contains("line 7 of 40"))

        // Follow the log from another process while a new worker takes the attempt over and ends it.
        let bin = Cluster.binDir.appendingPathComponent("etlctl").path
        final class Box: @unchecked Sendable { var out: TestServices.Output? }
        let box = Box()
        let followed = DispatchSemaphore(value: 0)
        let env = c.env
        DispatchQueue.global().async {
            box.out = try? TestServices.run(
                bin, ["logs", "example_live_log", "chatty", "--run", "\(run)", "--follow"], environment: env,
                timeout: 90)
            followed.signal()
        }
        try c.startWorker()
        #expect(try c.wait(run: run, timeout: 60) == .success)
        #expect(followed.wait(timeout: .now() + 30) == .success)
        let out = try #require(box.out)
        #expect(out.status == 0, "\(out.stderr)")
        let final = try #require(try stored()).log
        #expect(final.hasPrefix(atKill))
        #expect(final.contains("delivered again"))
        // What --follow printed is the stored log, once, in order: its header, then the log, then the end.
        var lines = out.stdout.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        #expect(lines.first?.hasPrefix("=== try 1 on ") == true, "\(out.stdout)")
        lines.removeFirst()
        #expect(
            lines.joined(separator: "\n") == final + "=== example_live_log.chatty of run \(run): success\n",
            "followed:\n\(out.stdout)\nstored:\n\(final)")
    }
}
