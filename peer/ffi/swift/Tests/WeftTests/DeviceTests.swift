// The scenarios of the Kotlin tests, in Swift, against a real relay: two devices converge, the
// listener is told what changed, status goes offline -> synced, pause/resume catches up
// without a full resync, two devices sync peer to peer, and failures arrive as typed errors.
import Foundation
import XCTest

@testable import Weft

final class DeviceTests: DeviceTestCase {
    /// Ann writes on her phone, Ben answers on his laptop; both read the same conversation,
    /// and Ann sees Ben come online in it.
    func testTwoDevicesConverge() async throws {
        let annHeard = Recorder()
        let ann = try await device("ann", listener: annHeard)
        let ben = try await device("ben")
        let annTokens = try await syncWithRelay(ann)

        let chat = try await ann.createConversation(title: "Lunch", participants: ["ann", "ben"])
        try await ann.share(doc: chat, user: "ben", role: .readWrite)
        try await eventually("the relay to answer Ann's share") {
            annHeard.notices.contains { $0 == .requestAnswered(doc: chat, error: nil) }
        }
        XCTAssertGreaterThanOrEqual(annTokens.asked, 1, "the token provider is asked")
        _ = try await ann.sendMessage(doc: chat, body: "noon?")

        try await syncWithRelay(ben)
        try await waitForMessages(ben, chat, ["noon?"])
        let benRole = try await ben.documentInfo(doc: chat).role
        XCTAssertEqual(benRole, .readWrite)
        try await eventually("Ann to see Ben online in the chat") {
            annHeard.presence.contains { $0.doc == chat && $0.user == "ben" && $0.online }
        }

        let reply = try await ben.sendMessage(doc: chat, body: "yes, the usual place")
        try await waitForMessages(ann, chat, ["noon?", "yes, the usual place"])
        try await eventually("Ann to be told the reply is Ben's change") {
            annHeard.remoteChanges(chat).contains { c in
                c.authors == ["ben"] && c.messagesAdded.contains { $0.id == reply.id && $0.author == "ben" }
            }
        }
        try await waitForMessages(ben, chat, ["noon?", "yes, the usual place"])
        let authors = try await ann.listMessages(doc: chat, last: nil).map(\.author)
        XCTAssertEqual(authors, ["ann", "ben"])
    }

    /// Dan's listener hears Cat's new message, her edit and her deletion, each as what it is;
    /// Cat's own listener hears her writes as local.
    func testListenerToldWhatChanged() async throws {
        let catHeard = Recorder()
        let danHeard = Recorder()
        let cat = try await device("cat", listener: catHeard)
        let dan = try await device("dan", listener: danHeard)
        try await syncWithRelay(cat)
        try await syncWithRelay(dan)

        let chat = try await cat.createConversation(title: "Trip photos", participants: [])
        try await cat.share(doc: chat, user: "dan", role: .readWrite)
        let sent = try await cat.sendMessage(doc: chat, body: "uploading now")
        try await eventually("Dan to hear the new message") {
            danHeard.remoteChanges(chat).flatMap(\.messagesAdded).map(\.body) == ["uploading now"]
        }
        let added = danHeard.remoteChanges(chat).flatMap(\.messagesAdded)
        XCTAssertEqual(added.first?.author, "cat")
        XCTAssertEqual(added.first?.id, sent.id)
        XCTAssertTrue(
            catHeard.changes.contains { $0.doc == chat && $0.origin == .local && $0.messagesAdded.map(\.id) == [sent.id] },
            "Cat's own listener hears her message as a local change")

        try await cat.editMessage(doc: chat, messageId: sent.id, body: "uploaded, 42 photos")
        try await eventually("Dan to hear the edit") {
            danHeard.remoteChanges(chat).flatMap(\.messagesEdited).map(\.body) == ["uploaded, 42 photos"]
        }
        XCTAssertEqual(danHeard.remoteChanges(chat).flatMap(\.messagesEdited).first?.author, "cat")
        let edits = danHeard.remoteChanges(chat).filter { !$0.messagesEdited.isEmpty }
        XCTAssertEqual(edits.map(\.authors), [["cat"]], "the edit is told as Cat's change")

        try await cat.deleteMessage(doc: chat, messageId: sent.id)
        try await eventually("Dan to hear the deletion") {
            danHeard.remoteChanges(chat).flatMap(\.messagesDeleted).map(\.id) == [sent.id]
        }
    }

    /// Eve's device starts offline, syncs, and reports synced with nothing unconfirmed.
    func testStatusGoesOfflineToSynced() async throws {
        let heard = Recorder()
        let eve = try await device("eve", listener: heard)
        XCTAssertEqual(eve.status().phase, .offline)
        let chat = try await eve.createConversation(title: "Notes", participants: [])
        _ = try await eve.sendMessage(doc: chat, body: "written offline")
        XCTAssertEqual(eve.status().phase, .offline)

        try await syncWithRelay(eve)
        try await eventually("Eve's device to be synced") {
            let s = eve.status()
            return s.phase == .synced && s.unconfirmedDocuments == 0 && s.lastSyncMs != nil
        }
        let phases = heard.statuses.map(\.phase)
        XCTAssertEqual(phases.first, .offline, "the listener is told the status at once: \(phases)")
        XCTAssertEqual(phases.last, .synced, "\(phases)")
        XCTAssertTrue(eve.status().links.contains { $0.online })
    }

    /// Gus's app goes to the background; Fay writes meanwhile; when Gus comes back only her new
    /// message arrives, not the whole history again (the relay sends a fraction of the
    /// document's size), and what Gus wrote offline reaches Fay.
    func testPauseResumeWithoutFullResync() async throws {
        let fay = try await device("fay")
        let gusHeard = Recorder()
        let gus = try await device("gus", listener: gusHeard)
        try await syncWithRelay(fay)
        try await syncWithRelay(gus)

        let chat = try await fay.createConversation(title: "Flat", participants: [])
        try await fay.share(doc: chat, user: "gus", role: .readWrite)
        // 20 messages of 2,000 characters that do not compress: about 40 KB of history.
        var history: [String] = []
        for i in 1...20 {
            let noise = (0..<56).map { _ in UUID().uuidString }.joined().prefix(2000)
            history.append("message \(i): \(noise)")
            _ = try await fay.sendMessage(doc: chat, body: history.last!)
        }
        try await waitForMessages(gus, chat, history)
        try await eventually("Gus's listener to hear the 20 messages") {
            gusHeard.remoteChanges(chat).flatMap(\.messagesAdded).count == 20
        }
        try await eventually("Gus's device to be synced") { gus.status().phase == .synced }

        try await gus.pause()
        XCTAssertTrue(gus.status().paused)
        XCTAssertEqual(gus.status().phase, .offline)
        gusHeard.forget()

        _ = try await fay.sendMessage(doc: chat, body: "rent is due")
        _ = try await gus.sendMessage(doc: chat, body: "paid (sent while offline)")
        try await eventually("Fay's device to be synced") { fay.status().phase == .synced }
        try await Task.sleep(nanoseconds: 300_000_000)
        XCTAssertTrue(gusHeard.remoteChanges(chat).isEmpty, "nothing arrives while paused")

        let sentBefore = try await relayBytesSent()
        try await gus.resume()
        let all = history + ["rent is due", "paid (sent while offline)"]
        // Fay's and Gus's last messages were written concurrently (Gus paused): either order.
        try await waitForMessageSet(fay, chat, all)
        try await eventually("Gus to hear Fay's new message") {
            gusHeard.remoteChanges(chat).flatMap(\.messagesAdded).map(\.body).contains("rent is due")
        }
        try await eventually("Gus's device to be synced again") {
            let s = gus.status()
            return s.phase == .synced && !s.paused && s.unconfirmedDocuments == 0
        }
        let sent = try await relayBytesSent() - sentBefore
        let historyBytes = history.map(\.utf8.count).reduce(0, +)
        XCTAssertLessThan(
            sent, historyBytes / 4,
            "catching up after resume sent \(sent) bytes, against \(historyBytes) of history")
        // (The first words only: a message of the history is 2,000 characters long.)
        let arrived = gusHeard.remoteChanges(chat).flatMap(\.messagesAdded).map { $0.body.prefix(12) }
        XCTAssertEqual(arrived, ["rent is due"], "only what changed while paused arrives")
        let bodies = try await gus.listMessages(doc: chat, last: nil).map(\.body)
        XCTAssertTrue(Set(bodies) == Set(all), "Gus reads every message once, his own included")
        print("resume: the relay sent \(sent) bytes to catch up (history: \(historyBytes) bytes)")
    }

    /// Jon's tablet syncs his notes straight from his laptop, with no relay. (Only Jon writes
    /// in them: a device that never met the relay takes its own user's changes from a peer,
    /// not other users', whose writers the relay vouches for.)
    func testPeerToPeer() async throws {
        let laptop = try await device("jon")
        let tablet = try await device("jon")
        let notes = try await laptop.createConversation(title: "Packing", participants: [])
        let note = try await laptop.sendMessage(doc: notes, body: "passport, tickets")

        let listening = try await laptop.listenForPeers(addr: "127.0.0.1:0", allow: [tablet.deviceId()])
        try await tablet.startPeerSync(addr: listening, peerDeviceId: laptop.deviceId())
        try await waitForMessages(tablet, notes, ["passport, tickets"])
        let onTablet = try await tablet.listMessages(doc: notes, last: nil)
        XCTAssertEqual(onTablet.map(\.id), [note.id])

        do {
            try await tablet.startPeerSync(addr: listening, peerDeviceId: "nobody")
            XCTFail("a peer id that does not parse is refused")
        } catch WeftError.InvalidDeviceId(let id) {
            XCTAssertEqual(id, "nobody")
        }
        try await tablet.stopPeerSync(addr: listening)
    }

    /// Mistakes an app can make come back as WeftError cases it can switch on.
    func testTypedErrors() async throws {
        let hal = try await device("hal")
        let ivy = try await device("ivy")

        do {
            _ = try await hal.sendMessage(doc: "not-a-document", body: "hi")
            XCTFail("a malformed document id is refused")
        } catch WeftError.InvalidDocumentId(let id) {
            XCTAssertEqual(id, "not-a-document")
        }

        let elsewhere = try await ivy.createConversation(title: "Ivy's", participants: [])
        do {
            _ = try await hal.sendMessage(doc: elsewhere, body: "hi")
            XCTFail("a document this device does not hold is refused")
        } catch WeftError.UnknownDocument(let doc) {
            XCTAssertEqual(doc, elsewhere)
        }

        let chat = try await hal.createConversation(title: "Hal's", participants: [])
        let sent = try await hal.sendMessage(doc: chat, body: "first")
        try await hal.deleteMessage(doc: chat, messageId: sent.id)
        do {
            try await hal.editMessage(doc: chat, messageId: sent.id, body: "again")
            XCTFail("a deleted message is not edited")
        } catch WeftError.MessageDeleted(let id) {
            XCTAssertEqual(id, sent.id)
        }

        // Ivy's message reaches Hal; Hal may not edit it.
        try await syncWithRelay(hal)
        try await syncWithRelay(ivy)
        try await ivy.share(doc: elsewhere, user: "hal", role: .readWrite)
        let ivys = try await ivy.sendMessage(doc: elsewhere, body: "mine")
        try await waitForMessages(hal, elsewhere, ["mine"])
        do {
            try await hal.editMessage(doc: elsewhere, messageId: ivys.id, body: "hal's now")
            XCTFail("only the author edits a message")
        } catch WeftError.NotAuthor(let id, let author) {
            XCTAssertEqual(id, ivys.id)
            XCTAssertEqual(author, "ivy")
        }

        do {
            try await hal.editMessage(doc: chat, messageId: "0123456789abcdef0123456789abcdef", body: "x")
            XCTFail("a message id not in the chat is refused")
        } catch WeftError.MessageNotFound {
        }
        do {
            try await hal.deleteMessage(doc: chat, messageId: "../../")
            XCTFail("a malformed message id is refused")
        } catch WeftError.InvalidArgument(let field, _) {
            XCTAssertEqual(field, "message_id")
        }
        do {
            _ = try await hal.readRecord(doc: chat)
            XCTFail("a chat is not read as a record")
        } catch WeftError.WrongKind(let doc, let expected, _) {
            XCTAssertEqual(doc, chat)
            XCTAssertEqual(expected, "record of a declared kind")
        }
        do {
            try await hal.startRelaySync(
                addr: Fixture.shared.relay, certPem: "not a certificate", tokens: FixtureTokens("hal"))
            XCTFail("a certificate that is not PEM is refused")
        } catch WeftError.InvalidArgument(let field, _) {
            XCTAssertEqual(field, "certificate")
        }

        try await hal.shutdown()
        do {
            _ = try await hal.listDocuments()
            XCTFail("a closed device refuses every call")
        } catch WeftError.Closed {
        }
    }
}
