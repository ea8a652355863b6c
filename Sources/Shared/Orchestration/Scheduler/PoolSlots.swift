/// Which ready tasks a pool lets through: the decision of `SchedulerService.withinPools` without
/// the I/O. A task outside any pool always goes; a pooled one goes while its pool has a free slot
/// (its slots less its tasks already queued or running, and less the ones admitted before it).
public enum PoolSlots {
    public struct Decision: Sendable, Equatable {
        /// The tasks to enqueue now, in the order given.
        public let admitted: [String]
        /// The pooled tasks that wait for a slot.
        public let held: [String]
    }

    /// `ready` (each with its pool), given `used` slots per pool and each pool's `slots`.
    public static func admit(
        _ ready: [(task: String, pool: String?)], used: [String: Int], slots: [String: Int]
    ) -> Decision {
        var free = slots.mapValues { $0 }
        for (p, n) in used { free[p, default: 0] -= n }
        var admitted: [String] = []
        var held: [String] = []
        for r in ready {
            guard let p = r.pool else {
                admitted.append(r.task)
                continue
            }
            if free[p, default: 0] > 0 {
                free[p, default: 0] -= 1
                admitted.append(r.task)
            } else {
                held.append(r.task)
            }
        }
        return Decision(admitted: admitted, held: held)
    }
}
