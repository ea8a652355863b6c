import Broker
import ETLSupport
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Metadata
import Orchestration
import PostgresClient
import RedisClient
import Tasks
import TestSupport
import Testing
import Workflow

@testable import Web

/// Hostile input on the web side (issue 7): SQL fragments, `../` and over-long values in URLs,
/// forms and queries.
@Suite("Hostile input on the web", .serialized, .timeLimit(.minutes(10)))
struct HostileWebInputTests {
    @Test("web inputs with SQL fragments, ../ and over-long values are refused with reasons and change nothing")
    func hostileWebInput() async throws {
        let fx = try WebFixture()
        let runsBefore = try fx.store.runRows(dag: nil, limit: 1000).count
        try await fx.test { client in
            let b = try #require(try await Browser.login(client))
            let sql = HTML.component("example_diamond'; DROP TABLE dag_run; --")
            #expect(try await b.get(client, "/dags/\(sql)").status == .notFound)
            #expect(try await b.post(client, "/dags/\(sql)/trigger").status == .notFound)
            let r = try await client.execute(
                uri: "/api/loads?pipeline=" + HTML.component("' OR 1=1 --"), method: .get,
                headers: [.authorization: "Bearer \(WebFixture.token)"])
            #expect(r.status == .ok && r.text == "[]")  // a value, never SQL
            #expect(try await b.get(client, "/reports/" + HTML.component("../../../etc/passwd")).status == .notFound)
            #expect(
                try await b.get(client, "/reports/monthly-sales/" + HTML.component("../../x") + "/report.csv").status
                    == .badRequest)
            #expect(try await b.get(client, "/dags/" + String(repeating: "x", count: 10_000)).status == .notFound)
            #expect(
                try await b.post(client, "/dags/example_diamond/trigger", ["date": String(repeating: "9", count: 5000)])
                    .status == .badRequest)
            #expect(try await b.get(client, "/dags?q=" + String(repeating: "%27", count: 3000)).status == .ok)
            // A body over 64 KB is refused before it is read.
            let big = try await client.execute(
                uri: "/login", method: .post,
                body: ByteBuffer(string: "username=" + String(repeating: "a", count: 200_000)))
            #expect(big.status == .contentTooLarge)
        }
        #expect(try fx.store.runRows(dag: nil, limit: 1000).count == runsBefore)
        #expect(
            try fx.store.pg.query("SELECT count(*) FROM \(fx.cluster.schema).dag_run").rows[0].decode(Int.self, 0)
                == runsBefore)  // the table is there, unchanged
    }
}
