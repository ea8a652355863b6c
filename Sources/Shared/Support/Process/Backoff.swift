/// Exponential backoff with full jitter and a cap: the delay before attempt n (0-based) is a
/// random value in [base·2ⁿ·(1−jitter), base·2ⁿ], never above `cap`.
///
/// Used for reconnecting clients and for task retries alike.
public struct Backoff: Sendable, Equatable {
    public var base: Double
    public var cap: Double
    /// 0 (no randomness) to 1 (anywhere from 0 to the full delay).
    public var jitter: Double

    public init(base: Double, cap: Double, jitter: Double = 0.5) {
        precondition(
            base >= 0 && cap >= base && (0...1).contains(jitter), "Backoff needs 0 <= base <= cap and jitter in 0...1")
        self.base = base
        self.cap = cap
        self.jitter = jitter
    }

    /// The highest delay attempt `attempt` can get, before jitter.
    public func ceiling(attempt: Int) -> Double {
        let exp = min(max(attempt, 0), 60)
        return min(cap, base * Double(1 << UInt64(min(exp, 52))))
    }

    /// The delay in seconds before attempt `attempt`.
    public func delay(attempt: Int, random: Double = Double.random(in: 0...1)) -> Double {
        let top = ceiling(attempt: attempt)
        return top * (1 - jitter * random)
    }
}
