import Broker
import ETLSupport
import Foundation
import Metadata
import Orchestration
import PostgresClient
import RedisClient
import TestSupport
import Testing
import Workflow

@testable import Tasks

/// What an operator runs by hand: the compose file and etlctl's data commands and errors.
@Suite("Operator: docker-compose.yaml and etlctl", .serialized, .timeLimit(.minutes(10)))
struct OperatorTests {
    static let etlctl = Cluster.binDir.appendingPathComponent("etlctl").path

    @Test("docker-compose config accepts the compose file and lists the services")
    func composeFile() throws {
        let file = TestServices.repoRoot.appendingPathComponent("docker-compose.yaml").path
        let services = try TestServices.run("/usr/bin/env", ["docker-compose", "-f", file, "config", "--services"])
        #expect(
            services.status == 0,
            "docker-compose config failed (install docker-compose: apt-get install docker-compose): \(services.stderr)")
        #expect(
            Set(services.stdout.split(separator: "\n").map(String.init)) == [
                "app-db", "redis", "migrate", "scheduler", "worker", "webserver",
            ])
        let full = try TestServices.run("/usr/bin/env", ["docker-compose", "-f", file, "config"])
        #expect(full.status == 0)
        #expect(full.stdout.contains("service_completed_successfully"))
        #expect(!full.stdout.contains("container_name"))  // workers scale with --scale worker=N
        #expect(full.stdout.contains("appendonly yes"))
        #expect(full.stdout.contains("127.0.0.1:5432:5432"))  // Postgres published to this machine only
        // The passwords stay in local.env: the compose file itself names none.
        let compose = try String(contentsOfFile: file, encoding: .utf8)
        #expect(!compose.contains("change-me"))
    }

    func env(_ fx: PipelineFixture) -> [String: String] {
        var e = TestServices.environment.values
        e.merge(fx.values) { _, x in x }
        e["ETL_SCHEMA"] = "op_\(fx.tag)"
        return e
    }

    @Test("etlctl migrate, generate weblog and weblog check --json: one object per line, the malformed ones rejected")
    func generateAndCheck() throws {
        let fx = try PipelineFixture()
        defer { _ = try? fx.pg?.execute(script: "DROP SCHEMA IF EXISTS op_\(fx.tag) CASCADE") }
        let e = env(fx)
        let migrate = try TestServices.run(Self.etlctl, ["migrate"], environment: e)
        #expect(migrate.status == 0, "\(migrate.stderr)")
        let gen = try TestServices.run(
            Self.etlctl,
            [
                "generate", "weblog", "-n", "2000", "--bad-rate", "0.1", "--seed", "3",
                "--end", "2024-06-01", "--out", fx.path,
            ], environment: e)
        #expect(gen.status == 0, "\(gen.stderr)")
        let file = "\(fx.path)/access_log_20240601T000000.log"
        let check = try TestServices.run(Self.etlctl, ["weblog", "check", file, "--json"], environment: e)
        #expect(check.status == 0, "\(check.stderr)")
        let objects = try check.stdout.split(separator: "\n").map {
            try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any]
        }
        #expect(objects.count == 2000)
        let rejected = objects.filter { $0["load"] as? Bool == false }
        let malformed = Int(gen.stdout.split(separator: "(")[1].split(separator: " ")[0])!
        #expect(rejected.count == malformed && malformed > 100)
        #expect(rejected.allSatisfy { ($0["reason"] as? String)?.isEmpty == false && $0["line"] is Int })
        #expect(objects.first { $0["load"] as? Bool == true }?["device"] is String)
        let text = try TestServices.run(Self.etlctl, ["weblog", "check", file], environment: e)
        #expect(text.stdout.contains("2000 lines; would load \(2000 - malformed), reject \(malformed)"))
    }

    @Test("etlctl errors: a missing file, bad generator flags, an unreachable Postgres (no password shown)")
    func errors() throws {
        let fx = try PipelineFixture(database: false)
        let e = env(fx)
        let missing = try TestServices.run(Self.etlctl, ["weblog", "check", "/nonexistent/access.log"], environment: e)
        #expect(missing.status == 1)
        #expect(missing.stderr.hasPrefix("etlctl: no file /nonexistent/access.log. Fix:"))
        let zero = try TestServices.run(Self.etlctl, ["generate", "weblog", "-n", "0"], environment: e)
        #expect(zero.status == 64)
        #expect(zero.stderr.contains("-n must be at least 1"))
        let rate = try TestServices.run(Self.etlctl, ["generate", "weblog", "--bad-rate", "2"], environment: e)
        #expect(rate.status == 64)
        #expect(rate.stderr.contains("--bad-rate is a share between 0 and 1"))
        let flag = try TestServices.run(Self.etlctl, ["loads", "list", "--bogus"], environment: e)
        #expect(flag.status == 64)
        #expect(flag.stderr.contains("--bogus"))
        var down = e
        down["DATABASE_URL"] = "postgres://etl:hunter2secret@127.0.0.1:\(TestServices.freePort())/etl?connect_timeout=2"
        let unreachable = try TestServices.run(Self.etlctl, ["loads", "list"], environment: down)
        #expect(unreachable.status == 1)
        #expect(unreachable.stderr.contains("127.0.0.1"))
        #expect(!unreachable.stderr.contains("hunter2secret") && !unreachable.stdout.contains("hunter2secret"))
        let badDate = try TestServices.run(Self.etlctl, ["summary", "--date", "2024-13-01"], environment: e)
        #expect(badDate.status == 1)
        #expect(badDate.stderr.contains("is not a date"))
    }
}
