public import UsherCore
public import UsherHTTP

/// `http.handlers.error`: fails the request with a status and message, for the `errors` routes to handle.
public struct ErrorHandler: MiddlewareHandler {
    public static let moduleID: ModuleID = "http.handlers.error"
    /// `error`: the message (`{http.error.message}`); known placeholders are replaced.
    public var error: String
    /// `status_code`: the status. Default: 500.
    public var statusCode: WeakString?

    enum CodingKeys: String, CodingKey { case error, statusCode = "status_code" }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        error = try c.decodeIfPresent(String.self, forKey: .error) ?? ""
        statusCode = try c.decodeIfPresent(WeakString.self, forKey: .statusCode)
    }

    public func serve(_ request: Request, _ writer: any ResponseWriter, next: any HTTPHandler) async throws {
        var status = 500
        if let code = statusCode?.value, !code.isEmpty {
            guard let n = Int(request.replacer.replaceAll(code)) else {
                throw HandlerError(status: 500, HTTPErrorMessage("invalid status code \"\(code)\""))
            }
            status = n
        }
        throw HandlerError(status: status, HTTPErrorMessage(request.replacer.replaceKnown(error)))
    }
}
