// A hostile automerge-repo client for relay/tests/ws_attacks.rs.
//
// Any member holding a valid token may run any client, for instance these few lines: they speak
// automerge-repo's WebSocket protocol themselves (the `ws` package, automerge-repo's CBOR
// encoder, Automerge's sync messages) and send what a stock client never would.
//
// Usage: node hostile.mjs WS_URL
// It connects and joins at once, printing {"event": "joined"} (or a "close" event), then reads
// one JSON command per line on stdin; each is answered by one line with the same "id":
//   {"id", "cmd": "fetch", "doc"}
//       syncs DOC from the relay, starting with a `request` as a client that lacks it does
//       -> {"id", "heads", "value"} | {"id", "outcome": {"unavailable": true}}
//   {"id", "cmd": "change", "doc", "key", "value"}
//       changes the fetched DOC and offers the change as a stock client does
//       -> {"id", "hash", "outcome"}
//   {"id", "cmd": "withhold", "doc", "key", "value"}
//       changes the fetched DOC but never sends the change, though its sync state records it
//       as sent (a message lost on the way, or a client lying about its heads), then announces
//       its new heads and answers the relay as a stock client does, except that its messages
//       carry no changes even when asked for them, until the socket closes
//       -> {"id", "hash", "outcome"}
//   {"id", "cmd": "send", "doc", "payload", "bytes"?}
//       sends DOC one sync message carrying a crafted payload (below) -> {"id", "outcome"}
//   {"id", "cmd": "wait", "doc", "key"}
//       waits until the relay has synced a fetched DOC holding `key` -> {"id", "value"}
//   {"id", "cmd": "create", "count"}
//       sends `count` sync messages, each carrying the first change of a new document
//       -> {"id", "docs": [{"doc", "outcome"}]}
// An outcome is what the relay did next: {"synced": HEADS} (it answered with a sync message
// naming its heads; for fetch and create, once they equal ours), {"unavailable": true}
// (doc-unavailable), or {"closed": {"error", "code", "reason"}} (the relay's `error` message,
// then the socket's close code and reason). `change` and `send` follow their message with a
// sync message saying nothing (no heads, no changes), which the relay answers with its heads
// if it still serves the document: a relay that quietly ignores the first message still
// answers.
// Payloads (the `changes` of the sync message):
//   "garbage"             37 random bytes
//   "valid-then-garbage"  a valid change of DOC, then 37 random bytes
//   "compressed-bomb"     a compressed change chunk (type 2) whose deflate stream inflates to
//                         1 GiB of zeros
//   "document-bomb"       a document chunk (type 0) whose one deflated column inflates to 1 GiB
//   "big-change"          a valid change of DOC setting `big` to `bytes` random characters
// Events (lines without "id"): {"event": "joined"}, {"event": "error", "message"},
// {"event": "close", "code", "reason"}.
import "@automerge/automerge-repo" // initializes Automerge's wasm, as the full entry point does
import {
  Automerge as A,
  cbor,
  generateAutomergeUrl,
  parseAutomergeUrl,
} from "@automerge/automerge-repo/slim"
import { createHash, randomBytes, randomUUID } from "node:crypto"
import readline from "node:readline"
import zlib from "node:zlib"
import WebSocket from "ws"

const [url] = process.argv.slice(2)
const peerId = `hostile-${randomUUID()}`
const out = obj => process.stdout.write(JSON.stringify(obj) + "\n")
const sameHeads = (a, b) => a.length === b.length && [...a].sort().join() === [...b].sort().join()

// What this client holds of each document: its Automerge copy and sync state.
const docs = new Map()
// Commands waiting for the relay's next word on a document: {doc, until(heads), resolve}.
let waiters = []
let relayPeer
let lastError
let closed
let markJoined
const joined = new Promise(resolve => (markJoined = resolve))

const socket = new WebSocket(url)
socket.binaryType = "nodebuffer"
socket.on("open", () =>
  send({ type: "join", senderId: peerId, peerMetadata: {}, supportedProtocolVersions: ["1"] }),
)
socket.on("message", data => receive(cbor.decode(new Uint8Array(data))))
socket.on("error", e => out({ event: "socket-error", message: String(e) }))
socket.on("close", (code, reason) => {
  closed = { error: lastError, code, reason: reason.toString() }
  out({ event: "close", code, reason: closed.reason })
  for (const w of waiters) w.resolve({ closed })
  waiters = []
  markJoined()
})

function send(msg) {
  socket.send(cbor.encode(msg))
}

function sendSync(doc, data, type = "sync") {
  send({ type, senderId: peerId, targetId: relayPeer, documentId: doc, data })
}

function receive(msg) {
  switch (msg.type) {
    case "peer":
      relayPeer = msg.senderId
      out({ event: "joined" })
      markJoined()
      return
    case "error":
      lastError = msg.message
      out({ event: "error", message: msg.message })
      return
    case "doc-unavailable":
      settle(msg.documentId, { unavailable: true }, () => true)
      return
    case "sync": {
      const state = docs.get(msg.documentId)
      const heads = A.decodeSyncMessage(msg.data).heads
      if (state) {
        // Behave as a stock client: take what the relay sent and answer.
        ;[state.doc, state.sync] = A.receiveSyncMessage(state.doc, state.sync, msg.data)
        let reply
        ;[state.sync, reply] = A.generateSyncMessage(state.doc, state.sync)
        if (reply) sendSync(msg.documentId, state.withholds ? withoutChanges(reply) : reply)
      }
      settle(msg.documentId, { synced: heads }, w => w.until(heads, state))
      return
    }
  }
}

function withoutChanges(data) {
  return A.encodeSyncMessage({ ...A.decodeSyncMessage(data), changes: [] })
}

function settle(doc, outcome, applies) {
  const done = waiters.filter(w => w.doc === doc && applies(w))
  waiters = waiters.filter(w => !done.includes(w))
  for (const w of done) w.resolve(outcome)
}

// The relay's next word on `doc`: a sync message for which `until(heads, state)` holds, a
// doc-unavailable, or the socket's end.
function next(doc, until = () => true) {
  if (closed) return Promise.resolve({ closed })
  return new Promise(resolve => waiters.push({ doc, until, resolve }))
}

// Sends `msg` for `doc`, then a sync message saying nothing: the relay's first word on `doc`.
// (The relay handles a socket's messages for one document in order, so its answer to the
// second comes after whatever it makes of the first.)
function answerTo(doc, msg) {
  const answer = next(doc)
  sendSync(doc, msg)
  sendSync(doc, A.encodeSyncMessage({ heads: [], need: [], have: [], changes: [] }))
  return answer
}

const inSync = (heads, state) => heads.length > 0 && sameHeads(heads, A.getHeads(state.doc))

// An Automerge chunk: magic, the first 4 bytes of the SHA-256 of type, length and data, the
// type, the length (unsigned LEB128), the data.
function chunk(type, data) {
  const body = Buffer.concat([Buffer.from([type]), uleb(data.length), data])
  const checksum = createHash("sha256").update(body).digest().subarray(0, 4)
  return Buffer.concat([Buffer.from([0x85, 0x6f, 0x4a, 0x83]), checksum, body])
}

function uleb(n) {
  const bytes = []
  do {
    let b = n & 0x7f
    n = Math.floor(n / 128)
    if (n > 0) b |= 0x80
    bytes.push(b)
  } while (n > 0)
  return Buffer.from(bytes)
}

// A raw deflate stream inflating to `mib` MiB of zeros, built by repeating one fully flushed
// segment (it ends byte-aligned and refers to nothing before it) and closing with an empty
// final block, so 1 GiB takes milliseconds to build and about 1 MB to send.
function zerosBomb(mib) {
  const segment = zlib.deflateRawSync(Buffer.alloc(1 << 20), {
    level: 9,
    finishFlush: zlib.constants.Z_FULL_FLUSH,
  })
  return Buffer.concat([...Array(mib).fill(segment), Buffer.from([0x03, 0x00])])
}

// A document chunk whose layout holds one deflated change column (the bomb), no actors, no
// heads and no operation columns: what the relay must measure before Automerge sees it.
function documentBomb() {
  const bomb = zerosBomb(1024)
  const columnSpec = (1 << 4) | 0b1000 // column 1, deflated
  const layout = Buffer.concat([uleb(0), uleb(0), uleb(1), uleb(columnSpec), uleb(bomb.length), uleb(0)])
  return chunk(0, Buffer.concat([layout, bomb]))
}

// A change on top of the fetched document, not kept in this client's copy.
function validChange(doc, edit) {
  const state = docs.get(doc)
  if (!state) throw new Error(`fetch ${doc} first`)
  const changed = A.change(A.clone(state.doc), edit)
  return { change: A.getLastLocalChange(changed), heads: A.getHeads(changed) }
}

function payload(cmd) {
  const garbage = () => new Uint8Array(randomBytes(37))
  const base = () => A.getHeads(docs.get(cmd.doc)?.doc ?? A.init())
  switch (cmd.payload) {
    case "garbage":
      return { changes: [garbage()], heads: base() }
    case "valid-then-garbage": {
      const { change, heads } = validChange(cmd.doc, d => {
        d.title = "overwritten"
      })
      return { changes: [change, garbage()], heads }
    }
    case "compressed-bomb":
      return { changes: [chunk(2, zerosBomb(1024))], heads: base() }
    case "document-bomb":
      return { changes: [documentBomb()], heads: base() }
    case "big-change": {
      const { change, heads } = validChange(cmd.doc, d => {
        d.big = randomBytes(cmd.bytes).toString("base64").slice(0, cmd.bytes)
      })
      return { changes: [change], heads }
    }
    default:
      throw new Error(`unknown payload ${cmd.payload}`)
  }
}

function crafted({ heads, changes }) {
  return A.encodeSyncMessage({ heads, need: [], have: [], changes })
}

async function run(cmd) {
  await joined
  if (closed) return { outcome: { closed } }
  switch (cmd.cmd) {
    case "fetch": {
      const state = { doc: A.init(), sync: A.initSyncState() }
      docs.set(cmd.doc, state)
      let msg
      ;[state.sync, msg] = A.generateSyncMessage(state.doc, state.sync)
      const answer = next(cmd.doc, inSync)
      sendSync(cmd.doc, msg, "request")
      const outcome = await answer
      if (!outcome.synced) return { outcome }
      return { heads: A.getHeads(state.doc), value: JSON.parse(JSON.stringify(state.doc)) }
    }
    case "change": {
      const state = docs.get(cmd.doc)
      state.doc = A.change(state.doc, d => {
        d[cmd.key] = cmd.value
      })
      const hash = A.decodeChange(A.getLastLocalChange(state.doc)).hash
      let msg
      ;[state.sync, msg] = A.generateSyncMessage(state.doc, state.sync)
      return { hash, outcome: await answerTo(cmd.doc, msg) }
    }
    case "withhold": {
      const state = docs.get(cmd.doc)
      state.doc = A.change(state.doc, d => {
        d[cmd.key] = cmd.value
      })
      const hash = A.decodeChange(A.getLastLocalChange(state.doc)).hash
      // Generated, so recorded as sent, and dropped; asked for it, the client still sends
      // its messages without changes.
      ;[state.sync] = A.generateSyncMessage(state.doc, state.sync)
      state.withholds = true
      const end = next(cmd.doc, () => false)
      sendSync(cmd.doc, crafted({ heads: A.getHeads(state.doc), changes: [] }))
      return { hash, outcome: await end }
    }
    case "send":
      return { outcome: await answerTo(cmd.doc, crafted(payload(cmd))) }
    case "wait": {
      const state = docs.get(cmd.doc)
      if (state.doc[cmd.key] === undefined) {
        const outcome = await next(cmd.doc, (_, s) => s.doc[cmd.key] !== undefined)
        if (!outcome.synced) return { outcome }
      }
      return { value: JSON.parse(JSON.stringify(state.doc)) }
    }
    case "create": {
      const created = []
      for (let i = 0; i < cmd.count; i++) {
        const doc = parseAutomergeUrl(generateAutomergeUrl()).documentId
        const state = { doc: A.from({ title: `spam ${i}` }), sync: A.initSyncState() }
        docs.set(doc, state)
        const answer = next(doc, inSync)
        sendSync(doc, crafted({ heads: A.getHeads(state.doc), changes: A.getAllChanges(state.doc) }))
        created.push({ doc, answer })
      }
      const answers = []
      for (const { doc, answer } of created) answers.push({ doc, outcome: await answer })
      return { docs: answers }
    }
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
