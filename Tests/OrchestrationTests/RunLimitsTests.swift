import Foundation
import Orchestration
import Testing
import Workflow

@Suite("Max active runs (no servers)")
struct RunLimitsTests {
    static func day(_ n: Int) -> Date { Date(timeIntervalSince1970: 1_717_200_000 + Double(n) * 86_400) }
    static func run(_ id: Int64, day n: Int, busy: Bool = false) -> RunLimits.ActiveRun {
        .init(id: id, logicalDate: day(n), inFlight: busy)
    }

    @Test("one at a time, in date order: the oldest waiting date goes first, whatever the creation order")
    func oldestFirst() {
        let runs = [Self.run(1, day: 2), Self.run(2, day: 1)]  // a manual run for today, then yesterday's
        #expect(!RunLimits.mayStart(1, among: runs, limit: 1, inDateOrder: true))
        #expect(RunLimits.mayStart(2, among: runs, limit: 1, inDateOrder: true))
        #expect(RunLimits.mayStart(1, among: runs, limit: 2, inDateOrder: true))
        // Without date order (a report DAG) whichever is ready first may go.
        #expect(RunLimits.mayStart(1, among: runs, limit: 1, inDateOrder: false))
        #expect(!RunLimits.mayStart(9, among: runs, limit: 1, inDateOrder: true))  // not one of them
        #expect(RunLimits.candidates(runs, limit: 1, inDateOrder: true) == (1, [2]))
        #expect(RunLimits.candidates(runs, limit: 1, inDateOrder: false) == (1, [1, 2]))
    }

    @Test("work under way holds a slot, also over the limit and whatever its date; the waiting wait")
    func workHoldsItsSlot() {
        // Run 5 (a newer date) has tasks in flight, though its state may still say queued.
        let runs = [Self.run(5, day: 9, busy: true), Self.run(6, day: 1), Self.run(7, day: 8, busy: true)]
        #expect(RunLimits.mayStart(5, among: runs, limit: 1, inDateOrder: true))
        #expect(RunLimits.mayStart(7, among: runs, limit: 1, inDateOrder: true))
        #expect(!RunLimits.mayStart(6, among: runs, limit: 2, inDateOrder: true))
        #expect(!RunLimits.mayStart(6, among: runs, limit: 2, inDateOrder: false))
        #expect(RunLimits.mayStart(6, among: runs, limit: 3, inDateOrder: true))
        #expect(RunLimits.candidates(runs, limit: 2, inDateOrder: true) == (0, []))
        // Same date: creation order.
        let twins = [Self.run(11, day: 3), Self.run(10, day: 3)]
        #expect(RunLimits.mayStart(10, among: twins, limit: 1, inDateOrder: true))
        #expect(!RunLimits.mayStart(11, among: twins, limit: 1, inDateOrder: true))
    }

    @Test("1,000 random sets: the runs that may start never exceed the free slots, and come oldest first")
    func randomSets() {
        var rng = SplitMix(seed: 99)
        for _ in 0..<1000 {
            let n = Int(rng.next() % 8)
            let limit = Int(rng.next() % 4) + 1
            let runs = (0..<n).map { i in
                Self.run(Int64(i), day: Int(rng.next() % 5), busy: rng.next() % 3 == 0)
            }
            let busy = runs.filter(\.inFlight)
            let waiting = runs.filter { !$0.inFlight }
            let free = max(0, limit - busy.count)
            let may = waiting.filter { RunLimits.mayStart($0.id, among: runs, limit: limit, inDateOrder: true) }
            #expect(busy.allSatisfy { RunLimits.mayStart($0.id, among: runs, limit: limit, inDateOrder: true) })
            #expect(may.count == min(free, waiting.count))
            for a in may {
                for w in waiting where !may.contains(w) { #expect((a.logicalDate, a.id) < (w.logicalDate, w.id)) }
            }
            let c = RunLimits.candidates(runs, limit: limit, inDateOrder: true)
            #expect(c.free == free && Set(c.tryInOrder) == Set(may.map(\.id)))
        }
    }
}
