// The package against the real weft-relay (built by `cargo build -p weft-relay`; the binary is
// taken from WEFT_RELAY_BIN or the workspace's target/debug).
import { test, after } from "node:test"
import assert from "node:assert/strict"
import { spawn, execFileSync, type ChildProcess } from "node:child_process"
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { createInterface } from "node:readline"
import type { DocumentId } from "@automerge/automerge-repo"
import { WeftClient, WeftError } from "../index.js"

const bin = process.env.WEFT_RELAY_BIN ?? join(import.meta.dirname, "../../../../target/debug/weft-relay")
const dir = mkdtempSync(join(tmpdir(), "weft-web-"))
const clients: WeftClient[] = []
let relay: ChildProcess | undefined

async function start(): Promise<{ ws: string; http: string }> {
  relay = spawn(bin, ["serve", "--dev", "--listen", "127.0.0.1:0", "--data-dir", dir,
    "--ws", "127.0.0.1:0", "--http", "127.0.0.1:0"], { stdio: ["ignore", "pipe", "ignore"] })
  const lines = createInterface({ input: relay.stdout! })
  const ready: string = await new Promise(resolve => lines.once("line", resolve))
  const addr = (name: string) => ready.match(new RegExp(` ${name}=(\\S+)`))![1]
  return { ws: `ws://${addr("ws")}/`, http: `http://${addr("http")}/` }
}

function token(user: string): string {
  return execFileSync(bin, ["token", "--secret-file", join(dir, "jwt.secret"), "--sub", user, "--create"])
    .toString()
    .trim()
}

/** Resolves once `check` holds, checking now and after every event `subscribe` reports. */
function when(subscribe: (fire: () => void) => () => void, check: () => boolean | Promise<boolean>): Promise<void> {
  return new Promise((resolve, reject) => {
    let done = false
    const unsubscribe = subscribe(() => void test())
    const test = async () => {
      try {
        if (!done && (await check())) {
          done = true
          unsubscribe()
          resolve()
        }
      } catch (e) {
        reject(e)
      }
    }
    void test()
  })
}

after(() => {
  for (const c of clients) c.close()
  relay?.kill()
})

test("discovery, sharing, presence and saved status against the relay", async () => {
  const { ws, http } = await start()
  const alice = await WeftClient.withTicket(http, ws, token("alice"))
  const bob = await WeftClient.withTicket(http, ws, token("bob"))
  clients.push(alice, bob)
  assert.deepEqual(await bob.docs(), [])

  // Alice creates a document; the relay reports it saved.
  const handle = alice.repo.create({ title: "trip" })
  const doc = handle.documentId as DocumentId
  const remoteHeads = (fire: () => void) => {
    handle.on("remote-heads", fire)
    return () => handle.off("remote-heads", fire)
  }
  await when(remoteHeads, async () => (await alice.status(doc)).saved)
  await when(fire => alice.onDocs(fire), async () => (await alice.docs()).some(d => d.documentId === doc))

  // Bob may not share it; Alice shares it with him and his list follows live.
  await assert.rejects(bob.share(doc, "carol", "rw"), (e: unknown) => e instanceof WeftError && e.code === 2)
  await alice.share(doc, "bob", "rw")
  await when(
    fire => bob.onDocs(fire),
    async () => (await bob.docs()).some(d => d.documentId === doc && d.role === "rw"),
  )

  // Both on the document: Bob sees Alice typing.
  await bob.repo.find(doc)
  await when(fire => alice.onPresence(fire), () => alice.presence(doc).some(p => p.user === "bob"))
  alice.setStatus(doc, "typing")
  await when(
    fire => bob.onPresence(fire),
    () => bob.presence(doc).some(p => p.user === "alice" && p.status === "typing"),
  )
})
