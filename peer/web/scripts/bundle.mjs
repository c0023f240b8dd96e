// Builds the demo web app that `weft-relay serve --web` embeds (relay/web/), from demo/ and the
// package's sources, with the esbuild pinned in package-lock.json: the same sources and lock file
// give the same bytes. `node scripts/bundle.mjs --check` fails when the committed files differ.
import { build } from "esbuild"
import { readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"

const here = join(import.meta.dirname, "..")
const out = join(here, "../../relay/web")
const check = process.argv.includes("--check")

/** `@automerge/automerge-repo` (exactly) is taken from its `/slim` entry. */
const slimRepo = {
  name: "slim-repo",
  setup(b) {
    b.onResolve({ filter: /^@automerge\/automerge-repo$/ }, args =>
      b.resolve("@automerge/automerge-repo/slim", { kind: args.kind, resolveDir: args.resolveDir }),
    )
  },
}

const bundle = await build({
  entryPoints: [join(here, "demo/app.ts")],
  bundle: true,
  format: "esm",
  platform: "browser",
  target: "es2022",
  minify: true,
  legalComments: "none",
  write: false,
  // The browser loads Automerge's WebAssembly itself (`initializeWasm`): every import of the
  // repo takes the entry that doesn't try to.
  plugins: [slimRepo],
  logLevel: "warning",
})

const files = {
  "app.js": bundle.outputFiles[0].contents,
  "index.html": readFileSync(join(here, "demo/index.html")),
  "style.css": readFileSync(join(here, "demo/style.css")),
  "sw.js": readFileSync(join(here, "demo/sw.js")),
  "automerge.wasm": readFileSync(join(here, "node_modules/@automerge/automerge/dist/automerge.wasm")),
}

let stale = []
for (const [name, bytes] of Object.entries(files)) {
  const path = join(out, name)
  if (check) {
    let committed
    try {
      committed = readFileSync(path)
    } catch {
      committed = Buffer.alloc(0)
    }
    if (!Buffer.from(bytes).equals(committed)) stale.push(name)
  } else {
    writeFileSync(path, bytes)
  }
}
if (stale.length > 0) {
  console.error(`relay/web is not what demo/ builds: ${stale.join(", ")} differ; run \`npm run bundle\` in peer/web`)
  process.exit(1)
}
console.error(check ? "relay/web matches demo/" : `wrote ${Object.keys(files).length} files to relay/web`)
