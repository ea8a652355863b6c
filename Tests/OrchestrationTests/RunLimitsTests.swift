import Foundation
import Orchestration
import Testing
import Workflow

@Suite("Max active runs (no servers)")
struct RunLimitsTests {
    static func day(_ n: Int) -> Date { Date(timeIntervalSince1970: 1_717_200_000 + Double(n) * 86_400) }

    @Test("one at a time: the oldest date goes first, whatever the order the runs were made in")
    func oldestFirst() {
        let runs = [
            RunLimits.ActiveRun(id: 1, logicalDate: Self.day(2), state: .queued),  // a manual run for today
            RunLimits.ActiveRun(id: 2, logicalDate: Self.day(1), state: .queued),  // then yesterday's scheduled one
        ]
        #expect(RunLimits.admitted(runs, limit: 1) == [2])
        #expect(RunLimits.admitted(runs, limit: 2) == [1, 2])
        #expect(RunLimits.admitted([], limit: 1).isEmpty)
    }

    @Test("a running run keeps its slot, also over the limit; queued ones wait for a free one")
    func runningHoldsItsSlot() {
        let runs = [
            RunLimits.ActiveRun(id: 5, logicalDate: Self.day(9), state: .running),
            RunLimits.ActiveRun(id: 6, logicalDate: Self.day(1), state: .queued),
            RunLimits.ActiveRun(id: 7, logicalDate: Self.day(8), state: .running),
        ]
        #expect(RunLimits.admitted(runs, limit: 1) == [5, 7])
        #expect(RunLimits.admitted(runs, limit: 3) == [5, 6, 7])
        // Same date: creation order.
        let twins = [
            RunLimits.ActiveRun(id: 11, logicalDate: Self.day(3), state: .queued),
            RunLimits.ActiveRun(id: 10, logicalDate: Self.day(3), state: .queued),
        ]
        #expect(RunLimits.admitted(twins, limit: 1) == [10])
    }

    @Test("1,000 random sets of runs: never more admitted than the limit beyond the running, and the oldest queued")
    func randomSets() {
        var rng = SplitMix(seed: 99)
        for _ in 0..<1000 {
            let n = Int(rng.next() % 8)
            let limit = Int(rng.next() % 4) + 1
            let runs = (0..<n).map { i in
                RunLimits.ActiveRun(
                    id: Int64(i), logicalDate: Self.day(Int(rng.next() % 5)),
                    state: rng.next() % 3 == 0 ? .running : .queued)
            }
            let got = RunLimits.admitted(runs, limit: limit)
            let running = Set(runs.filter { $0.state == .running }.map(\.id))
            let queued = runs.filter { $0.state == .queued }
            #expect(running.isSubset(of: got))
            let free = max(0, limit - running.count)
            #expect(got.count == running.count + min(free, queued.count))
            // Every admitted queued run is no younger than every waiting one.
            let inQueued = queued.filter { got.contains($0.id) }
            let outQueued = queued.filter { !got.contains($0.id) }
            for a in inQueued {
                for w in outQueued { #expect((a.logicalDate, a.id) < (w.logicalDate, w.id)) }
            }
        }
    }
}
