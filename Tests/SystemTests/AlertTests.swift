import ETLSupport
import Foundation
import TestSupport
import Testing

/// A webhook of the test's own on loopback (Python's http.server): it saves each POST's body and
/// answers 500 to the first `failFirst` of them, 200 after.
final class WebhookReceiver {
    let dir: URL
    let port: Int
    private let process: Process

    init(failFirst: Int) throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("etl-hook-\(TestServices.randomSuffix())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let script = """
            import http.server, os, sys
            out, fail_first = sys.argv[1], int(sys.argv[2])
            seen = [0]
            class Hook(http.server.BaseHTTPRequestHandler):
                def do_POST(self):
                    body = self.rfile.read(int(self.headers.get('Content-Length', 0)))
                    seen[0] += 1
                    code = 500 if seen[0] <= fail_first else 200
                    with open(os.path.join(out, '%04d-%d.json' % (seen[0], code)), 'wb') as f:
                        f.write(body)
                    self.send_response(code)
                    self.send_header('Content-Length', '0')
                    self.end_headers()
                def log_message(self, *args):
                    pass
            server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Hook)
            with open(os.path.join(out, 'port.tmp'), 'w') as f:
                f.write(str(server.server_address[1]))
            os.rename(os.path.join(out, 'port.tmp'), os.path.join(out, 'port'))
            server.serve_forever()
            """
        process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", script, dir.path, String(failFirst)]
        try process.run()
        let end = monotonicSeconds() + 10
        var found: Int?
        while found == nil && monotonicSeconds() < end {
            found = (try? String(contentsOf: dir.appendingPathComponent("port"), encoding: .utf8)).flatMap {
                Int($0.trimmingCharacters(in: .whitespacesAndNewlines))
            }
            if found == nil { usleep(20_000) }
        }
        guard let found else { throw TestSetupError(message: "the test's webhook did not start (python3)") }
        port = found
    }

    /// The bodies received, in order, with the status each was answered.
    func received() throws -> [(status: Int, json: [String: Any])] {
        try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".json") }.sorted().map {
            let status = Int($0.dropFirst(5).prefix(3)) ?? 0
            let data = try Data(contentsOf: dir.appendingPathComponent($0))
            return (status, (try JSONSerialization.jsonObject(with: data) as? [String: Any]) ?? [:])
        }
    }

    deinit {
        kill(process.processIdentifier, SIGKILL)
        _ = TestServices.waitForExit(process)
        try? FileManager.default.removeItem(at: dir)
    }
}

@Suite("Alerts to webhooks", .serialized, .timeLimit(.minutes(5)))
struct AlertTests {
    @Test(
        """
        a failed run and a dead letter reach a webhook of ours once each, with the DAG, run, date, error and a \
        link; the first refusal is retried and every attempt recorded; the URL is never logged
        """
    )
    func failedRunAndDeadLetter() throws {
        let hook = try WebhookReceiver(failFirst: 1)
        let secret = "hooks/T0/secret-\(TestServices.randomSuffix())"
        let c = try Cluster(extra: [
            "ETL_ALERT_WEBHOOKS": "http://127.0.0.1:\(hook.port)/\(secret)",
            "ETL_PUBLIC_URL": "http://etl.example.test/",
        ])
        defer { c.stopAll() }
        try c.startScheduler()
        try c.startWorker()
        let run = try c.trigger("example_retry_out")
        #expect(try c.wait(run: run, timeout: 60) == .failed, "\(c.logs())")
        // A message nobody can read: the worker dead-letters it.
        _ = try c.queue.redis.command("XADD", c.queue.keys.queue("default"), "*", "body", "not a message", "sig", "x")
        let s = c.schema
        try c.waitFor("two alerts delivered", timeout: 60) {
            try c.store.pg.query(
                """
                SELECT count(*) FILTER (WHERE d.sent_at IS NOT NULL) = 2 AND count(*) = 2
                FROM \(s).alert a JOIN \(s).alert_delivery d USING (alert_id)
                """
            ).rows[0].decode(Bool.self, 0)
        }
        let got = try hook.received()
        #expect(got.count == 3 && got[0].status == 500, "\(got.map(\.status))")
        let accepted = got.filter { $0.status == 200 }.map { $0.json["alert"] as? [String: Any] ?? [:] }
        let failed = try #require(accepted.first { $0["kind"] as? String == "run_failed" }, "\(accepted)")
        #expect(failed["dag"] as? String == "example_retry_out")
        #expect((failed["run"] as? NSNumber)?.int64Value == run)
        #expect(failed["date"] as? String == "2024-06-01")
        #expect((failed["error"] as? String)?.hasPrefix("doomed: ") == true, "\(failed)")
        #expect(failed["link"] as? String == "http://etl.example.test/dags/example_retry_out/runs/\(run)")
        let text = got.first { ($0.json["alert"] as? [String: Any])?["kind"] as? String == "run_failed" }?.json["text"]
        #expect((text as? String)?.contains("failed") == true)
        let dead = try #require(accepted.first { $0["kind"] as? String == "dead_letter" }, "\(accepted)")
        #expect((dead["message"] as? String)?.hasPrefix("queue default: ") == true, "\(dead)")
        // Every attempt recorded: three, the refused one first, with its status.
        let attempts = try c.store.pg.query(
            "SELECT ok, detail FROM \(s).alert_attempt ORDER BY at"
        ).rows.map { (try $0.decode(Bool.self, 0), try $0.decode(String.self, 1)) }
        #expect(attempts.map(\.0) == [false, true, true] && attempts[0].1 == "HTTP 500", "\(attempts)")
        // Made once each: finishing again or another leader adds none.
        #expect(try c.store.pg.query("SELECT count(*) FROM \(s).alert").rows[0].decode(Int.self, 0) == 2)
        #expect(!c.logs(whole: true).contains(secret), "the webhook's URL is in a log")
    }
}
