// The README's Swift sample, as written there but for where the directory, relay address,
// certificate and token come from: it compiles against the generated bindings, and runs.
import Foundation
import XCTest

@testable import Weft

final class Printer: WeftListener {
    func onDocumentChanged(change: DocumentChange) {
        for m in change.messagesAdded { print("\(change.origin) \(m.author): \(m.body)") }
        if !change.fieldsChanged.isEmpty { print("changed: \(change.fieldsChanged)") }
    }
    func onStatusChanged(status: SyncStatus) {
        print("\(status.phase), \(status.unconfirmedDocuments) unconfirmed")
    }
    func onPresenceChanged(presence: PresenceChange) {}
    func onTypingChanged(typing: TypingChange) {}
    func onNotice(notice: DocumentNotice) {}
}

final class Tokens: TokenProvider {
    let jwt: String
    init(_ jwt: String) { self.jwt = jwt }
    // Asked at every connection and before the token expires: answer from a cached token.
    func token() throws -> String { jwt }
}

func readmeSample(dir: URL, relay: String, certPem: String?, jwt: String) async throws -> WeftDevice {
    let device = try await openDevice(dataDir: dir.appendingPathComponent("weft").path, user: "alice")
    try device.setListener(listener: Printer())
    let chat = try await device.createConversation(title: "Lunch", participants: ["alice", "bob"])
    _ = try await device.sendMessage(doc: chat, body: "noon?")
    try await device.startRelaySync(addr: relay, certPem: certPem, tokens: Tokens(jwt))
    // When the app goes to the background and comes back, and when the network changes:
    try await device.pause()
    try await device.resume()
    device.networkChanged()
    return device
}

final class ReadmeSampleTests: XCTestCase {
    func testTheReadmeSampleSyncs() async throws {
        let dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("weft-swift-readme-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let device = try await readmeSample(
            dir: dir, relay: Fixture.shared.relay, certPem: Fixture.shared.certPem,
            jwt: Fixture.shared.token("alice"))
        try await eventually("the sample's device to be synced") {
            let s = device.status()
            return s.phase == .synced && s.unconfirmedDocuments == 0
        }
        try await device.shutdown()
    }
}
