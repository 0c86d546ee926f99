// A log as Caddy JSON, as the Caddyfile adapter builds it; its keys are the decoder's `CodingKeys`.

extension CustomLogConfig {
    /// `caddy.CustomLog`.
    package final class Document {
        package init() {}

        package var writer: JSONObject?
        package var encoder: JSONObject?
        package var core: JSONObject?
        package var level = ""
        package var sampling: JSONObject?
        package var include: [String] = []
        package var exclude: [String] = []

        package var isEmpty: Bool {
            writer == nil && encoder == nil && core == nil && level.isEmpty && sampling == nil && include.isEmpty
                && exclude.isEmpty
        }

        package var json: JSONObject {
            var o = JSONObject()
            o.put(CodingKeys.writer, writer)
            o.put(CodingKeys.encoder, encoder)
            o.put(CodingKeys.core, core)
            o.put(CodingKeys.level, level)
            o.put(CodingKeys.sampling, sampling)
            o.put(CodingKeys.include, include)
            o.put(CodingKeys.exclude, exclude)
            return o
        }
    }
}
