// What the package's tests share: the real relay and the `weft` CLI from the cargo build
// (WEFT_RELAY_BIN / WEFT_BIN, or the workspace's target/debug), each in a temporary directory.
import { spawn, spawnSync, execFileSync, type ChildProcess } from "node:child_process"
import { mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { createInterface } from "node:readline"

const target = join(import.meta.dirname, "../../../../target/debug")
export const relayBin = process.env.WEFT_RELAY_BIN ?? join(target, "weft-relay")
export const weftBin = process.env.WEFT_BIN ?? join(target, "weft")

/** A relay process with `--ws` and `--http` on loopback. */
export class RelayProcess {
  readonly dir = mkdtempSync(join(tmpdir(), "weft-web-"))
  #child: ChildProcess | undefined
  ws = ""
  http = ""
  quic = ""

  /** Starts it with `extra` flags; resolves once it prints its ready line. */
  async start(extra: string[] = []): Promise<void> {
    const child = spawn(relayBin, ["serve", "--dev", "--listen", "127.0.0.1:0", "--data-dir", this.dir,
      "--ws", "127.0.0.1:0", "--http", "127.0.0.1:0", ...extra], {
      stdio: ["ignore", "pipe", process.env.WEFT_TEST_LOG ? "inherit" : "ignore"],
    })
    this.#child = child
    const lines = createInterface({ input: child.stdout! })
    const ready: string = await new Promise((resolve, reject) => {
      lines.once("line", resolve)
      child.once("exit", code => reject(new Error(`weft-relay exited with ${code}`)))
    })
    const addr = (name: string) => ready.match(new RegExp(` ${name}=(\\S+)`))![1]
    this.ws = `ws://${addr("ws")}/`
    this.http = `http://${addr("http")}/`
    this.quic = addr("quic")
  }

  /** A token for `user` that may create documents. */
  token(user: string): string {
    return execFileSync(relayBin, ["token", "--secret-file", join(this.dir, "jwt.secret"), "--sub", user, "--create"])
      .toString()
      .trim()
  }

  stop(): void {
    this.#child?.kill()
  }
}

/** The environment without the variables that would point `weft` elsewhere. */
function cliEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env }
  delete env.WEFT_TOKEN
  delete env.WEFT_DATA_DIR
  return env
}

/** A `weft` device acting for `user`. */
export class WeftCli {
  readonly dir = mkdtempSync(join(tmpdir(), "weft-cli-"))

  constructor(readonly user: string) {
    this.run(["init", "--name", user])
  }

  /** Runs a command that must succeed; its stdout. With `quiet`, its stderr must be empty too. */
  run(args: string[], opts: { quiet?: boolean } = {}): string {
    const out = spawnSync(weftBin, ["--data-dir", this.dir, ...args], {
      env: cliEnv(),
      timeout: 60_000,
    })
    const stderr = out.stderr?.toString() ?? ""
    if (out.status !== 0) throw new Error(`weft ${args.join(" ")} failed (${out.status}): ${stderr}`)
    if (opts.quiet && stderr.trim() !== "") throw new Error(`weft ${args.join(" ")} said: ${stderr}`)
    return out.stdout.toString()
  }

  /** Syncs every document with the relay once. */
  sync(relay: RelayProcess, token: string, docs: string[] = []): void {
    const tokenFile = join(this.dir, "token")
    writeFileSync(tokenFile, token)
    this.run(["sync", "--relay", relay.quic, "--relay-cert", join(relay.dir, "tls/cert.pem"),
      "--token-file", tokenFile, ...docs.flatMap(d => ["--doc", d]), "--once"])
  }

  /** `weft msg list DOC --json`, checking that nothing was skipped (stderr empty). */
  messages(doc: string): string {
    return this.run(["msg", "list", doc, "--json"], { quiet: true }).trim()
  }
}

/** Resolves once `check` holds, checking now and after every event `subscribe` reports. */
export function when(
  subscribe: (fire: () => void) => () => void,
  check: () => boolean | Promise<boolean>,
): Promise<void> {
  return new Promise((resolve, reject) => {
    let done = false
    const unsubscribe = subscribe(() => void test())
    const test = async () => {
      try {
        if (!done && (await check())) {
          done = true
          unsubscribe()
          resolve()
        }
      } catch (e) {
        reject(e)
      }
    }
    void test()
  })
}
