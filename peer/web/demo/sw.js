// The demo's service worker: the page's own files, from the relay when it answers and from the
// last copy otherwise, so a page reloaded offline still opens (its documents come from IndexedDB).
const CACHE = "weft-demo-v1"
const FILES = ["/", "/app.js", "/style.css", "/automerge.wasm", "/config.json"]

self.addEventListener("install", event => {
  event.waitUntil(caches.open(CACHE).then(cache => cache.addAll(FILES)).then(() => self.skipWaiting()))
})

self.addEventListener("activate", event => {
  event.waitUntil(self.clients.claim())
})

self.addEventListener("fetch", event => {
  const url = new URL(event.request.url)
  if (event.request.method !== "GET" || url.origin !== self.location.origin || !FILES.includes(url.pathname)) return
  event.respondWith(
    fetch(event.request)
      .then(response => {
        if (response.ok) {
          const copy = response.clone()
          void caches.open(CACHE).then(cache => cache.put(url.pathname, copy))
        }
        return response
      })
      .catch(() => caches.match(url.pathname).then(hit => hit ?? Response.error())),
  )
})
