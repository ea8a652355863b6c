import Foundation

/// A larger B2B platform for large runs: thousands of companies (a fifth of them suppliers),
/// their products, each company's catalog and millions of customers in a dozen countries, in the
/// same CSV shapes as the hand-made files. Deterministic under the seed; streams to disk.
public enum B2BScaler {
    static let countries: [(code: String, weight: Int)] = [
        ("AR", 30), ("BR", 20), ("MX", 12), ("CL", 8), ("US", 8), ("ES", 6), ("UY", 5), ("CO", 5), ("PE", 3), ("DE", 3),
    ]
    static let words = [
        "Andes", "Pampa", "Litoral", "Norte", "Sur", "Delta", "Sierra", "Valle", "Puerto", "Cumbre", "Rio", "Monte",
    ]
    static let kinds = ["Trading", "Foods", "Supplies", "Electronics", "Retail", "Distribution", "Outdoor", "Office"]
    static let goods = [
        "coffee", "tea", "rice", "oil", "cable", "charger", "notebook", "chair", "lamp", "backpack", "bottle", "pen",
    ]
    static let first = [
        "Ana", "Juan", "Lucía", "Martín", "Sofía", "Diego", "Camila", "Pedro", "Laura", "Jorge", "Elena", "Pablo",
    ]
    static let last = [
        "González", "Pérez", "Silva", "Souza", "López", "Martínez", "Rojas", "Díaz", "Smith", "García", "Costa",
        "Muñoz",
    ]

    public static func write(
        companies: Int, products: Int, customers: Int, seed: UInt64, to dir: String
    ) throws -> String {
        var rng = SeededRandom(seed: seed)
        func cuit(_ i: Int) -> String {
            let body = String(70_000_000 + i)
            return "30-\(body)-\(i % 10)"
        }
        let suppliers = max(1, companies / 5)
        let c = try BufferedFileWriter(path: "\(dir)/company.csv")
        c.append("cuit,name,is_supplier\n")
        for i in 0..<companies {
            c.append(
                "\(cuit(i)),\(words[i % words.count]) \(kinds[(i / words.count) % kinds.count]) \(i),\(i < suppliers)\n"
            )
            try c.maybeFlush()
        }
        try c.commit()
        let p = try BufferedFileWriter(path: "\(dir)/product.csv")
        p.append("id,supplier_cuit,name,default_price\n")
        var prices: [Int64] = []
        for id in 1...products {
            let cents = Int64(100 + rng.below(50_000))
            prices.append(cents)
            p.append(
                """
                \(id),\(cuit(rng.below(suppliers))),\(goods[id % goods.count]) model \(id),\
                \(PlatformHistory.money(cents))\n
                """
            )
            try p.maybeFlush()
        }
        try p.commit()
        let inv = try BufferedFileWriter(path: "\(dir)/inventory.csv")
        inv.append("company_cuit,product_id,price,stock\n")
        var inventoryRows = 0
        for i in 0..<companies {
            var picked = Set<Int>()
            for _ in 0..<min(products, 20 + rng.below(40)) {
                var id = 1 + rng.below(products)
                while picked.contains(id) { id = id % products + 1 }
                picked.insert(id)
            }
            for id in picked.sorted() {
                let price = prices[id - 1] * Int64(90 + rng.below(45)) / 100
                inv.append("\(cuit(i)),\(id),\(PlatformHistory.money(price)),\(rng.below(2000))\n")
                inventoryRows += 1
            }
            try inv.maybeFlush()
        }
        try inv.commit()
        let total = countries.reduce(0) { $0 + $1.weight }
        let cu = try BufferedFileWriter(path: "\(dir)/customer.csv")
        cu.append("document_number,full_name,date_of_birth,address,country_code,username\n")
        for i in 0..<customers {
            var w = rng.below(total)
            var country = countries[0].code
            for (code, weight) in countries {
                if w < weight {
                    country = code
                    break
                }
                w -= weight
            }
            let birth = Day(daysSince1970: -7300 + rng.below(14_600))
            cu.append(
                """
                \(country)-\(10_000_000 + i),\(first[rng.below(first.count)]) \(last[rng.below(last.count)]),\(birth),\
                \"Street \(rng.below(9999)), City \(rng.below(500))\",\(country),user\(i)\n
                """
            )
            try cu.maybeFlush()
        }
        try cu.commit()
        return "\(companies) companies, \(products) products, \(inventoryRows) catalog rows, \(customers) customers"
    }
}
