import Foundation

/// Idempotent DDL a program needs beside the metadata (the pipelines' schemas, the example DAGs'
/// table), applied by `Migrator.run` in its transaction, under its lock.
///
/// Its text is read only when the migration runs (a program that never migrates, or never reaches
/// Postgres, never reads the files), and it is applied only when it changed: the migrator records
/// each script's checksum, so a program starting beside running loads takes no lock on their
/// tables. `@S` in the text stands for the metadata schema.
public struct SetupScript: Sendable {
    /// Names the script and where it goes (the checksum is kept per name).
    public let name: String
    public let sql: @Sendable () throws -> String

    public init(name: String, sql: @escaping @Sendable () throws -> String) {
        self.name = name
        self.sql = sql
    }

    public init(name: String, _ text: String) {
        self.init(name: name, sql: { text })
    }
}
