import ETLSupport
import Foundation
import Orchestration
import Tasks
import TestSupport
import Testing
import Workflow

/// The lists that name pipelines (summary, loads page, report titles) come from the declarations
/// and cannot drift from the DAGs the registry loads.
@Suite("Pipeline declarations", .timeLimit(.minutes(10)))
struct PipelineDeclarationTests {
    @Test("the six DAGs are the ingestions then one report DAG per report; every task's operation exists")
    func sixDAGs() throws {
        let fx = try PipelineFixture(database: false)
        let dags = try PipelineDAGs.dags(settings: fx.settings)
        #expect(dags.map(\.id) == PipelineDAGs.names)
        #expect(PipelineDAGs.names.suffix(3) == Reports.all.map(\.name)[...])
        for r in Reports.all {
            let dag = try #require(dags.first { $0.id == r.name })
            #expect(dag.tasks.contains { $0.arguments["report"] == r.name }, "\(r.name)'s DAG does not run its report")
            #expect(!r.title.isEmpty)
        }
        for d in dags where PipelineDAGs.ingestions.contains(d.id) { #expect(d.tags.contains("ingestion"), "\(d.id)") }
        // The registry every program loads accepts them (it refuses an operation that does not exist).
        let registry = try Catalog.registry(environment: Environment(fx.values))
        #expect(registry.dags.map(\.id) == PipelineDAGs.names)
    }
}
