// The socket's life: connected, reconnecting (with a fresh ticket each time: a ticket opens one
// socket only), or offline by the app's choice (`pause`), e.g. when the browser says so.
//
// automerge-repo's adapter retries with the URL it was given, which a used ticket makes
// useless, so this drives the retries itself: the adapter's own retry timer is set beyond
// reach, and each attempt takes a new URL from `reconnectUrl`.
import type { Repo } from "@automerge/automerge-repo"
import type { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket"

/** What the socket is doing; "refused": the relay refused the token, so no more tries. */
export type ConnectionState = "connecting" | "connected" | "reconnecting" | "offline" | "refused"

/** How long a socket may take to open before it is given up and tried again. */
export const CONNECT_TIMEOUT_MS = 5000

/** Long enough that the adapter never retries on its own (below setTimeout's 2^31 ms limit). */
export const ADAPTER_RETRY_NEVER_MS = 2_000_000_000

export class Connection {
  state: ConnectionState
  readonly #adapter: WebSocketClientAdapter
  readonly #reconnectUrl: (() => Promise<string>) | undefined
  readonly #retryMs: number
  readonly #listeners = new Set<(state: ConnectionState) => void>()
  #paused: boolean
  #repo: Repo | undefined
  #timer: ReturnType<typeof setTimeout> | undefined
  #quiet = false

  constructor(
    adapter: WebSocketClientAdapter,
    reconnectUrl: (() => Promise<string>) | undefined,
    offline: boolean,
    retryMs: number,
  ) {
    this.#adapter = adapter
    this.#reconnectUrl = reconnectUrl
    this.#retryMs = retryMs
    this.#paused = offline
    this.state = offline ? "offline" : "connecting"
    adapter.on("peer-candidate", () => {
      this.#clearTimer()
      this.#set("connected")
    })
    adapter.on("peer-disconnected", () => {
      if (this.#paused || this.#quiet) return
      this.#set("reconnecting")
      this.#schedule()
    })
    // A first socket that never opens (relay down) is retried too.
    if (!offline) this.#watch()
  }

  /** The repo the adapter joins on the first `resume()` of a client started offline. */
  attachLater(repo: Repo): void {
    this.#repo = repo
  }

  on(listener: (state: ConnectionState) => void): () => void {
    this.#listeners.add(listener)
    return () => this.#listeners.delete(listener)
  }

  pause(): void {
    this.#paused = true
    this.#clearTimer()
    this.#closeSocket()
    this.#set("offline")
  }

  resume(): void {
    if (!this.#paused) return
    this.#paused = false
    this.#set("reconnecting")
    void this.#attempt()
  }

  #set(state: ConnectionState): void {
    if (this.state === state) return
    this.state = state
    for (const listener of this.#listeners) listener(state)
  }

  #clearTimer(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer)
    this.#timer = undefined
  }

  #schedule(): void {
    this.#clearTimer()
    this.#timer = setTimeout(() => void this.#attempt(), this.#retryMs)
  }

  /** Tries again unless the socket is up within the connect timeout (a slow machine's socket
   * is not cut off while it opens; a closed one is retried sooner, on its close). */
  #watch(): void {
    this.#clearTimer()
    this.#timer = setTimeout(() => {
      if (!this.#paused && this.state !== "connected") void this.#attempt()
    }, Math.max(this.#retryMs, CONNECT_TIMEOUT_MS))
  }

  #closeSocket(): void {
    if (this.#adapter.socket === undefined) return
    this.#quiet = true
    try {
      this.#adapter.disconnect()
    } finally {
      this.#quiet = false
    }
  }

  async #attempt(): Promise<void> {
    if (this.#paused || this.state === "connected") return
    if (this.#reconnectUrl !== undefined) {
      try {
        // `url` is read-only in the adapter's types, but every connect reads it afresh.
        ;(this.#adapter as { url: string }).url = await this.#reconnectUrl()
      } catch (e) {
        if ((e as { code?: unknown }).code === 401) {
          // Another try would be refused too: the app needs a new token.
          this.#paused = true
          this.#set("refused")
          return
        }
        // No ticket (the relay or the network is down): try again later.
        if (!this.#paused) this.#schedule()
        return
      }
      if (this.#paused) return
    }
    this.#closeSocket()
    const repo = this.#repo
    if (repo !== undefined) {
      // Started offline: the repo meets the adapter now (which connects it).
      this.#repo = undefined
      repo.networkSubsystem.addNetworkAdapter(this.#adapter)
    } else if (this.#adapter.peerId !== undefined) {
      this.#adapter.connect(this.#adapter.peerId, this.#adapter.peerMetadata)
    }
    this.#watch()
  }
}
