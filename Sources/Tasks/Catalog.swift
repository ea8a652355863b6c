import Broker
import ETLSupport
import Foundation
import Metadata
import Orchestration
import PostgresClient
import RedisClient
import Workflow

/// The registry every process loads: the pipelines (issue 4) and, when asked, the examples.
public enum Catalog {
    /// The registry of `pipelines` (this build's, `PipelineDAGs.pipelines`, unless a test adds one)
    /// and, with `ETL_EXAMPLE_DAGS=true`, the example DAGs.
    public static func registry(
        environment env: Environment, pipelines: [Pipeline] = PipelineDAGs.pipelines
    ) throws -> Registry {
        var dags: [DAG] = []
        var ops: [String: TaskOperation] = [:]
        var inputs: [String: InputCheck] = [:]
        let settings = try PipelineSettings(environment: env)
        // The pipelines' schemas exist in every deployment, whichever DAGs are loaded: the web UI,
        // /metrics and etlctl read them (see PipelineSchemas).
        var setup: [SetupScript] = PipelineSchemas.setupScripts(settings)
        if env["ETL_PIPELINE_DAGS"]?.lowercased() != "false" {
            dags += try PipelineDAGs.dags(settings: settings, pipelines: pipelines)
            ops.merge(try PipelineDAGs.operations(settings: settings, environment: env, pipelines: pipelines)) { a, _ in
                a
            }
            for p in pipelines { if let check = p.inputs { inputs[p.name] = check(settings) } }
        }
        if env["ETL_EXAMPLE_DAGS"]?.lowercased() == "true" {
            let length = try env.integer("ETL_EXAMPLE_CHAIN_LENGTH", default: 200, range: 1...100_000)
            let fanout = try env.integer("ETL_EXAMPLE_FANOUT_SIZE", default: 1000, range: 1...1_000_000)
            dags += try ExampleDAGs.dags(chainLength: length, fanoutSize: fanout)
            ops.merge(ExampleDAGs.operations) { a, _ in a }
            setup += ExampleDAGs.setup
        }
        if env["ETL_DAGS_ARE_PAUSED_AT_CREATION"]?.lowercased() == "false" {
            dags = dags.map {
                var d = $0
                d.pausedOnCreation = false
                return d
            }
        }
        var pools = try Registry.pools(from: env["ETL_POOLS"] ?? Registry.defaultPools)
        if env["ETL_EXAMPLE_DAGS"]?.lowercased() == "true" { pools.merge(ExampleDAGs.pools) { mine, _ in mine } }
        return try Registry(dags: dags, operations: ops, setup: setup, pools: pools, inputs: inputs)
    }
}
