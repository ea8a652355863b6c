import Foundation

/// An operator's request that cannot be done as asked: what, and the fix. The web UI answers its
/// kind with 404, 409 or 400; etlctl prints the message and exits 1.
public struct OperatorError: Error, CustomStringConvertible, Sendable {
    /// Why the request was refused. New kinds may be added without breaking callers.
    public struct Kind: Hashable, Sendable {
        enum Base: Hashable, Sendable { case notFound, conflict, invalid }
        let base: Base
        /// A DAG, run, task or load that does not exist.
        public static let notFound = Kind(base: .notFound)
        /// The request contradicts the current state (a run for that date exists already).
        public static let conflict = Kind(base: .conflict)
        /// The request itself is malformed.
        public static let invalid = Kind(base: .invalid)
    }

    public let kind: Kind
    public let message: String
    public var description: String { message }

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }
}
