import Testing

@testable import UsherCore

@Suite struct PathUtilTests {
    @Test(
        "clean is Go's path.Clean, with or without the shortcut for paths already clean",
        arguments: [
            ("/", "/"), ("/a/b", "/a/b"), ("/a/b/", "/a/b"), ("/a//b", "/a/b"), ("/a/./b", "/a/b"), ("/a/../b", "/b"),
            ("/..", "/"), ("/.", "/"), ("/a/.", "/a"), ("/a/..", "/"), ("/...", "/..."), ("/a/.b/..c", "/a/.b/..c"),
            ("//", "/"), ("/a/b/../../..", "/"), ("a/b", "a/b"), ("", "."), ("./a", "a"), ("/.hidden", "/.hidden"),
            ("/a.", "/a."), ("/..a/b..", "/..a/b.."),
        ])
    func clean(_ input: String, _ expected: String) {
        #expect(PathUtil.clean(input) == expected)
        if input.hasPrefix("/") { #expect(PathUtil.isClean(input) == (input == expected)) }
    }
}
