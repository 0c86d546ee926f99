import UsherCore

#if canImport(Glibc)
import Glibc
#endif

/// The `Date` header value, formatted at most once a second. One per connection, used on its event loop.
final class DateHeaderCache {
    private var second = -1
    private var text = ""

    func value() -> String {
        let now = time(nil)
        if Int(now) != second {
            second = Int(now)
            text = GoTimeLayout.httpDate(WallTime(seconds: Int(now), nanoseconds: 0))
        }
        return text
    }
}
