// The typed chat layer on its own (no relay): reads leave out what doesn't fit the schema, as
// weft's typed reads do, and writes refuse what weft would refuse before making a change.
import { test } from "node:test"
import assert from "node:assert/strict"
import { ImmutableString, Repo } from "@automerge/automerge-repo"
import {
  TypedWriteError, createConversation, createTrip, deleteMessage, editMessage, lastMessages, markRead, messages,
  messagesJson, parseMessageKey, react, reactions, sendMessage, unreact, type AnyDoc,
} from "../index.js"

const repo = new Repo({ network: [] })

test("messages sort by key and entries that are not messages are left out", () => {
  const handle = createConversation(repo, "Lunch")
  const a = sendMessage(handle, "alice", "first", { wallMs: 2_000 })
  // A writer whose clock is behind still sorts after what it saw.
  const b = sendMessage(handle, "bob", "second", { wallMs: 1_000 })
  assert.ok(b.key > a.key)
  assert.deepEqual(parseMessageKey(b.key)?.id, b.id)
  handle.change(d => {
    const map = d.messages as AnyDoc
    map["not a key"] = { id: new ImmutableString("x") }
    // The id inside differs from the key's.
    map[`${a.created_at}_other`] = { id: new ImmutableString("else"), author: "eve", created_at: a.created_at, body: "" }
    // A plain JavaScript string (collaborative text) where weft expects a string reads the same.
    map[`${b.created_at}_zz`] = { id: "zz", author: "carol", created_at: b.created_at, body: "text fields", deleted: false }
    map[`${b.created_at}_zy`] = { id: new ImmutableString("zy"), author: 7, created_at: b.created_at, body: "" }
  })
  assert.deepEqual(messages(handle.doc()).map(m => [m.author, m.body]), [
    ["alice", "first"],
    ["bob", "second"],
    ["carol", "text fields"],
  ])
  assert.deepEqual(lastMessages(handle.doc(), 2).map(m => m.author), ["bob", "carol"])
  assert.deepEqual(lastMessages(handle.doc(), 10), messages(handle.doc()))
  assert.deepEqual(messagesJson(handle.doc())[0], {
    id: a.id,
    author: "alice",
    body: "first",
    created_at: "1970-01-01T00:00:02.000Z",
    edited_at: null,
    deleted: false,
  })
})

test("edits, deletes, reactions and read markers as weft writes them", () => {
  const handle = createConversation(repo, "Lunch", ["alice", "alice", "bob"])
  assert.deepEqual((handle.doc().participants as ImmutableString[]).map(p => p.val), ["alice", "bob"])
  const m = sendMessage(handle, "alice", "helo")
  editMessage(handle, "alice", m.id, "hello", Date.now())
  const [edited] = messages(handle.doc())
  assert.equal(edited.body, "hello")
  assert.ok(edited.edited_at !== undefined && edited.edited_at > edited.created_at)
  assert.throws(() => editMessage(handle, "bob", m.id, "mine now"), TypedWriteError)

  react(handle, "bob", m.id, "👍")
  react(handle, "alice", m.id, "👍")
  unreact(handle, "bob", m.id, "👍")
  assert.deepEqual(reactions(handle.doc(), m.id), { "👍": ["alice"] })

  assert.equal(markRead(handle, "bob", m.key), true)
  assert.equal(markRead(handle, "bob", m.key), false)
  assert.throws(() => markRead(handle, "bob", "nope"), TypedWriteError)

  deleteMessage(handle, m.id)
  const [gone] = messages(handle.doc())
  assert.deepEqual([gone.deleted, gone.body], [true, ""])
  assert.throws(() => editMessage(handle, "alice", m.id, "back"), /deleted/)
})

test("writes refuse bad input and the wrong kind of document, changing nothing", () => {
  const trip = createTrip(repo, "Lisbon", { start: "2026-05-01" })
  assert.equal(String(trip.doc().start_date), "2026-05-01")
  assert.throws(() => createTrip(repo, "x", { end: "May 8th" }), TypedWriteError)
  const heads = trip.heads()
  assert.throws(() => sendMessage(trip, "alice", "x".repeat(64 * 1024 + 1)), /longer than/)
  assert.throws(() => sendMessage(trip, "", "hi"), /author is empty/)
  assert.throws(() => sendMessage(trip, "alice", "hi", { id: "no spaces" }), /not an id/)
  assert.throws(() => react(trip, "alice", "m1", ""), /reaction is empty/)
  assert.deepEqual(trip.heads(), heads)

  const other = repo.create<AnyDoc>({ kind: new ImmutableString("escrow") })
  assert.throws(() => sendMessage(other, "alice", "hi"), /not a chat document/)
})
