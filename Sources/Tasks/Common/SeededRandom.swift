import Broker
import ETLSupport
import Foundation
import Metadata
import Orchestration
import PostgresClient
import RedisClient
import Workflow

/// SplitMix64: small, fast and the same on every machine, so a generator's output depends only on
/// its seed and arguments.
public struct SeededRandom: RandomNumberGenerator {
    private var state: UInt64
    public init(seed: UInt64) { state = seed &+ 0x9E37_79B9_7F4A_7C15 }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// 0 ..< n without the cost of `Int.random(in:)`'s rejection loop for small n.
    @inline(__always) public mutating func below(_ n: Int) -> Int { Int((next() >> 11) % UInt64(n)) }
    /// 1, 2, 3 ... with P(k) falling geometrically (`p` = chance to stop at each step), capped.
    public mutating func geometric(_ p: Double, cap: Int) -> Int {
        var k = 1
        while k < cap && Double(next() >> 11) / Double(1 << 53) >= p { k += 1 }
        return k
    }
    public mutating func chance(_ p: Double) -> Bool { Double(next() >> 11) / Double(1 << 53) < p }
}
