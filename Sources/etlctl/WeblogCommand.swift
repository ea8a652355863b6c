import ArgumentParser
import Broker
import ETLSupport
import Foundation
import Metadata
import Orchestration
import PostgresClient
import RedisClient
import Tasks
import Workflow

extension ETLCtl {
    struct WeblogCmd: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "weblog",
            abstract: "Inspect access logs.",
            subcommands: [Check.self]
        )

        struct Check: ParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Parse a log file without loading it: what would be loaded and what rejected, and why.",
                discussion: """
                    Prints each rejected line with its number and reason, then totals and the top devices and \
                    countries. With --json, one object per line of the file. Example:
                      etlctl weblog check apache-logs/access_log_20240601T000000.log
                    """
            )
            @Argument(help: "The access-log file.") var file: String
            @Flag(help: "One JSON object per line of the file.") var json = false

            func run() throws {
                let s = try settings()
                guard FileManager.default.fileExists(atPath: file) else {
                    throw fail(
                        "no file \(file). Fix: give the path of an access log, e.g. apache-logs/access_log_*.log")
                }
                let rules = try failing { try DeviceRules.shared(path: s.uapRegexes) }
                var e = WeblogEnricher(
                    rules: rules, ranges: try failing { try WeblogEnricher.ranges(pg: nil, settings: s) },
                    cacheSize: s.deviceCache)
                var number: Int64 = 0
                var good: Int64 = 0
                var bad: Int64 = 0
                var devices: [String: Int] = [:]
                var countries: [String: Int] = [:]
                try failing {
                    try LineReader(path: file).forEachLine { bytes, _, cut in
                        number += 1
                        switch e.enrich(bytes, cut: cut) {
                        case .success(let r):
                            good += 1
                            devices[r.device, default: 0] += 1
                            countries[r.country ?? "-", default: 0] += 1
                            if json {
                                Output.json([
                                    "line": number, "load": true, "ip": r.record.clientIP,
                                    "user": nullable(r.record.user),
                                    "time": r.timestamp, "request": nullable(r.record.path ?? r.record.rawRequest),
                                    "status": r.record.status, "device": r.device, "os": r.os,
                                    "country": nullable(r.country),
                                ])
                            }
                        case .failure(let why):
                            bad += 1
                            let raw = Rejection(line: number, raw: bytes, reason: why.reason).raw
                            if json {
                                Output.json(["line": number, "load": false, "reason": why.reason, "raw": raw])
                            } else {
                                print("line \(number): rejected: \(why.reason)")
                            }
                        }
                        return true
                    }
                }
                if !json {
                    print("\(file): \(number) lines; would load \(good), reject \(bad)")
                    let top = { (d: [String: Int]) in
                        d.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }.prefix(5).map {
                            "\($0.key) \($0.value)"
                        }.joined(separator: ", ")
                    }
                    print("devices: \(top(devices))")
                    print("countries: \(top(countries))")
                }
            }
        }
    }
}
