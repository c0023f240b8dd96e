// Where a server's latency goes for npm clients: N automerge-repo repos in this process, one
// writer; per change, the time from the writer's change to the first and to the last reader's
// adapter receiving a sync message (before the repos handle it, so the readers' handling,
// one after another in this process, is out of the first figure).
// Usage: node first-arrival.mjs WS_URL [CLIENTS=10] [ROUNDS=100] (a server already running).
import { Repo } from "@automerge/automerge-repo"
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket"
const [url, nArg = "10", roundsArg = "100"] = process.argv.slice(2)
const n = Number(nArg), rounds = Number(roundsArg)
const sleep = ms => new Promise(r => setTimeout(r, ms))
let t0 = 0, firsts = [], lasts = [], seen = 0, active = false, first = 0, last = 0
const adapters = Array.from({ length: n }, (_, i) => {
  const a = new WebSocketClientAdapter(url, 1000)
  a.on("message", m => {
    if (!active || i === 0 || m.type !== "sync") return
    const t = performance.now() - t0
    if (seen === 0) first = t
    last = t
    seen++
  })
  return a
})
const repos = adapters.map(a => new Repo({ network: [a], sharePolicy: async () => true }))
const writer = repos[0].create({ n: -1 })
await sleep(1500)
for (const r of repos.slice(1)) { for (let i=0;i<200 && r.peers.length===0;i++) await sleep(10); await r.find(writer.url) }
await sleep(1000)
for (let i = 0; i < rounds; i++) {
  seen = 0; active = true; t0 = performance.now()
  writer.change(d => { d.n = i })
  await sleep(150)
  active = false
  if (i >= 10 && seen >= n - 1) { firsts.push(first); lasts.push(last) }
}
const q = (a, p) => { const s = [...a].sort((x, y) => x - y); return s[Math.floor(p * (s.length - 1))].toFixed(2) }
console.log(`first reader msg p50 ${q(firsts, .5)} p90 ${q(firsts, .9)}; last p50 ${q(lasts, .5)} p90 ${q(lasts, .9)}; n=${firsts.length}`)
for (const r of repos) await r.shutdown()
process.exit(0)
