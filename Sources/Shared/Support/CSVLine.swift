/// Splits one CSV record (RFC 4180): fields separated by commas, a quoted field may hold commas
/// and doubled quotes (`""`). Returns nil for a quote that never closes.
public enum CSVLine {
    public static func split(_ line: Substring) -> [String]? {
        var fields: [String] = []
        var field = ""
        var inQuotes = false
        var wasQuoted = false
        var i = line.startIndex
        while i < line.endIndex {
            let c = line[i]
            if inQuotes {
                if c == "\"" {
                    let n = line.index(after: i)
                    if n < line.endIndex && line[n] == "\"" { field.append("\""); i = line.index(after: n); continue }
                    inQuotes = false
                } else {
                    field.append(c)
                }
            } else if c == "," {
                fields.append(field); field = ""; wasQuoted = false
            } else if c == "\"" && field.isEmpty && !wasQuoted {
                inQuotes = true; wasQuoted = true
            } else {
                field.append(c)
            }
            i = line.index(after: i)
        }
        if inQuotes { return nil }
        fields.append(field)
        return fields
    }
}
