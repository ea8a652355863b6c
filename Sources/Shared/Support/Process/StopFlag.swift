import Foundation

/// A request to stop, set once by a service's graceful shutdown and read by the threads it started
/// (slot loops, heartbeats), which check it between units of work. One per service: no global.
public final class StopFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var requested = false

    public init() {}

    public var isSet: Bool { lock.withLock { requested } }

    public func set() { lock.withLock { requested = true } }
}
