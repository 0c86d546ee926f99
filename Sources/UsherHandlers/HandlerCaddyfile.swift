public import UsherCaddyfile

/// The Caddyfile syntax of this target's handlers, each kept beside its module (`Encode+Caddyfile.swift`, ...);
/// `StandardModules` lists it.
public enum HandlerCaddyfile {
    public static let support = CaddyfileSupport(merging: [
        staticResponseParsers, errorParsers, varsParsers, mapParsers, headerParsers, rewriteParsers,
        requestBodyParsers, encodeParsers, metricsParsers, fileServerParsers, pushParsers,
        authenticationParsers, logAppendParsers, templatesParsers,
    ])
}
