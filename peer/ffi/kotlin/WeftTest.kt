// The Kotlin side of peer/ffi/tests/kotlin.rs: two users' devices through the generated
// bindings against the relay the Rust test started (address, certificate, tokens and the
// relay's metrics URL in the environment). Prints each scenario; any failed check throws, and
// the program exits non-zero.

import java.io.File
import java.net.URI
import java.net.http.HttpClient
import java.net.http.HttpRequest
import java.net.http.HttpResponse
import java.util.concurrent.CopyOnWriteArrayList
import java.util.concurrent.atomic.AtomicInteger
import kotlin.system.exitProcess
import kotlinx.coroutines.delay
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import uniffi.weft_ffi.*

fun env(name: String): String = System.getenv(name) ?: error("$name is not set")

fun check(ok: Boolean, what: () -> String) {
    if (!ok) throw AssertionError(what())
}

/** Everything a listener was told, in order. */
class Recorder(val name: String) : WeftListener {
    val changes = CopyOnWriteArrayList<DocumentChange>()
    val statuses = CopyOnWriteArrayList<SyncStatus>()
    val presence = CopyOnWriteArrayList<PresenceChange>()
    val typing = CopyOnWriteArrayList<TypingChange>()
    val notices = CopyOnWriteArrayList<DocumentNotice>()

    override fun onDocumentChanged(change: DocumentChange) { changes.add(change) }
    override fun onStatusChanged(status: SyncStatus) { statuses.add(status) }
    override fun onPresenceChanged(presence: PresenceChange) { this.presence.add(presence) }
    override fun onTypingChanged(typing: TypingChange) { this.typing.add(typing) }
    override fun onNotice(notice: DocumentNotice) { notices.add(notice) }

    fun phase(): SyncPhase? = statuses.lastOrNull()?.phase
}

/** A token provider that counts how often the link asked. */
class Tokens(private val token: String) : TokenProvider {
    val asked = AtomicInteger()
    override fun token(): String {
        asked.incrementAndGet()
        return token
    }
}

suspend fun eventually(
    what: String,
    timeoutMs: Long = 30_000,
    state: suspend () -> String = { "" },
    cond: suspend () -> Boolean,
) {
    try {
        withTimeout(timeoutMs) {
            while (!cond()) delay(20)
        }
    } catch (e: kotlinx.coroutines.TimeoutCancellationException) {
        throw AssertionError("timed out waiting until $what ${state()}")
    }
}

/** The relay's counter `name` from its Prometheus metrics. */
fun metric(name: String): Long {
    val client = HttpClient.newHttpClient()
    val req = HttpRequest.newBuilder(URI.create(env("WEFT_METRICS_URL"))).build()
    val body = client.send(req, HttpResponse.BodyHandlers.ofString()).body()
    val line = body.lines().firstOrNull { it.startsWith("$name ") } ?: error("no metric $name")
    return line.substringAfter(' ').trim().toLong()
}

inline fun <reified E : Throwable> expectError(what: String, block: () -> Unit): E {
    try {
        block()
    } catch (e: Throwable) {
        if (e is E) return e
        throw AssertionError("$what: expected ${E::class.simpleName}, got $e")
    }
    throw AssertionError("$what: expected ${E::class.simpleName}, got no error")
}

fun scenario(name: String) = println("-- $name")

fun main() {
    try {
        runBlocking { run() }
        println("ALL PASSED")
        exitProcess(0)
    } catch (e: Throwable) {
        e.printStackTrace()
        exitProcess(1)
    }
}

suspend fun run() {
    val work = File(env("WEFT_WORK_DIR"))
    val relay = env("WEFT_RELAY_ADDR")
    val cert = File(env("WEFT_RELAY_CERT")).readText()

    val alice = openDevice(File(work, "alice").path, "alice")
    val bob = openDevice(File(work, "bob").path, "bob")
    val aliceEvents = Recorder("alice")
    val bobEvents = Recorder("bob")
    alice.setListener(aliceEvents)
    bob.setListener(bobEvents)

    scenario("a device with no link is offline; writes work offline and are told as local")
    eventually("alice's listener hears the status") { aliceEvents.statuses.isNotEmpty() }
    check(aliceEvents.statuses.first().phase == SyncPhase.OFFLINE) { "first status ${aliceEvents.statuses.first()}" }
    val chat = alice.createConversation("Lunch", listOf("alice", "bob"))
    val noon = alice.sendMessage(chat, "noon?")
    check(noon.author == "alice" && noon.body == "noon?") { "sent $noon" }
    eventually("alice hears her own message as a local change") {
        aliceEvents.changes.any { c -> c.origin == ChangeOrigin.LOCAL && c.messagesAdded.any { it.id == noon.id } }
    }
    check(alice.listMessages(chat, null).map { it.body } == listOf("noon?")) { "alice's chat" }
    alice.share(chat, "bob", ShareRole.READ_WRITE)
    val trip = alice.createTrip("Lisbon", "2027-05-01", "2027-05-05")
    alice.share(trip, "bob", ShareRole.READ_WRITE)

    scenario("alice syncs with the relay: offline -> synced, the token provider asked")
    val aliceTokens = Tokens(env("WEFT_TOKEN_ALICE"))
    alice.startRelaySync(relay, cert, aliceTokens)
    eventually("alice is synced") { aliceEvents.phase() == SyncPhase.SYNCED }
    check(aliceTokens.asked.get() >= 1) { "the token provider was not asked" }
    eventually("the relay answers alice's share") {
        aliceEvents.notices.any { it is DocumentNotice.RequestAnswered && it.doc == chat && it.error == null }
    }
    val synced = alice.status()
    check(synced.phase == SyncPhase.SYNCED && synced.unconfirmedDocuments == 0u && synced.lastSyncMs != null) {
        "alice's status $synced"
    }
    check(aliceEvents.statuses.map { it.phase }.indexOf(SyncPhase.OFFLINE) <
        aliceEvents.statuses.map { it.phase }.indexOf(SyncPhase.SYNCED)) { "offline before synced" }

    scenario("bob's device converges: the message arrives, told as remote with its author")
    bob.startRelaySync(relay, cert, Tokens(env("WEFT_TOKEN_BOB")))
    eventually("bob has alice's message") {
        bobEvents.changes.any { c ->
            c.doc == chat && c.origin == ChangeOrigin.REMOTE && c.messagesAdded.any { it.id == noon.id && it.author == "alice" }
        }
    }
    check(bob.listMessages(chat, 10u).map { it.body } == listOf("noon?")) { "bob's chat" }
    check(bob.documentInfo(chat).role == ShareRole.READ_WRITE) { "bob's role" }
    val yes = bob.sendMessage(chat, "yes!")
    eventually("alice has bob's reply, told as bob's change") {
        aliceEvents.changes.any { c ->
            c.origin == ChangeOrigin.REMOTE && c.authors == listOf("bob") && c.messagesAdded.any { it.id == yes.id && it.author == "bob" }
        }
    }
    check(alice.listMessages(chat, null).map { it.body } == listOf("noon?", "yes!")) { "alice's chat after the reply" }

    scenario("trips: bob adds a task, alice is told bob changed the tasks; she ticks it off")
    val flight = alice.putItineraryItem(
        trip, ItineraryItem(id = "", title = "Flight", startsAt = "2027-05-01T09:30", location = "LIS", notes = null),
    )
    eventually("bob has the trip's flight") {
        runCatching { bob.readTrip(trip).itinerary.map { it.id } == listOf(flight) }.getOrDefault(false)
    }
    val hotel = bob.addTask(trip, "Book the hotel", "alice")
    eventually("alice is told bob changed the tasks", state = { "${aliceEvents.changes.filter { it.doc == trip }}" }) {
        aliceEvents.changes.any { c ->
            c.doc == trip && c.origin == ChangeOrigin.REMOTE && "tasks" in c.fieldsChanged && c.authors == listOf("bob")
        }
    }
    val seen = alice.readTrip(trip)
    check(seen.title == "Lisbon" && seen.tasks.map { it.id to it.assignee } == listOf(hotel to "alice")) { "alice's trip $seen" }
    alice.setTaskDone(trip, hotel, true)
    eventually("bob sees the task done") { bob.readTrip(trip).tasks.singleOrNull()?.done == true }
    expectError<WeftException.InvalidArgument>("a bad task id") { alice.setTaskDone(trip, "../../", true) }

    scenario("trip members: the owner adds one; bob, a member who may not, is refused on his device")
    alice.setTripMember(trip, "bob", "traveller")
    eventually("bob sees himself among the members") {
        bob.readTrip(trip).members.any { it.user == "bob" && it.role == "traveller" }
    }
    val refused = expectError<WeftException.Forbidden>("bob adds a member to alice's trip") {
        bob.setTripMember(trip, "carol", "guest")
    }
    check("owner" in refused.reason) { "the refusal names the rule: ${refused.reason}" }
    check(bob.readTrip(trip).members.none { it.user == "carol" }) { "bob's refused write changed his trip" }
    expectError<WeftException.Forbidden>("bob takes himself off alice's trip") { bob.removeTripMember(trip, "bob") }

    scenario("an edit and a delete are told as such, with the author")
    alice.editMessage(chat, noon.id, "noon at the usual place?")
    eventually("bob sees the edit, told as alice's change (he first got the chat from the relay)") {
        bobEvents.changes.any { c ->
            c.origin == ChangeOrigin.REMOTE && c.authors == listOf("alice") &&
                c.messagesEdited.any { it.id == noon.id && it.body == "noon at the usual place?" && it.author == "alice" }
        }
    }
    bob.deleteMessage(chat, yes.id)
    eventually("alice sees the delete") {
        aliceEvents.changes.any { c -> c.messagesDeleted.any { it.id == yes.id && it.deleted } }
    }

    scenario("typing and presence reach the other device")
    bob.setTyping(chat, true)
    eventually("alice sees bob typing") { aliceEvents.typing.any { it.doc == chat && it.typing } }
    check(aliceEvents.presence.any { it.doc == chat && it.user == "bob" && it.online }) {
        "alice saw bob come online: ${aliceEvents.presence}"
    }

    scenario("typed errors")
    expectError<WeftException.NotAuthor>("bob edits alice's message") {
        bob.editMessage(chat, noon.id, "hijacked")
    }.also { check(it.author == "alice" && it.messageId == noon.id) { "NotAuthor fields $it" } }
    expectError<WeftException.InvalidDocumentId>("a garbage document id") { bob.sendMessage("not-a-doc", "x") }
    val elsewhere = alice.createConversation("Alice's notes", listOf())
    expectError<WeftException.UnknownDocument>("a document bob's device does not hold") {
        bob.listMessages(elsewhere, null)
    }
    expectError<WeftException.MessageNotFound>("a message id not in the chat") {
        alice.editMessage(chat, "0123456789abcdef0123456789abcdef", "x")
    }
    expectError<WeftException.InvalidArgument>("a bad message id") { alice.deleteMessage(chat, "../../") }
    expectError<WeftException.WrongKind>("reading a chat as a record") { alice.readRecord(chat) }
    expectError<WeftException.Busy>("alice's directory while her device holds it") {
        openDevice(File(work, "alice").path, "alice")
    }
    expectError<WeftException.Refused>("alice's directory for another user") {
        openDevice(File(work, "alice").path, "bob")
    }
    expectError<WeftException.InvalidArgument>("a certificate that is not PEM") {
        bob.startRelaySync(relay, "not a certificate", Tokens("x"))
    }
    expectError<WeftException.InvalidArgument>("a cluster's other relay that is not host:port") {
        bob.startRelaySync(relay, cert, Tokens("x"), listOf("relay.example.com"))
    }

    scenario("pause / resume: the connection closes, the store stays usable, resuming is incremental")
    // A chat worth resyncing: 300 messages.
    for (i in 1..300) alice.sendMessage(chat, "message $i: " + "the itinerary for day ${i % 7} ".repeat(3))
    eventually("bob has all 302 messages", 60_000) { bob.listMessages(chat, null).size == 302 }
    eventually("bob is synced") { bob.status().phase == SyncPhase.SYNCED }
    // What a device holding none of it costs: alice's second device syncs the chat from scratch.
    val phone = openDevice(File(work, "alice-phone").path, "alice")
    val full0 = metric("weft_sync_bytes_out_total")
    phone.startRelaySync(relay, cert, Tokens(env("WEFT_TOKEN_ALICE")))
    eventually("alice's phone has the chat", 60_000) {
        // Listed before its content arrives: until then it reads as untyped.
        phone.listDocuments().any { it.id == chat } &&
            (try { phone.listMessages(chat, null).size } catch (e: WeftException.WrongKind) { 0 }) == 302
    }
    eventually("alice's phone is synced") { phone.status().phase == SyncPhase.SYNCED }
    delay(300)
    val full = metric("weft_sync_bytes_out_total") - full0
    phone.shutdown()

    bob.pause()
    check(bob.status().paused && bob.status().phase == SyncPhase.OFFLINE) { "bob paused: ${bob.status()}" }
    eventually("bob's listener hears offline") { bobEvents.phase() == SyncPhase.OFFLINE }
    // Reads and writes keep working while paused.
    val offline = bob.sendMessage(chat, "written while paused")
    val late = alice.sendMessage(chat, "sent while bob was away")
    delay(500)
    check(bob.listMessages(chat, null).none { it.id == late.id }) { "bob got a message while paused" }
    val resume0 = metric("weft_sync_bytes_out_total")
    bob.resume()
    bob.networkChanged()
    eventually("bob gets the message sent while away") {
        bobEvents.changes.any { c -> c.origin == ChangeOrigin.REMOTE && c.messagesAdded.any { it.id == late.id } }
    }
    eventually("alice gets bob's offline message") {
        alice.listMessages(chat, 3u).any { it.id == offline.id }
    }
    eventually("bob is synced again") { bob.status().phase == SyncPhase.SYNCED }
    delay(300)
    val resumed = metric("weft_sync_bytes_out_total") - resume0
    println("relay bytes out: full sync of the chat $full, resume after pause $resumed")
    check(resumed * 4 < full) { "resuming sent $resumed bytes, a full sync $full: not incremental" }

    scenario("peer to peer: alice's tablet syncs her notes straight from her laptop")
    // Only alice writes in her notes: a device that never met the relay takes its own user's
    // changes from a peer, not other users' (their bindings come from the relay).
    val note = alice.sendMessage(elsewhere, "passport, tickets")
    val tablet = openDevice(File(work, "alice-tablet").path, "alice")
    val listening = alice.listenForPeers("127.0.0.1:0", listOf(tablet.deviceId()))
    tablet.startPeerSync(listening, alice.deviceId())
    eventually("the tablet has the notes from the laptop", 30_000, { "tablet ${tablet.status()}" }) {
        tablet.listDocuments().any { it.id == elsewhere } &&
            (try { tablet.listMessages(elsewhere, null) } catch (e: WeftException.WrongKind) { listOf() })
                .any { it.id == note.id }
    }
    expectError<WeftException.InvalidDeviceId>("a peer id that does not parse") {
        tablet.startPeerSync(listening, "nobody")
    }
    tablet.stopPeerSync(listening)
    tablet.shutdown()

    scenario("stopping and closing")
    bob.stopRelaySync()
    eventually("bob is offline") { bob.status().phase == SyncPhase.OFFLINE }
    bob.shutdown()
    expectError<WeftException.Closed>("a closed device") { bob.sendMessage(chat, "x") }
    alice.shutdown()
}
