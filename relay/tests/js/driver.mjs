// A scripted automerge-repo client for relay/tests/ws_interop.rs.
//
// Usage: node driver.mjs WS_URL [RETRY_MS] [gossip]
// (`gossip` turns on automerge-repo's remote-heads gossiping, for "subscribe-remotes".)
// Reads one JSON command per line on stdin and prints one JSON line per answer or event on
// stdout. Nothing here is weft-specific: it is the unmodified npm client, as a web app uses it.
//
// Commands (each answered by one line with the same "id"):
//   {"id", "cmd": "create", "value": {...}}         -> {"id", "doc": DOC_ID}
//   {"id", "cmd": "find", "doc": DOC_ID}            -> {"id", "value": {...}} | {"id", "unavailable": true}
//   {"id", "cmd": "set", "doc", "key", "value"}     -> {"id", "ok": true}
//   {"id", "cmd": "set-in", "doc", "path": [...], "value"} -> {"id", "ok": true} (sets at the path;
//                                                      plain JS strings, as an app writes them)
//   {"id", "cmd": "wait", "doc", "key"}             -> {"id", "value": {...}} once the key is there
//   {"id", "cmd": "broadcast", "doc", "message"}    -> {"id", "ok": true}
//   {"id", "cmd": "subscribe-remotes", "storageIds": [...]} -> {"id", "ok": true}
//   {"id", "cmd": "saved", "doc", "storageId"}      -> {"id", "heads": [...]} once the sync info
//                                                      the handle has for storageId is its heads
//   {"id", "cmd": "exit"}
// Events: {"event": "ephemeral", "doc", "message"} for every ephemeral message received.
import { Repo } from "@automerge/automerge-repo"
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket"
import readline from "node:readline"

const [url, retry, gossip] = process.argv.slice(2)
const adapter = new WebSocketClientAdapter(url, Number(retry ?? 5000))
const repo = new Repo({
  network: [adapter],
  sharePolicy: async () => true,
  enableRemoteHeadsGossiping: gossip === "gossip",
})
const handles = new Map()

const out = obj => process.stdout.write(JSON.stringify(obj) + "\n")
const plain = doc => JSON.parse(JSON.stringify(doc))

function track(handle) {
  if (handles.has(handle.documentId)) return handle
  handles.set(handle.documentId, handle)
  handle.on("ephemeral-message", ({ message }) =>
    out({ event: "ephemeral", doc: handle.documentId, message }),
  )
  return handle
}

async function run(cmd) {
  switch (cmd.cmd) {
    case "create": {
      const handle = track(repo.create(cmd.value))
      return { doc: handle.documentId }
    }
    case "find": {
      try {
        const handle = track(await repo.find(`automerge:${cmd.doc}`))
        return { value: plain(handle.doc()) }
      } catch (e) {
        if (/unavailable/.test(String(e))) return { unavailable: true }
        throw e
      }
    }
    case "set": {
      handles.get(cmd.doc).change(d => {
        d[cmd.key] = cmd.value
      })
      return { ok: true }
    }
    case "set-in": {
      handles.get(cmd.doc).change(d => {
        let at = d
        for (const step of cmd.path.slice(0, -1)) at = at[step]
        at[cmd.path[cmd.path.length - 1]] = cmd.value
      })
      return { ok: true }
    }
    case "wait": {
      const handle = handles.get(cmd.doc)
      if (handle.doc()[cmd.key] === undefined) {
        await new Promise(resolve => {
          const check = () => {
            if (handle.doc()[cmd.key] !== undefined) {
              handle.off("change", check)
              resolve()
            }
          }
          handle.on("change", check)
        })
      }
      return { value: plain(handle.doc()) }
    }
    case "broadcast": {
      handles.get(cmd.doc).broadcast(cmd.message)
      return { ok: true }
    }
    case "subscribe-remotes": {
      repo.subscribeToRemotes(cmd.storageIds)
      return { ok: true }
    }
    case "saved": {
      const handle = handles.get(cmd.doc)
      const same = () => {
        const info = handle.getSyncInfo(cmd.storageId)
        return info !== undefined && JSON.stringify(info.lastHeads) === JSON.stringify(handle.heads())
      }
      if (!same()) {
        await new Promise(resolve => {
          const check = () => {
            if (same()) {
              handle.off("remote-heads", check)
              handle.off("change", check)
              resolve()
            }
          }
          handle.on("remote-heads", check)
          handle.on("change", check)
        })
      }
      return { heads: handle.heads() }
    }
    case "exit":
      adapter.disconnect()
      process.exit(0)
    default:
      throw new Error(`unknown command ${cmd.cmd}`)
  }
}

readline.createInterface({ input: process.stdin }).on("line", line => {
  const cmd = JSON.parse(line)
  run(cmd).then(
    answer => out({ id: cmd.id, ...answer }),
    err => out({ id: cmd.id, error: String(err) }),
  )
})
// The test closing stdin (or dying) ends the client.
process.stdin.on("end", () => process.exit(0))
