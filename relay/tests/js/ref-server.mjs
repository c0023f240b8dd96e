// The automerge-repo reference sync server, for bench-fanout.mjs: a Repo with
// NodeWSServerAdapter and NodeFS storage, as automerge-repo's own sync-server example runs it.
// Usage: node ref-server.mjs PORT DATA_DIR   (prints "ready" once listening)
import { Repo } from "@automerge/automerge-repo"
import { WebSocketServerAdapter } from "@automerge/automerge-repo-network-websocket"
import { NodeFSStorageAdapter } from "@automerge/automerge-repo-storage-nodefs"
import { WebSocketServer } from "ws"

const [port, dir] = process.argv.slice(2)
const wss = new WebSocketServer({ port: Number(port), host: "127.0.0.1" })
wss.on("connection", socket => socket._socket?.setNoDelay(true))
new Repo({
  network: [new WebSocketServerAdapter(wss)],
  storage: new NodeFSStorageAdapter(dir),
  peerId: "ref-server",
  sharePolicy: async () => false,
})
wss.on("listening", () => process.stdout.write("ready\n"))
