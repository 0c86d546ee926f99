import HelloModule
import UsherCLI
import UsherStandard

await UsherMain.run(bundles: [StandardModules.self, HelloModules.self])
