import Broker
import ETLSupport
import Foundation
import Metadata
import Orchestration
import PostgresClient
import RedisClient
import Workflow

/// A progress bar on stderr when it is a terminal; nothing otherwise.
public final class ProgressBar {
    private let total: Int64
    private let label: String
    private let enabled: Bool
    private var lastDraw = 0.0
    private let started = monotonicSeconds()

    public init(label: String, total: Int64, enabled: Bool = isatty(2) != 0) {
        self.label = label
        self.total = max(total, 1)
        self.enabled = enabled
    }

    public func update(_ done: Int64) {
        guard enabled else { return }
        let now = monotonicSeconds()
        guard now - lastDraw >= 0.1 || done >= total else { return }
        lastDraw = now
        let share = min(1, Double(done) / Double(total))
        let width = 30
        let filled = Int(share * Double(width))
        let rate = Double(done) / max(now - started, 0.001)
        let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
        FileHandle.standardError.write(
            "\r\(label) [\(bar)] \(Int(share * 100))% \(done)/\(total) \(Int(rate))/s ".data(using: .utf8)!)
    }

    public func finish() {
        guard enabled else { return }
        update(total)
        FileHandle.standardError.write("\n".data(using: .utf8)!)
    }
}
