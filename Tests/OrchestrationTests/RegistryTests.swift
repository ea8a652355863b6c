import Foundation
import Orchestration
import Testing
import Workflow

/// The registry every program loads refuses at start-up what would fail at run time.
@Suite("Registry", .timeLimit(.minutes(10)))
struct RegistryTests {
    static let start = Date(timeIntervalSince1970: 1_704_067_200)

    @Test("a task naming an operation the build lacks is refused, naming the DAG, task, operation and the known ones")
    func unknownOperation() throws {
        let dag = try DAG(
            "typo", schedule: .manual, startDate: Self.start,
            tasks: [
                TaskSpec("extract", operation: "noop"), TaskSpec("load", operation: "lod", upstream: ["extract"]),
            ])
        let e = #expect(throws: DAGError.self) {
            try Registry(dags: [dag], operations: ["noop": { _ in }, "load": { _ in }])
        }
        let text = e.map { "\($0)" } ?? ""
        #expect(
            text.contains("DAG typo") && text.contains("task 'load'") && text.contains("'lod'")
                && text.contains("load, noop"), "\(text)")
    }

    @Test("two DAGs with one id are refused; a consistent registry loads and answers by id")
    func duplicatesAndLookup() throws {
        let a = try DAG("same", schedule: .manual, startDate: Self.start, tasks: [TaskSpec("t", operation: "noop")])
        #expect(throws: DAGError.self) { try Registry(dags: [a, a], operations: ["noop": { _ in }]) }
        let r = try Registry(dags: [a], operations: ["noop": { _ in }])
        #expect(r.dag("same")?.tasks.map(\.id) == ["t"])
        #expect(r.dag("other") == nil)
        #expect(r.queues == ["default"])
    }
}
