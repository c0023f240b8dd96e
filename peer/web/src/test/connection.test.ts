// The socket's life against the real relay: a client paused (as a page is when the browser
// goes offline) keeps writing locally, and on resume reconnects with a fresh one-time ticket
// and brings the relay up to date.
import { test, after } from "node:test"
import assert from "node:assert/strict"
import type { DocHandle, DocumentId } from "@automerge/automerge-repo"
import { WeftClient, createConversation, messages, sendMessage, type AnyDoc, type ConnectionState } from "../index.js"
import { RelayProcess, when } from "./helpers.js"

const relay = new RelayProcess()
const clients: WeftClient[] = []
after(() => {
  for (const c of clients) c.close()
  relay.stop()
})

const connected = (c: WeftClient) => when(f => c.onConnection(f), () => c.connection === "connected")

function handleEvent(handle: DocHandle<AnyDoc>, event: "change" | "remote-heads") {
  return (fire: () => void) => {
    handle.on(event, fire)
    return () => handle.off(event, fire)
  }
}

test("a paused client writes offline and catches up on resume with a new ticket", async () => {
  await relay.start()
  const alice = await WeftClient.withTicket(relay.http, relay.ws, relay.token("alice"), { retryMs: 500 })
  const bob = await WeftClient.withTicket(relay.http, relay.ws, relay.token("bob"), { retryMs: 500 })
  clients.push(alice, bob)
  await connected(alice)
  const states: ConnectionState[] = []
  alice.onConnection(s => states.push(s))

  const handle = createConversation(alice.repo, "Lunch", ["alice", "bob"])
  const doc = handle.documentId as DocumentId
  sendMessage(handle, "alice", "before")
  await when(handleEvent(handle, "remote-heads"), async () => (await alice.status(doc)).saved)
  await alice.share(doc, "bob", "rw")
  const seen = await bob.repo.find<AnyDoc>(doc)
  await when(handleEvent(seen, "change"), () => messages(seen.doc()).length === 1)

  alice.pause()
  assert.equal(alice.connection, "offline")
  sendMessage(handle, "alice", "while offline")
  assert.equal((await alice.status(doc)).saved, false)

  alice.resume()
  await connected(alice)
  await when(handleEvent(seen, "change"), () => messages(seen.doc()).length === 2)
  assert.deepEqual(messages(seen.doc()).map(m => m.body), ["before", "while offline"])
  assert.deepEqual(states, ["offline", "reconnecting", "connected"])
})

test("a token the relay refuses stops the retries", async () => {
  const client = await WeftClient.withTicket(relay.http, relay.ws, "not-a-token", { offline: true, retryMs: 100 })
  clients.push(client)
  client.resume()
  await when(f => client.onConnection(f), () => client.connection === "refused")
})
