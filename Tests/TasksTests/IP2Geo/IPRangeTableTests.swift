import Broker
import ETLSupport
import Foundation
import Metadata
import Orchestration
import PostgresClient
import RedisClient
import Tasks
import TestSupport
import Testing
import Workflow

@Suite("IP-to-country ranges", .timeLimit(.minutes(10)))
struct IPRangeTableTests {
    @Test("the committed sample loads and answers by binary search")
    func committedSample() throws {
        let text = try String(
            contentsOf: TestServices.repoRoot.appendingPathComponent("sources/data/ip2geo.csv"), encoding: .utf8)
        let table = try IPRangeTable(csv: text, file: "sources/data/ip2geo.csv")
        #expect(table.count > 1000)
        #expect(table.country(of: "1.0.0.1")?.code == "AU")  // 16777216-16777471 in the source list
        #expect(table.country(of: "1.0.1.0")?.code == "CN")
        #expect(table.country(of: "0.0.0.1") == nil)
        let ar = table.ranges(of: "AR")
        #expect(!ar.isEmpty)
        for r in ar {
            #expect(table.country(of: r.lowerBound)?.code == "AR")
            #expect(table.country(of: r.upperBound)?.code == "AR")
        }
    }

    @Test("bad files are refused with the line and the fix")
    func badFiles() {
        let short = #expect(throws: IPRangeError.self) { try IPRangeTable(csv: "\"1\",\"2\",\"AR\"\n") }
        #expect(short?.line == 1)
        let order = #expect(throws: IPRangeError.self) {
            try IPRangeTable(csv: "\"10\",\"20\",\"AR\",\"Argentina\"\n\"15\",\"30\",\"BR\",\"Brazil\"\n")
        }
        #expect(
            order?.description
                == """
                ip2geo.csv line 2: range starts at 15, inside or before the previous range (ending 20); sort the file \
                by ip_from
                """
        )
        let bad = #expect(throws: IPRangeError.self) { try IPRangeTable(csv: "\"x\",\"2\",\"AR\",\"Argentina\"\n") }
        #expect(bad?.reason.contains("integers") == true)
    }

    @Test("CSV records: quoted commas, doubled quotes, empty fields, an unclosed quote")
    func csvLines() {
        #expect(CSVLine.split("\"1\",\"2\",\"KR\",\"Korea, Republic of\"") == ["1", "2", "KR", "Korea, Republic of"])
        #expect(CSVLine.split("a,\"say \"\"hi\"\"\",,z") == ["a", "say \"hi\"", "", "z"])
        #expect(CSVLine.split("\"open,") == nil)
    }

    @Test("dotted quads parse and print, bad ones are nil")
    func ipv4() {
        #expect(IPRangeTable.ipv4("192.168.1.255") == 0xC0A8_01FF)
        #expect(IPRangeTable.dottedQuad(0xC0A8_01FF) == "192.168.1.255")
        for bad in ["256.1.1.1", "1.2.3", "1.2.3.4.5", "1..2.3", "a.b.c.d", "", "1.2.3.4 "] {
            #expect(IPRangeTable.ipv4(bad) == nil)
        }
    }
}
