import Foundation

/// Debian's php-fpm on a loopback port of its own, serving scripts from any root (the proxy names the file).
final class PHPFPM: TestDaemon, @unchecked Sendable {
    static let binary = "/usr/sbin/php-fpm8.2"
    static var available: Bool { FileManager.default.isExecutableFile(atPath: binary) }
    let port: Int

    init(children: Int = 4) throws {
        port = freePort()
        try super.init(prefix: "usher-php-fpm")
        let conf = dir.appendingPathComponent("fpm.conf")
        try """
        [global]
        error_log = \(dir.path)/fpm-error.log
        daemonize = no
        [www]
        listen = 127.0.0.1:\(port)
        pm = static
        pm.max_children = \(children)
        catch_workers_output = yes
        decorate_workers_output = no
        php_admin_value[upload_max_filesize] = 200M
        php_admin_value[post_max_size] = 200M
        php_admin_value[memory_limit] = 64M
        php_admin_value[output_buffering] = 0
        """.write(to: conf, atomically: true, encoding: .utf8)
        // -R: the tests may run as root, which php-fpm refuses without it.
        try start(Self.binary, ["-y", conf.path, "-R", "-n", "-d", "expose_php=1"])
        let deadline = Date().addingTimeInterval(10)
        while !portOpen(port) {
            guard Date() < deadline, process.isRunning else {
                throw TestFailure("php-fpm did not start: \(log)")
            }
            Thread.sleep(forTimeInterval: 0.05)
        }
    }
}
