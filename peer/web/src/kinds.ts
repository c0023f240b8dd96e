// The kinds the relay enforces (built-in and declared with `--kinds`), as `GET /kinds` on its
// HTTP address describes them (docs/decisions/0015), so an app can see what a kind's fields are
// and who may write them before it writes.

/** Who may do something: "owner", "member", "admin", "author", or a user field's name. */
export type Who = string

/** One field of a kind or of a record. */
export interface FieldSpec {
  type: "string" | "text" | "int" | "bool" | "user" | "enum" | "map" | "list" | "any"
  values?: string[]
  fixed: boolean
  by: Who[]
  clear: Who[]
  initial?: string
  transitions: { from: string[]; to: string; by: Who[] }[]
  one_way: boolean
}

/** A map of entries at a document's root. */
export interface CollectionSpec {
  key: "any" | "id" | "message_key" | "writer"
  entry:
    | { record: { fields: Record<string, FieldSpec>; author?: string; create: Who[]; delete: Who[] } }
    | { value: FieldSpec }
    | { nested: CollectionSpec }
}

/** One kind. */
export interface KindSpec {
  /** Declared to the relay (`--kinds`), not built in. */
  declared: boolean
  fields: Record<string, FieldSpec>
  collections: Record<string, CollectionSpec>
}

/** Every kind the relay knows, and the TOML the declared ones came from. */
export interface Kinds {
  kinds: Record<string, KindSpec>
  declared_toml: string
}

/** Fetches the relay's kinds from its HTTP address, with the user's token. */
export async function fetchKinds(httpUrl: string, token: string): Promise<Kinds> {
  const response = await fetch(new URL("/kinds", httpUrl), { headers: { Authorization: `Bearer ${token}` } })
  if (!response.ok) throw new Error(`GET /kinds: HTTP ${response.status}`)
  return (await response.json()) as Kinds
}

/** The `sub` of a JWT (read, not verified: the relay verifies), for a page that starts offline. */
export function userOfToken(token: string): string | undefined {
  const payload = token.split(".")[1]
  if (payload === undefined) return undefined
  try {
    const json = atob(payload.replace(/-/g, "+").replace(/_/g, "/"))
    const sub = (JSON.parse(json) as { sub?: unknown }).sub
    return typeof sub === "string" ? sub : undefined
  } catch {
    return undefined
  }
}
