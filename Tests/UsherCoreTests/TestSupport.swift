import NIOPosix

enum SingletonTestLoop {
    static let group = MultiThreadedEventLoopGroup.singleton
}
