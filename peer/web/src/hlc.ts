// The hybrid logical clock behind `created_at`, exactly as weft-schema writes it (`schema/src/hlc.rs`):
// `2025-06-01T12:00:00.000Z-00000-7f3a9c0e12ab45cd` (RFC 3339 UTC milliseconds, a five-digit
// counter, the writer's node as 16 lowercase hex digits). Fixed widths make string order the
// timestamp order, which is what keeps a chat's `messages` map in display order.
import { blake3 } from "@noble/hashes/blake3.js"

/** A timestamp: physical milliseconds, a counter within the millisecond, the writer's node. */
export interface Hlc {
  ms: number
  counter: number
  /** 16 lowercase hex digits. */
  node: string
}

/** The latest physical time a timestamp can hold: 9999-12-31T23:59:59.999Z. */
export const MAX_HLC_MS = 253402300799999
const MAX_COUNTER = 0xffff
const HLC_RE = /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z)-(\d{5})-([0-9a-f]{16})$/

/** The canonical string form. */
export function formatHlc(h: Hlc): string {
  return `${rfc3339(h.ms)}-${String(h.counter).padStart(5, "0")}-${h.node}`
}

/** The physical part as RFC 3339 UTC with milliseconds (the form `weft msg list --json` shows). */
export function rfc3339(ms: number): string {
  // toISOString gives 4-digit years up to 9999, which MAX_HLC_MS bounds.
  return new Date(ms).toISOString()
}

/** A timestamp from its canonical form, or `undefined`. */
export function parseHlc(s: string): Hlc | undefined {
  const m = HLC_RE.exec(s)
  if (m === null) return undefined
  const ms = Date.parse(m[1])
  const counter = Number(m[2])
  // Date.parse accepts impossible dates (Feb 30) by rolling over: the round trip rejects them.
  if (!Number.isFinite(ms) || ms < 0 || ms > MAX_HLC_MS || rfc3339(ms) !== m[1] || counter > MAX_COUNTER) {
    return undefined
  }
  return { ms, counter, node: m[3] }
}

/** Orders two timestamps (the order of their strings). */
export function compareHlc(a: Hlc, b: Hlc): number {
  return a.ms - b.ms || a.counter - b.counter || (a.node < b.node ? -1 : a.node > b.node ? 1 : 0)
}

/**
 * The next timestamp for a writer on `node` whose wall clock reads `wallMs`, having seen
 * timestamps up to `lastSeen`: strictly later than `lastSeen`, physically `max(wall, last)`.
 */
export function hlcNow(wallMs: number, node: string, lastSeen?: Hlc): Hlc {
  const wall = Math.min(Math.max(0, Math.floor(wallMs)), MAX_HLC_MS)
  if (lastSeen === undefined || wall > lastSeen.ms) return { ms: wall, counter: 0, node }
  if (lastSeen.counter < MAX_COUNTER) return { ms: lastSeen.ms, counter: lastSeen.counter + 1, node }
  // Counter exhausted within one millisecond: borrow the next one.
  if (lastSeen.ms < MAX_HLC_MS) return { ms: lastSeen.ms + 1, counter: 0, node }
  return { ms: MAX_HLC_MS, counter: MAX_COUNTER, node }
}

/** weft's node for an Automerge actor (hex): the first 8 bytes of blake3 of its bytes. */
export function nodeForActor(actorHex: string): string {
  const bytes = new Uint8Array(actorHex.length / 2)
  for (let i = 0; i < bytes.length; i++) bytes[i] = parseInt(actorHex.slice(2 * i, 2 * i + 2), 16)
  return [...blake3(bytes).slice(0, 8)].map(b => b.toString(16).padStart(2, "0")).join("")
}

/** A fresh record id as weft writes them: 16 random bytes as 32 lowercase hex digits. */
export function randomId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16))
  return [...bytes].map(b => b.toString(16).padStart(2, "0")).join("")
}

const ID_RE = /^[A-Za-z0-9_-]{1,64}$/

/** Whether `s` is an id weft accepts (1 to 64 of `A-Z a-z 0-9 _ -`). */
export function isId(s: string): boolean {
  return ID_RE.test(s)
}
