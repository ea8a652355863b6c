import ETLSupport
import Foundation

extension Registry {
    /// The pipelines' pools when `ETL_POOLS` is not set: the heavy loads (b2b, ip2geo, the weblog
    /// parts) share 4 slots and the reports 2, so they never all write to Postgres at once.
    public static let defaultPools = "loads=4,reports=2"

    /// Pools from text such as `loads=4,reports=2` (`ETL_POOLS`): a name and a number of slots each.
    public static func pools(from text: String, variable: String = "ETL_POOLS") throws -> [String: Int] {
        var pools: [String: Int] = [:]
        for item in text.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !item.isEmpty {
            let parts = item.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 2, !parts[0].isEmpty, let slots = Int(parts[1]), slots >= 1, slots <= 10_000 else {
                throw ConfigError(
                    variable: variable, problem: "'\(item)' is not a pool: a name, '=', and 1 to 10000 slots",
                    fix: "write pools as name=slots, comma-separated, e.g. \(variable)=\(defaultPools)")
            }
            guard pools[parts[0]] == nil else {
                throw ConfigError(
                    variable: variable, problem: "pool '\(parts[0])' is given twice", fix: "give each pool once")
            }
            pools[parts[0]] = slots
        }
        return pools
    }
}
