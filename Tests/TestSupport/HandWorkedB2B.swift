import Foundation

@testable import Tasks

/// A small B2B platform written by hand (2 companies, 3 products, 8 customers, 8 orders with a
/// few bad rows), whose reports the pipeline tests work out by hand.
public enum HandWorkedB2B {
    /// The platform's first day (its first order's).
    public static let historyStart = "2023-05-31"

    /// Writes one export folder per day from the fixture's history start to `through`: each order
    /// (`id,company,customer,ordered_at` lines) in its day's orders.csv, each sales line with its
    /// order's day, and lines of unknown orders in `orphanDay`'s. Days without orders get an empty
    /// folder (the platform exported nothing that day).
    public static func exports(
        _ fx: PipelineFixture, orders: String, sales: String, orphanDay: String, through: String
    ) throws {
        var dayOf: [String: String] = [:]
        var ordersByDay: [String: [String]] = [:]
        for line in orders.split(separator: "\n") {
            let f = line.split(separator: ",")
            let day = String(f[3].prefix(10))
            dayOf[String(f[0])] = day
            ordersByDay[day, default: []].append(String(line))
        }
        var salesByDay: [String: [String]] = [:]
        for line in sales.split(separator: "\n") {
            let id = String(line.split(separator: ",")[0])
            salesByDay[dayOf[id] ?? orphanDay, default: []].append(String(line))
        }
        let s = fx.settings
        var day = s.historyStart
        while day.description <= through {
            let dir = "\(s.exportDir)/day=\(day)"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            if let o = ordersByDay[day.description] {
                try ("id,company_cuit,customer_document,ordered_at\n" + o.joined(separator: "\n") + "\n")
                    .write(toFile: "\(dir)/orders.csv", atomically: true, encoding: .utf8)
            }
            if let l = salesByDay[day.description] {
                try ("order_id,line,product_id,quantity,unit_price,total\n" + l.joined(separator: "\n") + "\n")
                    .write(toFile: "\(dir)/sales.csv", atomically: true, encoding: .utf8)
            }
            day = Day(daysSince1970: day.daysSince1970 + 1)
        }
    }

    /// Companies, products, catalogs and customers; orders and sales with a few bad rows.
    public static func write(_ fx: PipelineFixture) throws -> String {
        try fx.write(
            "b2b/company.csv",
            """
            cuit,name,is_supplier
            30-11111111-1,Supplier One,true
            30-22222222-2,Buyer Two,false
            """)
        try fx.write(
            "b2b/product.csv",
            """
            id,supplier_cuit,name,default_price
            1,30-11111111-1,Tea,1.00
            2,30-11111111-1,Coffee,2.00
            3,30-11111111-1,Mate,3.00
            """)
        try fx.write(
            "b2b/inventory.csv",
            """
            company_cuit,product_id,price,stock
            30-22222222-2,1,1.50,10
            30-22222222-2,2,2.50,10
            30-22222222-2,3,3.50,10
            """)
        try fx.write(
            "b2b/customer.csv",
            """
            document_number,full_name,date_of_birth,address,country_code,username
            1,Ana,1990-01-01,"Calle 1, BA",AR,ana
            2,Bob,1990-01-01,Calle 2,AR,bob
            3,Caio,1990-01-01,Rua 3,BR,caio
            4,Duda,1990-01-01,Rua 4,BR,duda
            5,Eva,1990-01-01,Rua 5,BR,eva
            6,Fay,1990-01-01,Calle 6,UY,fay
            7,Gus,1990-01-01,Calle 7,UY,gus
            8,Bad,1990-13-01,Calle 8,UY,bad
            """)
        try exports(
            fx,
            orders: """
                1,30-22222222-2,1,2023-05-31 23:00:00
                2,30-22222222-2,1,2023-06-01 00:00:00
                3,30-22222222-2,3,2024-01-10 12:00:00
                4,30-22222222-2,4,2024-01-20 12:00:00
                5,30-22222222-2,2,2024-05-31 23:59:59
                6,30-22222222-2,5,2024-06-01 00:00:00
                7,30-22222222-2,3,2023-09-05 08:00:00
                8,30-22222222-2,8,2024-02-01 00:00:00
                """,
            sales: """
                1,1,1,10,1.50,15.00
                2,1,1,2,1.50,3.00
                2,2,2,1,2.50,2.50
                3,1,3,4,3.50,14.00
                4,1,2,4,2.50,10.00
                4,2,1,1,1.50,1.50
                5,1,1,5,1.50,7.50
                6,1,3,100,3.50,350.00
                99,1,1,1,1.50,1.50
                8,1,1,1,1.50,1.50
                """, orphanDay: "2024-06-01", through: "2024-06-15")
        return fx.dir.appendingPathComponent("b2b").path
    }
}
