import Broker
import ETLSupport
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Metadata
import NIOCore
import Orchestration
import PostgresClient
import RedisClient
import Tasks
import Workflow

/// Form bodies (`application/x-www-form-urlencoded`) and flat JSON objects, as string maps.
enum Forms {
    /// A checkbox or flag: "1", "true", "on" or "yes" (JSON true arrives as "1").
    static func yes(_ value: String?) -> Bool { ["1", "true", "on", "yes"].contains(value?.lowercased() ?? "") }

    static func parse(_ buffer: ByteBuffer) -> [String: String] {
        let text = String(buffer: buffer)
        if text.hasPrefix("{"), let obj = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] {
            return obj.reduce(into: [:]) { m, kv in
                if let s = kv.value as? String {
                    m[kv.key] = s
                } else if let a = kv.value as? [Any] {
                    m[kv.key] = a.map { "\($0)" }.joined(separator: ",")
                } else if let b = kv.value as? Bool {
                    if b { m[kv.key] = "1" }
                } else {
                    m[kv.key] = "\(kv.value)"
                }
            }
        }
        var out: [String: String] = [:]
        for pair in text.split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            func decode(_ s: Substring) -> String {
                String(s).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? ""
            }
            out[decode(kv[0])] = kv.count > 1 ? decode(kv[1]) : ""
        }
        return out
    }
}
