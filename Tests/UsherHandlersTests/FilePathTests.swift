import Testing

@testable import UsherHandlers

@Suite("File paths")
struct FilePathTests {
    /// Go's own `path.Clean` table (src/path/path_test.go), which file_server's path handling must match.
    static let goCleanCases: [(String, String)] = [
        ("", "."), ("abc", "abc"), ("abc/def", "abc/def"), ("a/b/c", "a/b/c"), (".", "."), ("..", ".."),
        ("../..", "../.."), ("../../abc", "../../abc"), ("/abc", "/abc"), ("/", "/"), ("abc/", "abc"),
        ("abc/def/", "abc/def"), ("a/b/c/", "a/b/c"), ("./", "."), ("../", ".."), ("../../", "../.."),
        ("/abc/", "/abc"),
        ("abc//def//ghi", "abc/def/ghi"), ("//abc", "/abc"), ("///abc", "/abc"), ("//abc//", "/abc"), ("abc//", "abc"),
        ("abc/./def", "abc/def"), ("/./abc/def", "/abc/def"), ("abc/.", "abc"), ("abc/def/ghi/../jkl", "abc/def/jkl"),
        ("abc/def/../ghi/../jkl", "abc/jkl"), ("abc/def/..", "abc"), ("abc/def/../..", "."), ("/abc/def/../..", "/"),
        ("abc/def/../../..", ".."), ("/abc/def/../../..", "/"), ("abc/def/../../../ghi/jkl/../../../mno", "../../mno"),
        ("abc/./../def", "def"), ("abc//./../def", "def"), ("abc/../../././../def", "../../def"),
        ("/...", "/..."), ("/a/.../b", "/a/.../b"), ("/.hidden/x", "/.hidden/x"), ("/a/..b/c", "/a/..b/c"),
    ]

    @Test("cleanPath matches Go's path.Clean", arguments: goCleanCases)
    func clean(_ input: String, _ expected: String) {
        #expect(cleanPath(input) == expected)
    }

    @Test("request paths never climb out of the root when joined, with Caddy's SanitizedPathJoin results")
    func join() {
        #expect(sanitizedPathJoin("/srv", "/../etc/passwd") == "/srv/etc/passwd")
        #expect(sanitizedPathJoin("/srv", "/a/../../b") == "/srv/b")
        #expect(sanitizedPathJoin("/srv/", "/") == "/srv")
        #expect(sanitizedPathJoin("/srv", "/dir/") == "/srv/dir/")
        // Caddy's own table (caddyhttp_test.go), the unescaped inputs.
        let caddyCases: [(String, String, String)] = [
            ("", "", "."), ("", "/", "."), ("", "//", "./"), ("", "/foo", "foo"), ("", "/foo/", "foo/"),
            ("", "/foo/bar", "foo/bar"), ("/a", "/foo/bar", "/a/foo/bar"), ("", "/foo/../bar", "bar"),
            ("/a/b", "/foo/../bar", "/a/b/bar"), ("/a/b", "/../bar", "/a/b/bar"), ("/a/b", "/../../", "/a/b/"),
            ("/a/b", "/foo/bar", "/a/b/foo/bar"), ("/a/b", "/foo%2fbar", "/a/b/foo%2fbar"),
        ]
        for (root, path, expected) in caddyCases {
            #expect(sanitizedPathJoin(root, path) == expected, "root \(root) path \(path)")
        }
    }

    @Test("HTTP dates in the three formats RFC 9110 allows")
    func httpDates() {
        #expect(parseHTTPDate("Sun, 06 Nov 1994 08:49:37 GMT") == 784_111_777)
        #expect(parseHTTPDate("Sunday, 06-Nov-94 08:49:37 GMT") == 784_111_777)
        #expect(parseHTTPDate("Sun Nov  6 08:49:37 1994") == 784_111_777)
        #expect(parseHTTPDate("yesterday") == nil)
    }
}
