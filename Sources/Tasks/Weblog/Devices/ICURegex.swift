import CRegex

/// A compiled ICU regular expression. Matching state lives in the ICU object, so one `ICURegex`
/// must not be used by two threads at once: each `DeviceClassifier` takes its own `clone()`.
final class ICURegex: @unchecked Sendable {
    let pattern: String
    private let handle: OpaquePointer

    init(_ pattern: String, caseInsensitive: Bool) throws {
        self.pattern = pattern
        var status: Int32 = 0
        var offset: Int32 = 0
        let utf16 = Array(pattern.utf16)
        let h = utf16.withUnsafeBufferPointer {
            etl_regex_open($0.baseAddress, Int32($0.count), caseInsensitive ? 1 : 0, &status, &offset)
        }
        guard let h else {
            throw DeviceRulesError(description: "ICU cannot compile \(pattern) (status \(status) at offset \(offset))")
        }
        handle = h
    }

    private init(pattern: String, handle: OpaquePointer) {
        self.pattern = pattern
        self.handle = handle
    }

    func clone() -> ICURegex { ICURegex(pattern: pattern, handle: etl_regex_clone(handle)!) }

    deinit { etl_regex_close(handle) }

    /// The groups of the first match in `text` (nil for a group that did not take part), or nil.
    func firstMatch(_ text: UnsafeBufferPointer<UInt16>) -> [String?]? {
        let n = etl_regex_find(handle, text.baseAddress, Int32(text.count))
        guard n >= 0 else { return nil }
        var groups: [String?] = []
        groups.reserveCapacity(Int(n))
        var a: Int32 = 0
        var b: Int32 = 0
        for g in stride(from: Int32(1), through: n, by: 1) {
            etl_regex_group(handle, g, &a, &b)
            groups.append(
                a < 0 || b < a
                    ? nil : String(decoding: UnsafeBufferPointer(rebasing: text[Int(a)..<Int(b)]), as: UTF16.self))
        }
        return groups
    }
}
