/// The version of this build of Usher.
public enum UsherVersion {
    public static let current = "0.1.0"
}

/// Modules that live in the core (log encoders and writers, file system storage); every binary registers them.
public enum CoreModules: ModuleBundle {
    public static let name = "usher/core"
    public static let version = UsherVersion.current
    public static var modules: [any Module.Type] {
        [
            JSONLogEncoderModule.self, ConsoleLogEncoderModule.self, JournaldLogEncoderModule.self,
            StdoutWriterModule.self, StderrWriterModule.self, DiscardWriterModule.self, FileWriterModule.self,
            NetWriterModule.self, EventsApp.self,
            FileSystemStorageModule.self,
        ]
    }
}
