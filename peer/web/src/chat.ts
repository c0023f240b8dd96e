// Typed chat documents (conversations and trips share a chat), written in exactly the shapes
// weft-schema reads (`schema/src/chat.rs`, `conversation.rs`, `reactions.rs`):
//
//   kind (string), schema_version 2, title (text), participants [user], messages, read, reactions
//   messages  {"{created_at}_{id}": {id, author, body (text), created_at, edited_at?, deleted}}
//   read      {user: "{created_at}_{id}"}
//   reactions {message id: {emoji: {user: true}}}
//
// Where the schema says string, the value is written as a scalar string (`ImmutableString`), not
// as the collaborative text Automerge's JavaScript API makes of a plain string; text fields
// (title, body) are text. `created_at` comes from the hybrid clock (`hlc.ts`), later than every
// message already in the chat, so a reply sorts after what its author saw. Every write is one
// change; the relay's write rules (an author writes as themselves, only the author edits, the
// author, owner or an admin deletes) still decide, and a refused change is undone by sync.
import { ImmutableString, updateText, type DocHandle, type Repo } from "@automerge/automerge-repo"
import { getActorId } from "@automerge/automerge/slim"
import { compareHlc, formatHlc, hlcNow, isId, nodeForActor, parseHlc, randomId, rfc3339, type Hlc } from "./hlc.js"

/** The schema version weft writes. */
export const SCHEMA_VERSION = 2
/** The longest message body, in bytes (weft-schema's MAX_BODY_LEN). */
export const MAX_BODY_LEN = 64 * 1024
/** The longest title, in bytes. */
export const MAX_TITLE_LEN = 1024
/** The longest user id, in bytes. */
export const MAX_NAME_LEN = 256
/** The longest reaction, in bytes. */
export const MAX_REACTION_LEN = 64

/** A document as read from a peer: anything may be anywhere. */
export type AnyDoc = Record<string, unknown>

/** One chat message, as weft's typed reads see it. */
export interface Message {
  id: string
  author: string
  /** Empty when deleted. */
  body: string
  /** Hybrid clock timestamp (canonical string). */
  created_at: string
  edited_at?: string
  deleted: boolean
  reply_to?: string
  /** Its key in `messages`, `{created_at}_{id}`: display order. */
  key: string
}

/** A message as `weft msg list --json` prints it. */
export interface MessageJson {
  id: string
  author: string
  body: string
  created_at: string
  edited_at: string | null
  deleted: boolean
}

/** A write the typed layer refuses before making it. */
export class TypedWriteError extends Error {
  constructor(message: string) {
    super(message)
    this.name = "TypedWriteError"
  }
}

/** A scalar string, or text: what weft reads as a string. */
export function str(v: unknown): string | undefined {
  if (typeof v === "string") return v
  if (v instanceof ImmutableString) return v.val
  return undefined
}

function isMap(v: unknown): v is AnyDoc {
  return typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof ImmutableString)
}

function checkLen(field: string, s: string, max: number, nonEmpty: boolean): void {
  const n = new TextEncoder().encode(s).length
  if (n > max) throw new TypedWriteError(`${field} is longer than ${max} bytes`)
  if (nonEmpty && n === 0) throw new TypedWriteError(`${field} is empty`)
}

/** The message key `{created_at}_{id}`, or `undefined` when `key` is not one. */
export function parseMessageKey(key: string): { created_at: Hlc; id: string } | undefined {
  if (key.length < 49 || key[47] !== "_") return undefined
  const created_at = parseHlc(key.slice(0, 47))
  const id = key.slice(48)
  return created_at !== undefined && isId(id) ? { created_at, id } : undefined
}

/** Reads one entry of `messages`; `undefined` when it doesn't fit the schema (weft skips it too). */
function readMessage(key: string, v: unknown): Message | undefined {
  const parsed = parseMessageKey(key)
  if (parsed === undefined || !isMap(v)) return undefined
  const id = str(v.id)
  const createdAt = str(v.created_at)
  const author = str(v.author)
  const body = str(v.body)
  if (id !== parsed.id || createdAt !== formatHlc(parsed.created_at) || author === undefined || body === undefined) {
    return undefined
  }
  if (v.deleted !== undefined && typeof v.deleted !== "boolean") return undefined
  const editedAt = v.edited_at === undefined ? undefined : str(v.edited_at)
  if (v.edited_at !== undefined && (editedAt === undefined || parseHlc(editedAt) === undefined)) return undefined
  const deleted = v.deleted === true
  const m: Message = { id, author, body: deleted ? "" : body, created_at: createdAt, deleted, key }
  if (editedAt !== undefined) m.edited_at = editedAt
  const replyTo = str(v.reply_to)
  if (replyTo !== undefined) m.reply_to = replyTo
  return m
}

/** The chat's messages in display order; entries that don't fit the schema are left out. */
export function messages(doc: AnyDoc): Message[] {
  const map = doc.messages
  if (!isMap(map)) return []
  const out: Message[] = []
  for (const key of Object.keys(map).sort()) {
    const m = readMessage(key, map[key])
    if (m !== undefined) out.push(m)
  }
  return out
}

/** The last `n` messages in display order (reading only those entries, from the end). */
export function lastMessages(doc: AnyDoc, n: number): Message[] {
  const map = doc.messages
  if (!isMap(map) || n <= 0) return []
  const keys = Object.keys(map).sort()
  const out: Message[] = []
  for (let i = keys.length - 1; i >= 0 && out.length < n; i--) {
    const m = readMessage(keys[i], map[keys[i]])
    if (m !== undefined) out.push(m)
  }
  return out.reverse()
}

/** The messages as `weft msg list --json` prints them (same fields, same order). */
export function messagesJson(doc: AnyDoc): MessageJson[] {
  return messages(doc).map(m => ({
    id: m.id,
    author: m.author,
    body: m.body,
    created_at: rfc3339(parseHlc(m.created_at)!.ms),
    edited_at: m.edited_at === undefined ? null : rfc3339(parseHlc(m.edited_at)!.ms),
    deleted: m.deleted,
  }))
}

/** The document's `kind`, if it has one. */
export function kindOf(doc: AnyDoc): string | undefined {
  return str(doc.kind)
}

/** Its title (text), or "" when there is none. */
export function titleOf(doc: AnyDoc): string {
  return str(doc.title) ?? ""
}

function chatHeader(kind: string, title: string): AnyDoc {
  checkLen("title", title, MAX_TITLE_LEN, false)
  return {
    kind: new ImmutableString(kind),
    schema_version: SCHEMA_VERSION,
    title,
    messages: {},
    read: {},
    reactions: {},
  }
}

/** Creates a conversation (one change). */
export function createConversation(repo: Repo, title: string, participants: string[] = []): DocHandle<AnyDoc> {
  for (const p of participants) checkLen("participant", p, MAX_NAME_LEN, true)
  const unique = [...new Set(participants)].map(p => new ImmutableString(p))
  return repo.create<AnyDoc>({ ...chatHeader("conversation", title), participants: unique })
}

/** Creates a trip (one change); dates are `YYYY-MM-DD`. */
export function createTrip(
  repo: Repo,
  title: string,
  dates: { start?: string; end?: string } = {},
): DocHandle<AnyDoc> {
  const doc: AnyDoc = { ...chatHeader("trip", title), members: {}, itinerary: {}, tasks: {}, broadcasts: {} }
  for (const [field, d] of [["start_date", dates.start], ["end_date", dates.end]] as const) {
    if (d === undefined) continue
    if (!/^\d{4}-\d{2}-\d{2}$/.test(d)) throw new TypedWriteError(`${field} ${JSON.stringify(d)} is not YYYY-MM-DD`)
    doc[field] = new ImmutableString(d)
  }
  return repo.create<AnyDoc>(doc)
}

function chatOf(doc: AnyDoc): AnyDoc {
  const kind = kindOf(doc)
  if (kind !== "conversation" && kind !== "trip") {
    throw new TypedWriteError(`not a chat document (kind ${JSON.stringify(kind ?? null)})`)
  }
  if (!isMap(doc.messages)) throw new TypedWriteError("the document has no messages map")
  return doc.messages
}

/** The newest timestamp among `keys`' message keys. */
function newestKey(map: AnyDoc): Hlc | undefined {
  let newest: Hlc | undefined
  for (const key of Object.keys(map)) {
    const k = parseMessageKey(key)
    if (k !== undefined && (newest === undefined || compareHlc(k.created_at, newest) > 0)) newest = k.created_at
  }
  return newest
}

/** Options of a new message. */
export interface SendOptions {
  replyTo?: string
  /** The writer's wall clock (Unix ms); `Date.now()` by default. */
  wallMs?: number
  /** The message id; 32 random hex digits by default. */
  id?: string
}

/** Sends a message as `author` (the connection's user: the relay refuses any other). */
export function sendMessage(handle: DocHandle<AnyDoc>, author: string, body: string, opts: SendOptions = {}): Message {
  checkLen("author", author, MAX_NAME_LEN, true)
  checkLen("body", body, MAX_BODY_LEN, false)
  const id = opts.id ?? randomId()
  if (!isId(id)) throw new TypedWriteError(`${JSON.stringify(id)} is not an id`)
  if (opts.replyTo !== undefined && !isId(opts.replyTo)) throw new TypedWriteError("reply_to is not an id")
  let sent: Message | undefined
  handle.change(d => {
    const map = chatOf(d)
    const created = formatHlc(hlcNow(opts.wallMs ?? Date.now(), nodeOf(d), newestKey(map)))
    const key = `${created}_${id}`
    if (map[key] !== undefined) throw new TypedWriteError(`a message with id ${id} exists`)
    const m: AnyDoc = {
      id: new ImmutableString(id),
      author: new ImmutableString(author),
      created_at: new ImmutableString(created),
      body,
      deleted: false,
    }
    if (opts.replyTo !== undefined) m.reply_to = new ImmutableString(opts.replyTo)
    map[key] = m
    sent = { id, author, body, created_at: created, deleted: false, key }
    if (opts.replyTo !== undefined) sent.reply_to = opts.replyTo
  })
  return sent!
}

const nodes = new Map<string, string>()

/** The writer's node: derived from the actor this document's changes are written with. */
function nodeOf(doc: AnyDoc): string {
  const actor = getActorId(doc as never)
  let node = nodes.get(actor)
  if (node === undefined) {
    node = nodeForActor(actor)
    nodes.set(actor, node)
  }
  return node
}

function findMessage(map: AnyDoc, id: string): Message {
  for (const key of Object.keys(map)) {
    if (parseMessageKey(key)?.id !== id) continue
    const m = readMessage(key, map[key])
    if (m !== undefined) return m
  }
  throw new TypedWriteError(`no message ${id}`)
}

function setBody(d: AnyDoc, key: string, body: string): void {
  const m = (d.messages as AnyDoc)[key] as AnyDoc
  if (typeof m.body === "string") updateText(d as never, ["messages", key, "body"], body)
  else m.body = body
}

/** Edits a message's body (only its author may: `user` must be the author). */
export function editMessage(handle: DocHandle<AnyDoc>, user: string, id: string, body: string, wallMs = Date.now()): void {
  checkLen("body", body, MAX_BODY_LEN, false)
  handle.change(d => {
    const m = findMessage(chatOf(d), id)
    if (m.author !== user) throw new TypedWriteError(`only ${m.author} edits message ${id}`)
    if (m.deleted) throw new TypedWriteError(`message ${id} is deleted`)
    if (m.body === body) return
    setBody(d, m.key, body)
    const created = parseHlc(m.created_at)!
    const edited = m.edited_at === undefined ? undefined : parseHlc(m.edited_at)
    const seen = edited !== undefined && compareHlc(edited, created) > 0 ? edited : created
    const stamp = formatHlc(hlcNow(wallMs, nodeOf(d), seen))
    ;((d.messages as AnyDoc)[m.key] as AnyDoc).edited_at = new ImmutableString(stamp)
  })
}

/** Deletes a message: a tombstone with its body cleared (its author, the owner or an admin). */
export function deleteMessage(handle: DocHandle<AnyDoc>, id: string): void {
  handle.change(d => {
    const m = findMessage(chatOf(d), id)
    if (m.deleted) return
    const entry = (d.messages as AnyDoc)[m.key] as AnyDoc
    entry.deleted = true
    setBody(d, m.key, "")
    if (entry.attachment !== undefined) delete entry.attachment
  })
}

function ensureMap(parent: AnyDoc, key: string): AnyDoc {
  if (!isMap(parent[key])) parent[key] = {}
  return parent[key] as AnyDoc
}

/** `user` reacts to message `id` with `emoji` (each user writes only their own reactions). */
export function react(handle: DocHandle<AnyDoc>, user: string, id: string, emoji: string): void {
  checkLen("reaction", emoji, MAX_REACTION_LEN, true)
  if (!isId(id)) throw new TypedWriteError(`${JSON.stringify(id)} is not an id`)
  handle.change(d => {
    chatOf(d)
    const perEmoji = ensureMap(ensureMap(ensureMap(d, "reactions"), id), emoji)
    if (perEmoji[user] !== true) perEmoji[user] = true
  })
}

/** Takes back `user`'s reaction. */
export function unreact(handle: DocHandle<AnyDoc>, user: string, id: string, emoji: string): void {
  handle.change(d => {
    const users = ((d.reactions as AnyDoc | undefined)?.[id] as AnyDoc | undefined)?.[emoji]
    if (isMap(users) && users[user] !== undefined) delete users[user]
  })
}

/** Who reacted to message `id` with what: emoji -> users, sorted. */
export function reactions(doc: AnyDoc, id: string): Record<string, string[]> {
  const out: Record<string, string[]> = {}
  const perMsg = isMap(doc.reactions) ? doc.reactions[id] : undefined
  if (!isMap(perMsg)) return out
  for (const emoji of Object.keys(perMsg).sort()) {
    const users = perMsg[emoji]
    if (!isMap(users)) continue
    const who = Object.keys(users).filter(u => users[u] === true).sort()
    if (who.length > 0) out[emoji] = who
  }
  return out
}

/** Records that `user` has read up to the message at `key`; positions only move forward. */
export function markRead(handle: DocHandle<AnyDoc>, user: string, key: string): boolean {
  if (parseMessageKey(key) === undefined) throw new TypedWriteError(`${JSON.stringify(key)} is not a message key`)
  let moved = false
  handle.change(d => {
    const map = chatOf(d)
    if (map[key] === undefined) throw new TypedWriteError(`no message at ${key}`)
    const read = ensureMap(d, "read")
    const cur = str(read[user])
    if (cur !== undefined && cur >= key) return
    read[user] = new ImmutableString(key)
    moved = true
  })
  return moved
}

/** A trip's task. */
export interface Task {
  id: string
  title: string
  assignee?: string
  done: boolean
  created_at: string
}

/** Adds a task to a trip; returns its id. */
export function addTask(handle: DocHandle<AnyDoc>, title: string, assignee?: string, wallMs = Date.now()): string {
  checkLen("title", title, MAX_TITLE_LEN, true)
  if (assignee !== undefined) checkLen("assignee", assignee, MAX_NAME_LEN, true)
  const id = randomId()
  handle.change(d => {
    if (kindOf(d) !== "trip") throw new TypedWriteError("tasks belong to trips")
    const tasks = ensureMap(d, "tasks")
    let newest: Hlc | undefined
    for (const t of Object.values(tasks)) {
      const c = isMap(t) ? parseHlc(str(t.created_at) ?? "") : undefined
      if (c !== undefined && (newest === undefined || compareHlc(c, newest) > 0)) newest = c
    }
    const task: AnyDoc = {
      title: new ImmutableString(title),
      done: false,
      created_at: new ImmutableString(formatHlc(hlcNow(wallMs, nodeOf(d), newest))),
    }
    if (assignee !== undefined) task.assignee = new ImmutableString(assignee)
    tasks[id] = task
  })
  return id
}

/** Marks a task done or not done. */
export function setTaskDone(handle: DocHandle<AnyDoc>, id: string, done: boolean): void {
  handle.change(d => {
    const task = isMap(d.tasks) ? d.tasks[id] : undefined
    if (!isMap(task)) throw new TypedWriteError(`no task ${id}`)
    if (task.done !== done) task.done = done
  })
}

/** A trip's tasks in (created_at, id) order; entries that don't fit are left out. */
export function tasks(doc: AnyDoc): Task[] {
  const out: Task[] = []
  const map = doc.tasks
  if (!isMap(map)) return out
  for (const [id, t] of Object.entries(map)) {
    if (!isId(id) || !isMap(t)) continue
    const title = str(t.title)
    const created = str(t.created_at)
    if (title === undefined || created === undefined || parseHlc(created) === undefined) continue
    const task: Task = { id, title, done: t.done === true, created_at: created }
    const assignee = str(t.assignee)
    if (assignee !== undefined) task.assignee = assignee
    out.push(task)
  }
  return out.sort((a, b) => (a.created_at < b.created_at ? -1 : a.created_at > b.created_at ? 1 : a.id < b.id ? -1 : 1))
}
