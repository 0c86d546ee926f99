public import UsherCore

extension CAConfig {
    /// `caddypki.CA`.
    package final class Document {
        package init() {}

        package var id = ""
        package var name = ""
        package var rootCommonName = ""
        package var intermediateCommonName = ""
        package var intermediateLifetime: Int64 = 0
        package var installTrust: Bool?
        package var root: JSONObject?
        package var intermediate: JSONObject?
        package var maintenanceInterval: Int64 = 0
        package var renewalWindowRatio: Double = 0
        package var storage: JSONObject?

        package var json: JSONObject {
            var o = JSONObject()
            o.put(CodingKeys.name, name)
            o.put(CodingKeys.rootCommonName, rootCommonName)
            o.put(CodingKeys.intermediateCommonName, intermediateCommonName)
            o.putDuration(CodingKeys.intermediateLifetime, intermediateLifetime)
            if let installTrust { o[CodingKeys.installTrust] = .bool(installTrust) }
            o.put(CodingKeys.root, root)
            o.put(CodingKeys.intermediate, intermediate)
            o.putDuration(CodingKeys.maintenanceInterval, maintenanceInterval)
            o.put(CodingKeys.renewalWindowRatio, renewalWindowRatio)
            o.put(CodingKeys.storage, storage)
            return o
        }
    }
}
