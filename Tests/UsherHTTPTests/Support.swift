import NIOPosix
import UsherCore
import UsherStandard

enum MultiThreadedEventLoopGroupHolder {
    static let group = MultiThreadedEventLoopGroup.singleton
}

typealias TestStandard = StandardModules
