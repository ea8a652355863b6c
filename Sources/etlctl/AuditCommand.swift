import ArgumentParser
import ETLSupport
import Foundation
import Metadata

struct Audit: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The audit trail: every operator action (web UI, API, etlctl), newest first.",
        discussion: """
            Each action with who (web:<user>, api-token, etlctl), when, what, on what, from where (the web
            client's address; etlctl's host and OS user) and whether it went through.
            Examples:
              etlctl audit --limit 20
              etlctl audit --action cancel --json
            """)
    @Option(help: "How many (default 50).") var limit = 50
    @Option(help: "Only this action (trigger, retry, cancel, mark-failed, pause, login, ...).") var action: String?
    @Flag(help: "One JSON array instead of a table.") var json = false
    func run() throws {
        let ctx = try Context()
        let store = try ctx.store()
        let rows = try failing { try store.auditRows(limit: max(1, min(limit, 100_000)), action: action) }
        if json {
            Output.encoded(rows)
            return
        }
        if rows.isEmpty {
            print("no operator action recorded yet")
            return
        }
        Output.table(
            ["WHEN", "WHO", "FROM", "ACTION", "ON", "DETAIL", "OUTCOME"],
            rows.map {
                [
                    Output.time($0.at), $0.actor, $0.origin, $0.action, $0.target, String($0.detail.prefix(60)),
                    $0.ok ? "done" : "refused: \(String(($0.error ?? "").prefix(60)))",
                ]
            })
    }
}
