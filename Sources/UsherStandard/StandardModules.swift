import UsherACMEServer
import UsherCaddyfileHTTP
public import UsherCore
import UsherDNS
import UsherHTTP
import UsherHandlers
import UsherPostgres
import UsherReverseProxy
import UsherTLS

/// Every module Usher ships: the `http` app, its matchers and handlers. A custom binary lists this bundle plus
/// its own (`UsherMain.run(bundles: [StandardModules.self, MyModules.self])`).
public enum StandardModules: ModuleBundle {
    public static let name = "usher/standard"
    public static let version = UsherVersion.current

    public static var modules: [any Module.Type] {
        [
            HTTPApp.self,
            StaticIPRanges.self, ProxyProtocolListenerWrapper.self, HTTPRedirectListenerWrapper.self,
            TLSListenerWrapper.self,
            // TLS and PKI
            TLSApp.self, PKIApp.self, LoadFilesLoader.self, LoadPEMLoader.self, LoadFoldersLoader.self,
            LoadStorageLoader.self,
            AutomateLoader.self, InternalIssuer.self, ACMEIssuer.self, PermissionByHTTP.self, SNIMatcher.self,
            RemoteIPHandshakeMatcher.self, LocalIPHandshakeMatcher.self, SNIRegexpHandshakeMatcher.self,
            LeafCertClientAuth.self, LeafFileLoader.self, LeafFolderLoader.self, LeafPEMLoader.self,
            LeafStorageLoader.self,
            InlineCAPool.self, RFC2136Provider.self, PostgresStorageModule.self, HTTPConfigLoader.self,
            FileCAPool.self, CombinedCAPool.self, SystemCAPool.self, PKIRootCAPool.self, PKIIntermediateCAPool.self,
            StorageCAPool.self, HTTPCertificateGetter.self, HTTPCAPool.self,
            // Matchers
            HostMatcher.self, TLSRequestMatcher.self, PathMatcher.self, PathRegexpMatcher.self, MethodMatcher.self,
            HeaderMatcher.self,
            HeaderRegexpMatcher.self, QueryMatcher.self, ProtocolMatcher.self, NotMatcher.self,
            RemoteIPMatcher.self, ClientIPMatcher.self, VarsMatcher.self, VarsRegexpMatcher.self, FileMatcher.self,
            ExpressionMatcher.self,
            // Handlers
            SubrouteHandler.self, StaticResponseHandler.self, ACMEServerHandler.self, HeadersHandler.self,
            RewriteHandler.self,
            VarsHandler.self, MapHandler.self, ErrorHandler.self, RequestBodyHandler.self, InvokeHandler.self,
            FileServerHandler.self, PrecompressedGzip.self, PrecompressedZstd.self, PrecompressedBrotli.self,
            EncodeHandler.self, GzipEncoding.self, ZstdEncoding.self, MetricsHandler.self,
            AuthenticationHandler.self, HTTPBasicAuth.self, BcryptHash.self, Argon2idHash.self, LogAppendHandler.self,
            TemplatesHandler.self, FileSystemsApp.self,
            // Log encoders and field filters that need HTTP's parsers
            FilterEncoderModule.self, AppendEncoderModule.self, DeleteLogFilter.self, HashLogFilter.self,
            ReplaceLogFilter.self, RenameLogFilter.self, IPMaskLogFilter.self, QueryLogFilter.self,
            CookieLogFilter.self,
            SetCookieLogFilter.self, RegexpLogFilter.self, MultiRegexpLogFilter.self,
            // Reverse proxy
            ReverseProxyHandler.self, HTTPTransport.self, RandomSelection.self, RandomChooseSelection.self,
            LeastConnSelection.self, RoundRobinSelection.self, WeightedRoundRobinSelection.self, FirstSelection.self,
            IPHashSelection.self, ClientIPHashSelection.self, URIHashSelection.self, HeaderHashSelection.self,
            QueryHashSelection.self,
            CookieHashSelection.self,
            CopyResponseHandler.self,
            AUpstreams.self,
            SRVUpstreams.self,
            MultiUpstreams.self,
            CopyResponseHeadersHandler.self, FastCGITransport.self, InterceptHandler.self,
        ]
    }

    public static var extensions: [any BundleExtension] {
        [
            CaddyfileAdapter(), HTTPMatcherCaddyfile.support, ServerCaddyfile.support, HandlerCaddyfile.support,
            ReverseProxyCaddyfile.support, TLSCaddyfile.support, DNSCaddyfile.support, PostgresCaddyfile.support,
            UpstreamsAdminEndpoint(), PKIAdminEndpoint(),
        ]
            + HTTPCaddyfile.support
    }
}
