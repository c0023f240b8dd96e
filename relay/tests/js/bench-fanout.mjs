// Fan-out latency of one document through weft-relay's WebSocket endpoint and through the
// automerge-repo reference server (ref-server.mjs), with the same JavaScript clients.
// Figures are printed, not asserted.
//
// Usage: node bench-fanout.mjs RELAY_BIN [CLIENTS=2,10,50] [ROUNDS=40]
// stdout: one JSON object per (server, clients); stderr: a table with the ratios.
import { Repo } from "@automerge/automerge-repo"
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket"
import { spawn, execFileSync } from "node:child_process"
import { mkdtempSync, readFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import readline from "node:readline"

const [relayBin, clientsArg = "2,10,50", roundsArg = "40"] = process.argv.slice(2)
if (!relayBin) {
  console.error("usage: node bench-fanout.mjs RELAY_BIN [CLIENTS=2,10,50] [ROUNDS=40]")
  process.exit(2)
}
const sizes = clientsArg.split(",").map(Number)
const rounds = Number(roundsArg)

function firstLine(child) {
  return new Promise((resolve, reject) => {
    const rl = readline.createInterface({ input: child.stdout })
    rl.once("line", resolve)
    child.once("exit", code => reject(new Error(`server exited (${code})`)))
  })
}

function peakRssMiB(pid) {
  const status = readFileSync(`/proc/${pid}/status`, "utf8")
  const kib = Number(/VmHWM:\s+(\d+)/.exec(status)[1])
  return kib / 1024
}

async function startWeft() {
  const dir = mkdtempSync(join(tmpdir(), "weft-bench-"))
  const child = spawn(relayBin, ["serve", "--dev", "--listen", "127.0.0.1:0", "--http", "off",
    "--ws", "127.0.0.1:0", "--data-dir", dir], { stdio: ["ignore", "pipe", "ignore"] })
  const ready = await firstLine(child)
  const ws = /ws=(\S+)/.exec(ready)[1]
  const token = execFileSync(relayBin, ["token", "--secret-file", join(dir, "jwt.secret"),
    "--sub", "bench", "--create"]).toString().trim()
  return { child, url: `ws://${ws}/?token=${token}` }
}

async function startReference(port) {
  const dir = mkdtempSync(join(tmpdir(), "ref-bench-"))
  const child = spawn("node", [new URL("./ref-server.mjs", import.meta.url).pathname, String(port), dir],
    { stdio: ["ignore", "pipe", "inherit"] })
  await firstLine(child)
  return { child, url: `ws://127.0.0.1:${port}` }
}

function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]
}

async function measure(url, n) {
  const repos = Array.from({ length: n }, () =>
    new Repo({ network: [new WebSocketClientAdapter(url, 1000)], sharePolicy: async () => true }))
  const writer = repos[0].create({ n: -1 })
  // The others find the document once the server has it: until then it is unavailable, and a
  // repo remembers that, so a throwaway repo probes.
  for (;;) {
    const probe = new Repo({ network: [new WebSocketClientAdapter(url, 1000)] })
    const found = await probe.find(writer.url).then(() => true, () => false)
    await probe.shutdown()
    if (found) break
    await new Promise(r => setTimeout(r, 50))
  }
  const readers = []
  for (const repo of repos.slice(1)) readers.push(await repo.find(writer.url))
  const samples = []
  for (let i = 0; i < rounds; i++) {
    const start = performance.now()
    const seen = readers.map(h => new Promise(resolve => {
      const check = () => {
        if (h.doc().n === i) {
          h.off("change", check)
          resolve(performance.now() - start)
        }
      }
      h.on("change", check)
    }))
    writer.change(d => { d.n = i })
    for (const t of await Promise.all(seen)) samples.push(t)
  }
  for (const repo of repos) await repo.shutdown()
  samples.sort((a, b) => a - b)
  return { p50_ms: percentile(samples, 50), p99_ms: percentile(samples, 99), samples: samples.length }
}

const results = []
for (const server of ["weft-relay", "automerge-repo"]) {
  const s = server === "weft-relay" ? await startWeft() : await startReference(40000 + (process.pid % 20000))
  for (const n of sizes) {
    const r = await measure(s.url, n)
    const row = { workload: "ws-fanout", server, clients: n, ...r, server_peak_rss_mib: peakRssMiB(s.child.pid) }
    results.push(row)
    console.log(JSON.stringify(row))
  }
  s.child.kill("SIGTERM")
}
console.error("clients | weft p50/p99 ms | automerge-repo p50/p99 ms | ratio p50, p99 | peak RSS MiB weft / ref")
for (const n of sizes) {
  const w = results.find(r => r.server === "weft-relay" && r.clients === n)
  const a = results.find(r => r.server === "automerge-repo" && r.clients === n)
  console.error(`${n} | ${w.p50_ms.toFixed(1)} / ${w.p99_ms.toFixed(1)} | ${a.p50_ms.toFixed(1)} / ${a.p99_ms.toFixed(1)} | ` +
    `${(w.p50_ms / a.p50_ms).toFixed(2)}, ${(w.p99_ms / a.p99_ms).toFixed(2)} | ` +
    `${w.server_peak_rss_mib.toFixed(1)} / ${a.server_peak_rss_mib.toFixed(1)}`)
}
process.exit(0)
