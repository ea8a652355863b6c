import ETLSupport
import Orchestration
import Testing
import Workflow

@Suite("Pools (no servers)")
struct PoolSlotsTests {
    @Test("pooled tasks go while their pool has free slots; others always")
    func admit() {
        let ready: [(task: String, pool: String?)] = [
            ("a", "loads"), ("b", nil), ("c", "loads"), ("d", "reports"), ("e", "loads"),
        ]
        var d = PoolSlots.admit(ready, used: [:], slots: ["loads": 2, "reports": 1])
        #expect(d.admitted == ["a", "b", "c", "d"] && d.held == ["e"])
        d = PoolSlots.admit(ready, used: ["loads": 2], slots: ["loads": 2, "reports": 1])
        #expect(d.admitted == ["b", "d"] && d.held == ["a", "c", "e"])
        // Over-full (slots lowered while tasks ran): nothing more, never a negative count that lets some through.
        d = PoolSlots.admit(ready, used: ["loads": 5, "reports": 3], slots: ["loads": 2, "reports": 1])
        #expect(d.admitted == ["b"])
        let none = PoolSlots.admit([], used: [:], slots: [:])
        #expect(none.admitted.isEmpty && none.held.isEmpty)
    }

    @Test("ETL_POOLS: name=slots pairs; bad ones refused naming the item and the fix")
    func parse() throws {
        #expect(try Registry.pools(from: " loads = 4 , reports=2,") == ["loads": 4, "reports": 2])
        #expect(try Registry.pools(from: "") == [:])
        for bad in ["loads", "loads=0", "loads=x", "=3", "a=1,a=2", "a=10001"] {
            do {
                _ = try Registry.pools(from: bad)
                Issue.record("'\(bad)' was accepted")
            } catch let e as ConfigError {
                #expect("\(e)".contains("ETL_POOLS"), "\(e)")
            }
        }
    }

    @Test("a task in a pool that is not defined is refused at start-up")
    func unknownPool() throws {
        let dag = try DAG(
            "d", schedule: .manual, startDate: .distantPast, tasks: [TaskSpec("t", operation: "op", pool: "heavy")])
        let op: TaskOperation = { _ in }
        #expect(throws: DAGError.self) { try Registry(dags: [dag], operations: ["op": op], pools: ["light": 1]) }
        #expect(throws: Never.self) { try Registry(dags: [dag], operations: ["op": op], pools: ["heavy": 1]) }
    }
}
