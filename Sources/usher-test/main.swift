// The test build of usher: the standard modules plus test-only ones (see UsherTestModules).
import UsherCLI
import UsherStandard
import UsherTestModules

await UsherMain.run(bundles: [StandardModules.self, TestModules.self])
