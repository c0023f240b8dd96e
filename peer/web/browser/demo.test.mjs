// The demo chat (`weft-relay serve --web`) in a real browser: Debian's chromium driven by
// puppeteer-core (pinned in package-lock.json; no browser download), two pages (Alice and Bob,
// each in its own browser context) and one `weft` CLI device of Alice's, against the real relay.
// Run by relay/tests/web_browser.rs (so `cargo test --workspace` runs it), after `tsc -p .`.
//
// Every wait is for something the page shows, bounded by WAIT_MS; nothing sleeps.
import { test, before, after } from "node:test"
import assert from "node:assert/strict"
import puppeteer from "puppeteer-core"
import { RelayProcess, WeftCli } from "../dist/test/helpers.js"

const CHROMIUM = process.env.WEFT_CHROMIUM ?? "/usr/bin/chromium"
const WAIT_MS = 30_000
const relay = new RelayProcess()
let browser
const pages = {}

before(async () => {
  await relay.start(["--web"])
  browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    // Root in a container has no user namespaces for the sandbox.
    args: ["--no-sandbox", "--disable-dev-shm-usage"],
  })
})

after(async () => {
  await browser?.close()
  relay.stop()
})

/** A page signed in as `user`, in a browser context of its own (own IndexedDB and storage). */
async function open(user) {
  const context = await browser.createBrowserContext()
  const page = await context.newPage()
  await page.setViewport({ width: 1000, height: 620 })
  page.on("pageerror", e => console.error(`[${user}] page error: ${e.message}`))
  await page.goto(`${relay.http}#token=${relay.token(user)}`)
  await ready(page)
  // The token left the address bar (and so the history) once the page read it.
  assert.equal(new URL(page.url()).hash, "")
  return page
}

async function ready(page) {
  await page.waitForSelector("body[data-ready=true]", { timeout: WAIT_MS })
}

/** Waits until `fn(arg)` holds in the page. */
function until(page, fn, arg) {
  return page.waitForFunction(fn, { timeout: WAIT_MS, polling: "mutation" }, arg)
}

const bodies = page => page.$$eval("#messages li .body", els => els.map(e => e.textContent))
const badge = (page, state) => until(page, s => document.querySelector("#badge").dataset.state === s, state)
const shows = (page, texts) =>
  until(page, want => {
    const have = [...document.querySelectorAll("#messages li .body")].map(e => e.textContent)
    return JSON.stringify(have) === JSON.stringify(want)
  }, texts)

// Offline and back. puppeteer-core 25 emulates it with `Network.emulateNetworkConditionsByRule`
// as recent Chromium takes it; an older Chromium (Debian 12's 148) refuses those parameters, and
// there the older `Network.emulateNetworkConditions` does it.
const sessions = new WeakMap()
async function setOffline(page, offline) {
  try {
    await page.setOfflineMode(offline)
    return
  } catch (e) {
    if (!String(e).includes("emulateNetworkConditionsByRule")) throw e
  }
  let cdp = sessions.get(page)
  if (!cdp) {
    cdp = await page.createCDPSession()
    await cdp.send("Network.enable")
    sessions.set(page, cdp)
  }
  await cdp.send("Network.emulateNetworkConditions", {
    offline,
    latency: 0,
    downloadThroughput: -1,
    uploadThroughput: -1,
  })
}

async function send(page, text) {
  await page.type("#composer input", text)
  await page.keyboard.press("Enter")
}

test("a page with a token the relay refuses says so", async () => {
  const context = await browser.createBrowserContext()
  const page = await context.newPage()
  // A well-formed token (user "mallory") that no relay signed.
  const forged = ["e30", Buffer.from('{"sub":"mallory"}').toString("base64url"), "c2ln"].join(".")
  await page.goto(`${relay.http}#token=${forged}`)
  await ready(page)
  await badge(page, "refused")
  await context.close()
})

test("two pages and a weft device chat in one conversation, online and offline", async () => {
  pages.alice = await open("alice")
  pages.bob = await open("bob")
  const { alice, bob } = pages
  await badge(alice, "connected")
  await badge(bob, "connected")
  await alice.evaluate(() => (window.notReloaded = true))
  await bob.evaluate(() => (window.notReloaded = true))

  // Alice's terminal starts a conversation and shares it with Bob: both lists show it live.
  const cli = new WeftCli("alice")
  const doc = cli.run(["doc", "new", "--kind", "conversation", "--title", "Plans"]).trim()
  cli.run(["msg", "send", doc, "from the terminal"])
  cli.run(["doc", "share", doc, "--user", "bob", "--role", "rw"])
  cli.sync(relay, relay.token("alice"))
  const item = `#conversations li[data-doc="${doc}"]`
  for (const page of [alice, bob]) {
    await until(page, sel => document.querySelector(sel)?.textContent === "Plans", item)
    assert.equal(await page.evaluate(() => window.notReloaded), true)
  }

  // Both open it; Bob sees Alice typing.
  await alice.click(item)
  await bob.click(item)
  await shows(alice, ["from the terminal"])
  await shows(bob, ["from the terminal"])
  await until(alice, () => document.querySelector("#online").textContent === "online: alice, bob")
  await alice.type("#composer input", "on my way")
  await until(bob, () => document.querySelector("#typing").textContent === "alice is typing…")

  // They talk; the terminal and both pages converge, and Bob got a toast.
  await alice.keyboard.press("Enter")
  await shows(bob, ["from the terminal", "on my way"])
  await until(bob, () => document.querySelector("#typing").textContent === "")
  await until(bob, () => [...document.querySelectorAll(".toast")].some(t => t.textContent === "alice: on my way"))
  await send(bob, "see you there")
  const talk = ["from the terminal", "on my way", "see you there"]
  await shows(alice, talk)
  await until(alice, () => /^saved \d+ s ago$/.test(document.querySelector("#saved").textContent))
  cli.sync(relay, relay.token("alice"))
  assert.deepEqual(JSON.parse(cli.messages(doc)).map(m => m.body), talk)

  // Bob goes offline: the badge says so, his messages wait, and catch up when he is back.
  await setOffline(bob, true)
  await badge(bob, "offline")
  await send(bob, "sent offline 1")
  await send(bob, "sent offline 2")
  const all = [...talk, "sent offline 1", "sent offline 2"]
  await shows(bob, all)
  // His socket closed before he wrote them: nobody else can have them yet.
  assert.deepEqual(await bodies(alice), talk)
  await setOffline(bob, false)
  await badge(bob, "connected")
  await shows(alice, all)
  cli.sync(relay, relay.token("alice"))
  assert.deepEqual(JSON.parse(cli.messages(doc)).map(m => m.body), all)

  // Alice starts a second conversation from the page, then goes back to the first: what she
  // writes in either still reaches the others.
  await alice.type("#new-conversation input", "Second")
  await alice.keyboard.press("Enter")
  await until(alice, () => document.querySelector("#title").textContent === "Second")
  await send(alice, "in the second one")
  await shows(alice, ["in the second one"])
  const second = await alice.$eval("#conversations li[aria-current=true]", li => li.dataset.doc)
  await alice.click(item)
  await shows(alice, all)
  await send(alice, "back in the first")
  await shows(bob, [...all, "back in the first"])
  // The README's picture: Bob's page while Alice types.
  await alice.type("#composer input", "one more thing")
  await until(bob, () => document.querySelector("#typing").textContent === "alice is typing…")
  await until(bob, () => /^saved \d+ s ago$/.test(document.querySelector("#saved").textContent))
  await bob.screenshot({ path: process.env.WEFT_SCREENSHOT ?? "../../target/web-demo.png" })
  cli.sync(relay, relay.token("alice"))
  assert.deepEqual(JSON.parse(cli.messages(second)).map(m => m.body), ["in the second one"])
  all.push("back in the first")

  // With the relay gone and the page offline, a reload still shows the conversation
  // (the page's files from its service worker, the documents from IndexedDB).
  await bob.evaluate(() => navigator.serviceWorker.ready.then(() => true))
  relay.stop()
  await setOffline(bob, true)
  await bob.reload()
  await ready(bob)
  assert.equal(await bob.evaluate(() => window.notReloaded), undefined)
  // Told again: an older Chromium forgets the emulation in a reloaded page.
  await setOffline(bob, true)
  await badge(bob, "offline")
  await until(bob, sel => document.querySelector(sel)?.textContent === "Plans", item)
  await shows(bob, all)
  assert.deepEqual(await bodies(bob), all)
})
