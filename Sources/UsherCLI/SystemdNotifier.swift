import CUsherSystem
import NIOCore
import UsherCore

#if canImport(Glibc)
import Glibc
#endif

/// systemd's notify protocol for `Type=notify` units (libsystemd's `sd_notify`, through CUsherSystem): `READY=1` once the first config
/// serves, `RELOADING=1` with `MONOTONIC_USEC` and then `READY=1` around every later load (admin API, SIGUSR1,
/// `--watch`), `STOPPING=1`, a `STATUS=` line with each, and `WATCHDOG=1` at half the unit's `WatchdogSec` while it
/// runs. Outside systemd (no `NOTIFY_SOCKET`) `sd_notify` does nothing.
enum SystemdNotifier {
    static func install(on runtime: ServerRuntime, loop: any EventLoop) async {
        await runtime.onLifecycle { event in
            switch event {
            case .loading(initial: true):
                send("STATUS=loading configuration")
            case .loading(initial: false):
                send("RELOADING=1\nMONOTONIC_USEC=\(monotonicMicroseconds())\nSTATUS=reloading configuration")
            case .loaded(let generation):
                send("READY=1\nSTATUS=serving (configuration generation \(generation))\nMAINPID=\(getpid())")
            case .loadFailed(let message):
                // A failed reload leaves the old config serving: the service is ready again. (A failed first load
                // ends the process, which systemd sees.)
                send("READY=1\nSTATUS=reload failed, previous configuration still serving: \(message.prefix(200))")
            case .stopping:
                send("STOPPING=1\nSTATUS=stopping")
            }
        }
        var usec: CUnsignedLongLong = 0
        if c_usher_sd_watchdog(&usec) > 0, usec > 0 {
            let interval = TimeAmount.microseconds(Int64(usec / 2))
            loop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in send("WATCHDOG=1") }
        }
    }

    static func send(_ state: String) {
        _ = c_usher_sd_notify(state)
    }

    private static func monotonicMicroseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000 + UInt64(ts.tv_nsec) / 1000
    }
}
