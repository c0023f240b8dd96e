// A thin typed layer over @automerge/automerge-repo for weft-relay's WebSocket endpoint.
//
// The repo syncs documents as usual; this adds weft's capabilities, carried as `weft-…`
// messages on the same socket (docs/decisions/0014 in the weft repository): discovery
// (`docs()`), presence with an app-defined status (`presence(doc)`, `setStatus`), sharing
// (`share`, `unshare`, `remove`), token refresh (`refresh`) and "saved on the relay"
// (`status(doc)`, from automerge-repo's remote heads under the relay's storage id).
import { Repo, type DocumentId, type PeerId, type StorageAdapterInterface } from "@automerge/automerge-repo"
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket"
import { ADAPTER_RETRY_NEVER_MS, Connection, type ConnectionState } from "./connection.js"

export * from "./chat.js"
export * from "./hlc.js"
export * from "./kinds.js"
export type { ConnectionState } from "./connection.js"

/** How a client is set up. */
export interface ClientOptions {
  /** How long between reconnection attempts (ms); 5000 by default. */
  retryMs?: number
  /** Where documents are kept between page loads, e.g. `IndexedDBStorageAdapter`. */
  storage?: StorageAdapterInterface
  /** A fresh socket URL for each reconnection (a ticket URL is good for one socket only). */
  reconnectUrl?: () => Promise<string>
  /** Start offline: no socket until `resume()`. */
  offline?: boolean
}

/** A role on a document. */
export type Role = "rw" | "ro"

/** A document the user may read. */
export interface DocEntry {
  documentId: DocumentId
  role: Role
}

/** Someone on a document. */
export interface Presence {
  user: string
  device: string
  status?: string
}

/** What the relay has of a document. */
export interface SavedStatus {
  /** The relay's heads equal this tab's: everything written here is on the relay. */
  saved: boolean
  /** When the relay's heads were last heard of (ms since the epoch), if ever. */
  at?: number
}

/** A request the relay refused. */
export class WeftError extends Error {
  constructor(
    message: string,
    readonly code: number,
  ) {
    super(message)
    this.name = "WeftError"
  }
}

/** The longest presence status the relay accepts, in bytes. */
export const MAX_STATUS_LEN = 64

type WeftMessage = { type: string; [field: string]: unknown }

/** A weft client: an automerge-repo `Repo` connected to the relay, and weft's capabilities. */
export class WeftClient {
  readonly repo: Repo
  readonly #adapter: WebSocketClientAdapter
  #storageId: string | undefined
  #listing = new Map<DocumentId, Role>()
  #listed: Promise<void>
  #resolveListed!: () => void
  #presence = new Map<DocumentId, Map<string, Presence>>()
  #replies = new Map<number, { resolve: () => void; reject: (e: Error) => void }>()
  #nextId = 1
  #docListeners = new Set<(docs: DocEntry[]) => void>()
  #presenceListeners = new Set<(doc: DocumentId, here: Presence[]) => void>()
  #user: string | undefined
  readonly #connection: Connection

  /** Connects to `url` (`ws://HOST/?ticket=…` or `?token=…`). */
  constructor(url: string, options: ClientOptions = {}) {
    this.#adapter = new WebSocketClientAdapter(url, ADAPTER_RETRY_NEVER_MS)
    const retryMs = options.retryMs ?? 5000
    this.#connection = new Connection(this.#adapter, options.reconnectUrl, options.offline ?? false, retryMs)
    // Offline from the start: the repo meets the adapter (which then connects) on `resume()`.
    this.repo = new Repo({
      network: options.offline ? [] : [this.#adapter],
      storage: options.storage,
      sharePolicy: async () => true,
    })
    if (options.offline) this.#connection.attachLater(this.repo)
    this.#listed = new Promise(resolve => (this.#resolveListed = resolve))
    this.#adapter.on("peer-candidate", () => this.#send({ type: "weft-hello" }))
    // Without a socket nobody is known to be here; the relay tells again on reconnection.
    this.#adapter.on("peer-disconnected", () => this.#forgetPresence())
    this.#adapter.on("message", message => this.#receive(message as unknown as WeftMessage))
  }

  /** Exchanges `token` for a one-time ticket at the relay's HTTP address, then connects; a
   * fresh ticket is fetched for every reconnection too (pass a function to have reconnections
   * use the token given to `refresh` since). */
  static async withTicket(
    httpUrl: string,
    wsUrl: string,
    token: string | (() => string),
    options: ClientOptions = {},
  ): Promise<WeftClient> {
    const ticketUrl = () => WeftClient.ticketUrl(httpUrl, wsUrl, typeof token === "string" ? token : token())
    const first = options.offline ? wsUrl : await ticketUrl()
    return new WeftClient(first, { reconnectUrl: ticketUrl, ...options })
  }

  /** `wsUrl` with a one-time ticket for `token`, from the relay's HTTP address. */
  static async ticketUrl(httpUrl: string, wsUrl: string, token: string): Promise<string> {
    const response = await fetch(new URL("/ws-ticket", httpUrl), {
      method: "POST",
      headers: { Authorization: `Bearer ${token}` },
    })
    if (!response.ok) throw new WeftError(`no ticket: HTTP ${response.status}`, response.status)
    const { ticket } = (await response.json()) as { ticket: string }
    const url = new URL(wsUrl)
    url.searchParams.set("ticket", ticket)
    return url.toString()
  }

  /** The connection's user, once the relay has welcomed it. */
  get user(): string | undefined {
    return this.#user
  }

  /** The socket's state: connecting, connected, reconnecting, offline (paused), or refused
   * (the relay refused the token when asked for a ticket). */
  get connection(): ConnectionState {
    return this.#connection.state
  }

  /** Calls `listener` whenever the socket's state changes. */
  onConnection(listener: (state: ConnectionState) => void): () => void {
    return this.#connection.on(listener)
  }

  /** Closes the socket and stays offline (changes keep being made and stored locally). */
  pause(): void {
    this.#connection.pause()
  }

  /** Reconnects after `pause()` (or an offline start); what was written meanwhile syncs. */
  resume(): void {
    this.#connection.resume()
  }

  /** The user's readable documents (after the relay's first listing). */
  async docs(): Promise<DocEntry[]> {
    await this.#listed
    return [...this.#listing].map(([documentId, role]) => ({ documentId, role }))
  }

  /** Calls `listener` with the whole list whenever it changes. */
  onDocs(listener: (docs: DocEntry[]) => void): () => void {
    this.#docListeners.add(listener)
    return () => this.#docListeners.delete(listener)
  }

  /** Who else is on `doc` (a document this client syncs). */
  presence(doc: DocumentId): Presence[] {
    return [...(this.#presence.get(doc)?.values() ?? [])]
  }

  /** Calls `listener` whenever someone's presence on a document changes. */
  onPresence(listener: (doc: DocumentId, here: Presence[]) => void): () => void {
    this.#presenceListeners.add(listener)
    return () => this.#presenceListeners.delete(listener)
  }

  /** Tells the others on `doc` this client's status (e.g. "typing"). */
  setStatus(doc: DocumentId, status: string): void {
    if (new TextEncoder().encode(status).length > MAX_STATUS_LEN) {
      throw new RangeError(`a status is at most ${MAX_STATUS_LEN} bytes`)
    }
    this.#send({ type: "weft-presence", documentId: doc, status })
  }

  /** Gives `user` `role` on `doc` (owner or admin only). */
  share(doc: DocumentId, user: string, role: Role): Promise<void> {
    return this.#request({ type: "weft-share", documentId: doc, user, role })
  }

  /** Takes `user` off `doc`. */
  unshare(doc: DocumentId, user: string): Promise<void> {
    return this.#request({ type: "weft-unshare", documentId: doc, user })
  }

  /** Deletes `doc` for everyone. */
  remove(doc: DocumentId): Promise<void> {
    return this.#request({ type: "weft-delete", documentId: doc })
  }

  /** Replaces the connection's token (same user); a refused one ends the connection. */
  refresh(token: string): Promise<void> {
    return this.#request({ type: "weft-token", token })
  }

  /** Whether the relay has everything this tab has of `doc`. */
  async status(doc: DocumentId): Promise<SavedStatus> {
    const handle = await this.repo.find(doc)
    const info = this.#storageId === undefined ? undefined : handle.getSyncInfo(this.#storageId as never)
    if (info === undefined) return { saved: false }
    const saved = JSON.stringify(info.lastHeads) === JSON.stringify(handle.heads())
    return { saved, at: info.lastSyncTimestamp }
  }

  /** Closes the socket. */
  close(): void {
    this.#connection.pause()
  }

  #send(fields: WeftMessage): void {
    const target = this.#adapter.remotePeerId
    if (target === undefined) return
    const message = { ...fields, senderId: this.repo.peerId, targetId: target as PeerId }
    this.#adapter.send(message as never)
  }

  #request(fields: WeftMessage): Promise<void> {
    const id = this.#nextId++
    return new Promise((resolve, reject) => {
      this.#replies.set(id, { resolve, reject })
      this.#send({ ...fields, id })
    })
  }

  #receive(message: WeftMessage): void {
    switch (message.type) {
      case "weft-welcome":
        this.#storageId = message.storageId as string
        this.#user = message.user as string
        break
      case "weft-docs": {
        if (message.full) this.#listing.clear()
        for (const entry of message.docs as DocEntry[]) this.#listing.set(entry.documentId, entry.role)
        for (const doc of message.removed as DocumentId[]) this.#listing.delete(doc)
        if (!message.full) this.#docsChanged()
        break
      }
      case "weft-docs-end":
        this.#resolveListed()
        this.#docsChanged()
        break
      case "weft-presence": {
        const doc = message.documentId as DocumentId
        const here = this.#presence.get(doc) ?? new Map<string, Presence>()
        this.#presence.set(doc, here)
        const device = message.device as string
        if (message.online === false) here.delete(device)
        else {
          const status = (message.status as string | undefined) ?? here.get(device)?.status
          here.set(device, { user: message.user as string, device, status })
        }
        for (const listener of this.#presenceListeners) listener(doc, this.presence(doc))
        break
      }
      case "weft-reply": {
        const pending = this.#replies.get(message.id as number)
        if (pending === undefined) break
        this.#replies.delete(message.id as number)
        if (message.ok) pending.resolve()
        else pending.reject(new WeftError(String(message.message ?? "refused"), Number(message.code ?? 0)))
        break
      }
    }
  }

  #forgetPresence(): void {
    const docs = [...this.#presence.keys()]
    this.#presence.clear()
    for (const doc of docs) for (const listener of this.#presenceListeners) listener(doc, [])
  }

  #docsChanged(): void {
    const docs = [...this.#listing].map(([documentId, role]) => ({ documentId, role }))
    for (const listener of this.#docListeners) listener(docs)
  }
}
