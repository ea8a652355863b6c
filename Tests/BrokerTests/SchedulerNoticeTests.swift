import Broker
import ETLSupport
import Foundation
import RedisClient
import TestSupport
import Testing

@Suite("What the scheduler reads from the event stream", .timeLimit(.minutes(10)))
struct SchedulerNoticeTests {
    @Test("a wake-up and a completion travel side by side and come back as what they are")
    func wakeBesideCompletion() throws {
        let queue = TaskQueue(
            redis: try RedisConnection(config: TestServices.redis), keys: RedisKeys(prefix: TestServices.redisPrefix()))
        defer { _ = try? queue.redis.command("DEL", queue.keys.events) }
        try queue.ensureGroups(queues: ["default"])
        try queue.wakeScheduler(dag: "b2b", run: 7, reason: "triggered", by: "web:ana")
        // A completion as a worker publishes it (the acknowledgement's Lua call), and a legacy wake-up
        // (a completion event with an empty task, as earlier builds sent) which still reads as an event.
        let done = CompletionEvent(dag: "b2b", runID: 7, task: "load", tryNumber: 1, state: "success", worker: "w/0")
        let legacy = CompletionEvent(dag: "b2b", runID: 8, task: "", tryNumber: 0, state: "cleared", worker: "etlctl")
        for e in [done, legacy] { _ = try queue.redis.command("XADD", queue.keys.events, "*", "event", e.json) }
        _ = try queue.redis.command("XADD", queue.keys.events, "*", "other", "x")
        let read = try queue.readEvents(consumer: "s", block: 1, count: 10)
        #expect(read.count == 4)
        #expect(
            read.map(\.notice) == [
                .wake(SchedulerWake(dag: "b2b", runID: 7, reason: "triggered", by: "web:ana")),
                .completion(done), .completion(legacy), nil,
            ])
        #expect(read.compactMap { $0.notice?.runID } == [7, 7, 8])
        try queue.ackEvents(read.map(\.id))
        #expect(try queue.readEvents(consumer: "s", block: 0.1, count: 10).isEmpty)
    }

    @Test("the wake-up's wire form round-trips; a completion's does not read as one")
    func wireForm() {
        let odd = SchedulerWake(dag: "a,\"b\"\\c é🚀", runID: Int64(Int32.max) + 5, reason: "cleared", by: "web:x y")
        #expect(SchedulerWake(flat: odd.json) == odd)
        let event = CompletionEvent(dag: "d", runID: 1, task: "t", tryNumber: 1, state: "success", worker: "w")
        #expect(SchedulerWake(flat: event.json) == nil)
        #expect(SchedulerWake(flat: Array("not json".utf8)) == nil)
    }
}
