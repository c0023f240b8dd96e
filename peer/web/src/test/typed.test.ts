// Typed documents written by the package read back exactly on a `weft` device, and the other
// way round, through the real relay: `weft msg list --json` prints what `messagesJson` reads.
import { test, after } from "node:test"
import assert from "node:assert/strict"
import type { DocHandle, DocumentId } from "@automerge/automerge-repo"
import {
  WeftClient, addTask, createConversation, createTrip, deleteMessage, editMessage, fetchKinds, formatHlc,
  hlcNow, markRead, messages, messagesJson, parseHlc, react, reactions, sendMessage, tasks, userOfToken,
  type AnyDoc,
} from "../index.js"
import { writeFileSync } from "node:fs"
import { join } from "node:path"
import { RelayProcess, WeftCli, when } from "./helpers.js"

const relay = new RelayProcess()
const clients: WeftClient[] = []
after(() => {
  for (const c of clients) c.close()
  relay.stop()
})

function changes(handle: DocHandle<AnyDoc>) {
  return (fire: () => void) => {
    handle.on("change", fire)
    return () => handle.off("change", fire)
  }
}

/** Resolves once the relay has every change of `handle` (its heads equal ours). */
function saved(client: WeftClient, handle: DocHandle<AnyDoc>): Promise<void> {
  const doc = handle.documentId as DocumentId
  return when(
    fire => {
      handle.on("remote-heads", fire)
      return () => handle.off("remote-heads", fire)
    },
    async () => (await client.status(doc)).saved,
  )
}

test("the hybrid clock writes weft's canonical timestamps", () => {
  const a = hlcNow(1_700_000_000_123, "00000000000000ab")
  assert.equal(formatHlc(a), "2023-11-14T22:13:20.123Z-00000-00000000000000ab")
  // A writer whose clock is behind still sorts after what it saw.
  const b = hlcNow(1_700_000_000_000, "00000000000000cd", a)
  assert.equal(formatHlc(b), "2023-11-14T22:13:20.123Z-00001-00000000000000cd")
  assert.deepEqual(parseHlc(formatHlc(b)), b)
  assert.equal(parseHlc("2023-02-30T00:00:00.000Z-00000-00000000000000ab"), undefined)
  assert.equal(userOfToken("x.eyJzdWIiOiJhbGljZSJ9.y"), "alice")
})

test("messages written in the browser read back exactly on a weft device, and back", async () => {
  await relay.start()
  const token = relay.token("alice")
  const web = await WeftClient.withTicket(relay.http, relay.ws, token)
  clients.push(web)
  await web.docs()
  assert.equal(web.user, "alice")

  // The web app writes a conversation: messages, a reply, an edit, a reaction, a read marker.
  const handle = createConversation(web.repo, "Lunch", ["alice", "bob"])
  const doc = handle.documentId as string
  const hi = sendMessage(handle, "alice", "Noon? 🍜")
  const second = sendMessage(handle, "alice", "at the usual place", { replyTo: hi.id })
  editMessage(handle, "alice", second.id, "at the new place")
  react(handle, "alice", hi.id, "👍")
  assert.ok(markRead(handle, "alice", second.key))
  assert.throws(() => editMessage(handle, "bob", hi.id, "not mine"), /only alice edits/)
  await saved(web, handle)

  // A weft device of Alice's reads the same messages, byte for byte, nothing skipped.
  const cli = new WeftCli("alice")
  cli.sync(relay, token, [doc])
  assert.equal(cli.messages(doc), JSON.stringify(messagesJson(handle.doc())))
  assert.match(cli.run(["doc", "show", doc]), /title: Lunch\nparticipants: alice, bob\nmessages: 2/)

  // The device answers, edits the web's message and deletes its own; the web app sees it all.
  const fromCli = cli.run(["msg", "send", doc, "from the terminal"]).trim()
  cli.run(["msg", "edit", doc, hi.id, "Noon!"])
  const gone = cli.run(["msg", "send", doc, "oops"]).trim()
  cli.run(["msg", "delete", doc, gone])
  cli.sync(relay, token, [doc])
  const expected = cli.messages(doc)
  await when(changes(handle), () => JSON.stringify(messagesJson(handle.doc())) === expected)
  const list = messages(handle.doc())
  assert.deepEqual(list.map(m => m.body), ["Noon!", "at the new place", "from the terminal", ""])
  assert.equal(list[2].id, fromCli)
  assert.equal(list[1].reply_to, hi.id)
  assert.deepEqual(reactions(handle.doc(), hi.id), { "👍": ["alice"] })

  // The web app replies after what it saw and deletes the device's message.
  const reply = sendMessage(handle, "alice", "see you")
  assert.ok(reply.created_at > list[3].created_at)
  deleteMessage(handle, fromCli)
  await saved(web, handle)
  cli.sync(relay, token, [doc])
  assert.equal(cli.messages(doc), JSON.stringify(messagesJson(handle.doc())))
})

test("a trip with a task written in the browser reads typed on a weft device", async () => {
  const token = relay.token("alice")
  const web = await WeftClient.withTicket(relay.http, relay.ws, token)
  clients.push(web)
  const handle = createTrip(web.repo, "Lisbon", { start: "2026-05-01", end: "2026-05-08" })
  addTask(handle, "Book the hotel", "alice")
  sendMessage(handle, "alice", "Who books?")
  assert.deepEqual(tasks(handle.doc()).map(t => [t.title, t.assignee, t.done]), [["Book the hotel", "alice", false]])
  await saved(web, handle)
  const cli = new WeftCli("alice")
  cli.sync(relay, token, [handle.documentId])
  assert.match(cli.run(["doc", "show", handle.documentId], { quiet: true }), /^trip .*\ntitle: Lisbon\nmembers: \ntasks: 1\n/)
  assert.equal(cli.messages(handle.documentId), JSON.stringify(messagesJson(handle.doc())))
})

test("the relay's kinds are available to the package", async () => {
  const kinds = await fetchKinds(relay.http, relay.token("alice"))
  const message = kinds.kinds.conversation.collections.messages
  assert.equal(message.key, "message_key")
  assert.ok("record" in message.entry && message.entry.record.fields.body.type === "text")
  await assert.rejects(fetchKinds(relay.http, "not-a-token"), /HTTP 401/)
})

test("kinds declared to the relay are available to the package", async () => {
  const declared = new RelayProcess()
  const file = join(declared.dir, "kinds.toml")
  writeFileSync(file, [
    "[escrow.fields]",
    'buyer = { type = "user", fixed = true }',
    'status = { type = "enum", values = ["pending", "funded"], initial = "pending" }',
    "[[escrow.transitions]]",
    'field = "status"',
    'from = ["pending"]',
    'to = "funded"',
    'by = ["buyer"]',
    "",
  ].join("\n"))
  await declared.start(["--kinds", file])
  try {
    const { kinds } = await fetchKinds(declared.http, declared.token("alice"))
    assert.equal(kinds.escrow.declared, true)
    assert.equal(kinds.conversation.declared, false)
    assert.deepEqual(kinds.escrow.fields.buyer.type, "user")
    assert.deepEqual(kinds.escrow.fields.status.values, ["pending", "funded"])
    assert.deepEqual(kinds.escrow.fields.status.transitions, [{ from: ["pending"], to: "funded", by: ["buyer"] }])
  } finally {
    declared.stop()
  }
})
