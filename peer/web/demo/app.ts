// The demo chat that `weft-relay serve --ws ADDR --web` serves on its HTTP address: plain DOM,
// no framework. Signed in by `#token=JWT` in the URL fragment (never sent to the server), traded
// for one-time tickets at `/ws-ticket`. Documents live in IndexedDB, so the page works offline
// and a reload offline still shows them; the service worker (`sw.js`) keeps the page's files.
import { IndexedDBStorageAdapter } from "@automerge/automerge-repo-storage-indexeddb"
import { initializeWasm, type DocHandle, type DocumentId } from "@automerge/automerge-repo/slim"
import {
  WeftClient, createConversation, kindOf, lastMessages, sendMessage, titleOf, userOfToken,
  type AnyDoc, type DocEntry, type Message,
} from "../src/index.js"

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T
const TYPING_IDLE_MS = 3000
/** The most messages a conversation shows (its tail). */
const SHOWN_MESSAGES = 500

interface State {
  client: WeftClient
  user: string
  open?: DocHandle<AnyDoc>
  /** Messages already shown per document (id -> body, deleted): what changes after makes a toast. */
  seen: Map<string, Map<string, { body: string; deleted: boolean }>>
  docs: DocEntry[]
  /** Documents created in this tab. */
  created: Set<string>
  /** Whether the relay's first listing came (later additions make a toast). */
  listed: boolean
  typingTimer?: ReturnType<typeof setTimeout>
  /** The open document's listeners. */
  onChange?: () => void
  onHeads?: () => void
}

function toast(text: string): void {
  const el = document.createElement("div")
  el.className = "toast"
  el.textContent = text
  $("toasts").append(el)
  setTimeout(() => el.remove(), 5000)
}

function setBadge(state: string): void {
  const badge = $("badge")
  badge.dataset.state = state
  badge.textContent = state
}

/** The last known list of documents, for a page that starts offline. */
function cachedDocs(user: string): DocEntry[] {
  try {
    return JSON.parse(localStorage.getItem(`weft-demo-docs:${user}`) ?? "[]") as DocEntry[]
  } catch {
    return []
  }
}

async function wsUrl(): Promise<string> {
  let port = localStorage.getItem("weft-demo-ws-port")
  try {
    const config = (await (await fetch("/config.json")).json()) as { ws_port: number }
    port = String(config.ws_port)
    localStorage.setItem("weft-demo-ws-port", port)
  } catch {
    // Offline: the port from last time.
  }
  return `ws://${location.hostname}:${port ?? "8080"}/`
}

async function connect(token: string, user: string): Promise<WeftClient> {
  const options = { storage: new IndexedDBStorageAdapter(`weft-demo:${user}`), retryMs: 1000 }
  const ws = await wsUrl()
  if (navigator.onLine) {
    try {
      return await WeftClient.withTicket(location.origin, ws, token, options)
    } catch {
      // The relay does not answer: start offline and keep trying.
    }
  }
  const client = await WeftClient.withTicket(location.origin, ws, token, { ...options, offline: true })
  if (navigator.onLine) client.resume()
  return client
}

function renderConversations(state: State): void {
  const list = $("conversations")
  list.replaceChildren()
  for (const entry of state.docs) {
    const li = document.createElement("li")
    li.dataset.doc = entry.documentId
    li.textContent = localStorage.getItem(`weft-demo-title:${entry.documentId}`) ?? entry.documentId.slice(0, 8)
    if (state.open?.documentId === entry.documentId) li.setAttribute("aria-current", "true")
    li.onclick = () => void openConversation(state, entry.documentId)
    list.append(li)
    // The title comes with the document (from IndexedDB, or synced).
    void state.client.repo.find<AnyDoc>(entry.documentId).then(
      handle => {
        const doc = handle.doc()
        const kind = kindOf(doc)
        if (kind !== "conversation" && kind !== "trip") return li.remove()
        const title = titleOf(doc) || "(untitled)"
        localStorage.setItem(`weft-demo-title:${entry.documentId}`, title)
        li.textContent = title
        if (kind === "trip") li.insertAdjacentHTML("beforeend", '<span class="kind">trip</span>')
      },
      () => undefined,
    )
  }
}

function renderMessages(state: State, handle: DocHandle<AnyDoc>): void {
  const list = lastMessages(handle.doc(), SHOWN_MESSAGES)
  const seen = state.seen.get(handle.documentId)
  const ul = $("messages")
  ul.replaceChildren(...list.map(m => messageItem(state, m)))
  ul.scrollTop = ul.scrollHeight
  if (seen !== undefined) {
    for (const m of list) {
      const before = seen.get(m.id)
      if (before === undefined) {
        if (m.author !== state.user) toast(`${m.author}: ${m.body}`)
      } else if (m.deleted && !before.deleted) {
        toast(`A message of ${m.author}'s was deleted`)
      } else if (m.body !== before.body && m.author !== state.user) {
        toast(`${m.author} edited: ${m.body}`)
      }
    }
  }
  state.seen.set(handle.documentId, new Map(list.map(m => [m.id, { body: m.body, deleted: m.deleted }])))
}

function messageItem(state: State, m: Message): HTMLLIElement {
  const li = document.createElement("li")
  li.dataset.id = m.id
  li.classList.toggle("mine", m.author === state.user)
  li.classList.toggle("deleted", m.deleted)
  const author = document.createElement("span")
  author.className = "author"
  author.textContent = m.author
  const body = document.createElement("span")
  body.className = "body"
  body.textContent = m.deleted ? "(deleted)" : m.body
  const time = document.createElement("span")
  time.className = "time"
  time.textContent = new Date(m.created_at.slice(0, 24)).toLocaleTimeString() + (m.edited_at ? " (edited)" : "")
  li.append(author, body, time)
  return li
}

function renderPresence(state: State): void {
  const handle = state.open
  if (handle === undefined) return
  const here = state.client.presence(handle.documentId as DocumentId)
  const online = [...new Set([state.user, ...here.map(p => p.user)])].sort()
  $("online").textContent = `online: ${online.join(", ")}`
  const typing = [...new Set(here.filter(p => p.status === "typing").map(p => p.user))].sort()
  $("typing").textContent = typing.length === 0 ? "" : `${typing.join(", ")} ${typing.length === 1 ? "is" : "are"} typing…`
}

async function renderSaved(state: State): Promise<void> {
  const handle = state.open
  if (handle === undefined) return
  const { saved, at } = await state.client.status(handle.documentId as DocumentId)
  const ago = at === undefined ? undefined : Math.max(0, Math.round((Date.now() - at) / 1000))
  $("saved").textContent = saved && ago !== undefined ? `saved ${ago} s ago` : "not saved on the relay yet"
}

async function openConversation(state: State, id: DocumentId): Promise<void> {
  let handle: DocHandle<AnyDoc>
  try {
    handle = await state.client.repo.find<AnyDoc>(id)
  } catch {
    return toast("That conversation is not available offline")
  }
  const previous = state.open
  if (previous !== undefined) {
    // Only this page's listener: the repo's own (which syncs the document) stay.
    if (state.onChange !== undefined) previous.off("change", state.onChange)
    if (state.onHeads !== undefined) previous.off("remote-heads", state.onHeads)
    state.client.setStatus(previous.documentId as DocumentId, "")
  }
  state.open = handle
  localStorage.setItem(`weft-demo-open:${state.user}`, id)
  $("title").textContent = titleOf(handle.doc()) || "(untitled)"
  for (const el of $("composer").querySelectorAll<HTMLInputElement | HTMLButtonElement>("input, button")) {
    el.disabled = false
  }
  state.onChange = () => {
    renderMessages(state, handle)
    void renderSaved(state)
  }
  handle.on("change", state.onChange)
  // The relay's heads: "saved" as soon as it has everything.
  state.onHeads = () => void renderSaved(state)
  handle.on("remote-heads", state.onHeads)
  renderMessages(state, handle)
  renderPresence(state)
  renderConversations(state)
  void renderSaved(state)
}

function wireForms(state: State): void {
  const composer = $<HTMLFormElement>("composer")
  const input = composer.querySelector("input")!
  input.addEventListener("input", () => {
    const handle = state.open
    if (handle === undefined) return
    state.client.setStatus(handle.documentId as DocumentId, "typing")
    clearTimeout(state.typingTimer)
    state.typingTimer = setTimeout(() => state.client.setStatus(handle.documentId as DocumentId, ""), TYPING_IDLE_MS)
  })
  composer.addEventListener("submit", event => {
    event.preventDefault()
    const handle = state.open
    const text = input.value.trim()
    if (handle === undefined || text === "") return
    sendMessage(handle, state.user, text)
    input.value = ""
    clearTimeout(state.typingTimer)
    state.client.setStatus(handle.documentId as DocumentId, "")
  })
  const create = $<HTMLFormElement>("new-conversation")
  create.addEventListener("submit", event => {
    event.preventDefault()
    const field = create.querySelector("input")!
    const title = field.value.trim()
    if (title === "") return
    const handle = createConversation(state.client.repo, title, [state.user])
    field.value = ""
    localStorage.setItem(`weft-demo-title:${handle.documentId}`, title)
    state.created.add(handle.documentId)
    if (!state.docs.some(d => d.documentId === handle.documentId)) {
      state.docs = [...state.docs, { documentId: handle.documentId as DocumentId, role: "rw" }]
    }
    void openConversation(state, handle.documentId as DocumentId)
  })
}

async function toastNew(state: State, id: DocumentId): Promise<void> {
  const handle = await state.client.repo.find<AnyDoc>(id)
  const kind = kindOf(handle.doc())
  if (kind === "conversation" || kind === "trip") toast(`New in your list: ${titleOf(handle.doc()) || "(untitled)"}`)
}

function watchDocs(state: State): void {
  state.client.onDocs(docs => {
    const known = new Set(state.docs.map(d => d.documentId))
    const listed = new Set(docs.map(d => d.documentId))
    // Conversations created in this tab stay listed until the relay lists them too.
    const pending = state.docs.filter(d => state.created.has(d.documentId) && !listed.has(d.documentId))
    if (state.listed) {
      for (const d of docs) if (!known.has(d.documentId)) void toastNew(state, d.documentId)
    }
    state.listed = true
    state.docs = [...docs, ...pending]
    localStorage.setItem(`weft-demo-docs:${state.user}`, JSON.stringify(state.docs))
    renderConversations(state)
  })
}

/**
 * The token from `#token=JWT`, kept for this tab (reloads included) in sessionStorage and taken
 * out of the address bar, so it stays out of the browser's history too.
 */
function takeToken(): string | null {
  const fromUrl = new URLSearchParams(location.hash.slice(1)).get("token")
  if (fromUrl !== null) {
    sessionStorage.setItem("weft-demo-token", fromUrl)
    history.replaceState(null, "", location.pathname + location.search)
    return fromUrl
  }
  return sessionStorage.getItem("weft-demo-token")
}

async function main(): Promise<void> {
  const token = takeToken()
  const user = token === null ? undefined : userOfToken(token)
  if (token === null || user === undefined) {
    $("signin").hidden = false
    return
  }
  if ("serviceWorker" in navigator) void navigator.serviceWorker.register("/sw.js").catch(() => undefined)
  await initializeWasm(fetch("/automerge.wasm").then(async r => new Uint8Array(await r.arrayBuffer())))
  $("me").textContent = user
  $("app").hidden = false
  const client = await connect(token, user)
  const state: State = { client, user, seen: new Map(), docs: cachedDocs(user), created: new Set(), listed: false }
  setBadge(client.connection === "connecting" ? "reconnecting" : client.connection)
  client.onConnection(state => {
    setBadge(state)
    if (state === "refused") toast("The relay refused the token: open the page with a new #token=")
  })
  client.onPresence(() => renderPresence(state))
  addEventListener("offline", () => client.pause())
  addEventListener("online", () => client.resume())
  wireForms(state)
  watchDocs(state)
  renderConversations(state)
  const last = localStorage.getItem(`weft-demo-open:${user}`) as DocumentId | null
  if (last !== null && state.docs.some(d => d.documentId === last)) void openConversation(state, last)
  setInterval(() => void renderSaved(state), 1000)
  document.body.dataset.ready = "true"
}

void main()
