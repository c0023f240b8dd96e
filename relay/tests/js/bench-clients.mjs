// Fan-out latency of one document through any automerge-repo WebSocket server, with the
// unmodified npm client: weft-bench's `ws-npm` workload runs this once per (server, size).
//
// Usage: node bench-clients.mjs WS_URL CLIENTS ROUNDS [WARMUP=5]
// stdout: `measuring` once the warm-up rounds are done, then one JSON line
// {"samples": [ms...], "lost": N} (measured rounds only).
//
// Latency, as weft-bench's native clients define it: the writer sets `n = i`; a reader sees
// round i on the first "change" event of its handle after which `doc().n === i`; from just
// before the writer's `change` call to that event. One round in flight at a time, rounds paced
// (PACE_MS below).
import { Repo } from "@automerge/automerge-repo"
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket"

const [url, clientsArg, roundsArg, warmupArg = "5"] = process.argv.slice(2)
if (!url || !clientsArg || !roundsArg) {
  console.error("usage: node bench-clients.mjs WS_URL CLIENTS ROUNDS [WARMUP=5]")
  process.exit(2)
}
const n = Number(clientsArg)
const rounds = Number(roundsArg)
const warmup = Number(warmupArg)
const ROUND_DEADLINE_MS = 5000
// Rounds start at least this far apart. The client sends a document's sync messages at most
// once per 100 ms (automerge-repo's DocSynchronizer throttle): with rounds back to back, a
// change made less than 100 ms after the writer's previous send waits out the rest, and the
// figures measure that phase (and reward a server that makes one reader lag, which spaces the
// rounds), not the server.
const PACE_MS = 150

const repos = Array.from({ length: n }, () =>
  new Repo({ network: [new WebSocketClientAdapter(url, 1000)], sharePolicy: async () => true }))
const sleep = ms => new Promise(r => setTimeout(r, ms))
const writer = repos[0].create({ n: -1 })
// The others find the document once the server has it: until then it is unavailable, and a
// repo remembers that, so a throwaway repo probes (bounded).
let found = false
for (let attempt = 0; attempt < 600 && !found; attempt++) {
  const probe = new Repo({ network: [new WebSocketClientAdapter(url, 1000)] })
  found = await probe.find(writer.url).then(() => true, () => false)
  await probe.shutdown()
  if (!found) await new Promise(r => setTimeout(r, 50))
}
if (!found) {
  console.error("the server never had the writer's document")
  process.exit(1)
}
// A reader finds the document once its socket has joined (a repo still connecting answers
// "unavailable"); a handle found unavailable may still become ready when the server's sync
// message arrives. Both waits are bounded.
async function findReady(repo) {
  for (let i = 0; i < 1000 && repo.peers.length === 0; i++) await sleep(10)
  const h = await repo.find(writer.url, { allowableStates: ["ready", "unavailable"] })
  if (!h.isReady()) {
    let timer
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error("a reader never got the document")), 10000)
    })
    await Promise.race([h.whenReady(["ready"]), timeout])
    clearTimeout(timer)
  }
  return h
}
const readers = []
for (const repo of repos.slice(1)) readers.push(await findReady(repo))
const samples = []
let lost = 0
for (let i = 0; i < warmup + rounds; i++) {
  if (i === warmup) process.stdout.write("measuring\n")
  const start = performance.now()
  const seen = readers.map(h => new Promise(resolve => {
    const timer = setTimeout(() => { h.off("change", check); resolve(null) }, ROUND_DEADLINE_MS)
    function check() {
      if (h.doc().n >= i) {
        clearTimeout(timer)
        h.off("change", check)
        resolve(performance.now() - start)
      }
    }
    h.on("change", check)
  }))
  writer.change(d => { d.n = i })
  for (const t of await Promise.all(seen)) {
    if (i < warmup) continue
    if (t === null) lost++
    else samples.push(t)
  }
  const elapsed = performance.now() - start
  if (elapsed < PACE_MS) await sleep(PACE_MS - elapsed)
}
for (const repo of repos) await repo.shutdown()
process.stdout.write(JSON.stringify({ samples, lost }) + "\n")
process.exit(0)
