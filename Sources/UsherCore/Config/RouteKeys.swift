/// The keys of the `http` app's route structure, spelled once: `UsherHTTP` decodes routes, subroutes and error
/// routes with them, and the Caddyfile adapter (in a target below `UsherHTTP`) writes them.
public enum RouteKeys: String, CodingKey {
    case group, match, handle, terminal
}

/// The keys of a `subroute` handler and of a server's `errors`.
public enum RouteListKeys: String, CodingKey {
    case routes, errors
}
