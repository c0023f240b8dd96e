// What the scenarios share: the relay the Rust test started (read from the file named by
// WEFT_SWIFT_FIXTURE), devices in throwaway directories, a listener that records what it is
// told, and waiting for something a user would see.
import Foundation
import XCTest

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

@testable import Weft

/// The relay started by peer/ffi/tests/swift.rs: its QUIC address, its certificate (PEM), its
/// metrics URL and a token for each user the scenarios use.
struct Fixture: Decodable {
    let relay: String
    let metrics: String
    let certPem: String
    let tokens: [String: String]

    static let shared: Fixture = {
        guard let path = ProcessInfo.processInfo.environment["WEFT_SWIFT_FIXTURE"] else {
            fatalError("WEFT_SWIFT_FIXTURE is not set: run these tests through `cargo test -p weft-ffi --test swift`")
        }
        do {
            let data = try Data(contentsOf: URL(fileURLWithPath: path))
            let decoder = JSONDecoder()
            decoder.keyDecodingStrategy = .convertFromSnakeCase
            return try decoder.decode(Fixture.self, from: data)
        } catch {
            fatalError("cannot read the fixture \(path): \(error)")
        }
    }()

    func token(_ user: String) -> String {
        guard let t = tokens[user] else { fatalError("the fixture has no token for \(user)") }
        return t
    }
}

/// Hands the relay link the fixture's token for one user, counting how often it was asked.
final class FixtureTokens: TokenProvider, @unchecked Sendable {
    let user: String
    private let lock = NSLock()
    private var _asked = 0
    var asked: Int { lock.withLock { _asked } }
    init(_ user: String) { self.user = user }
    func token() throws -> String {
        lock.withLock { _asked += 1 }
        return Fixture.shared.token(user)
    }
}

/// Everything a device's listener was told, in order.
final class Recorder: WeftListener, @unchecked Sendable {
    private let lock = NSLock()
    private var _changes: [DocumentChange] = []
    private var _statuses: [SyncStatus] = []
    private var _notices: [DocumentNotice] = []
    private var _presence: [PresenceChange] = []

    var changes: [DocumentChange] { lock.withLock { _changes } }
    var statuses: [SyncStatus] { lock.withLock { _statuses } }
    var notices: [DocumentNotice] { lock.withLock { _notices } }
    var presence: [PresenceChange] { lock.withLock { _presence } }

    /// Every change from a relay or peer to `doc`, oldest first.
    func remoteChanges(_ doc: String) -> [DocumentChange] {
        changes.filter { $0.doc == doc && $0.origin == .remote }
    }

    func forget() {
        lock.withLock {
            _changes.removeAll()
            _statuses.removeAll()
        }
    }

    func onDocumentChanged(change: DocumentChange) { lock.withLock { _changes.append(change) } }
    func onStatusChanged(status: SyncStatus) { lock.withLock { _statuses.append(status) } }
    func onPresenceChanged(presence: PresenceChange) { lock.withLock { _presence.append(presence) } }
    func onTypingChanged(typing: TypingChange) {}
    func onNotice(notice: DocumentNotice) { lock.withLock { _notices.append(notice) } }
}

/// The bytes the relay has sent to all its connections so far (`weft_sync_bytes_out_total`
/// on its metrics endpoint).
func relayBytesSent() async throws -> Int {
    let url = URL(string: Fixture.shared.metrics)!
    let text: String = try await withCheckedThrowingContinuation { done in
        URLSession.shared.dataTask(with: url) { data, _, error in
            if let error { return done.resume(throwing: error) }
            done.resume(returning: String(decoding: data ?? Data(), as: UTF8.self))
        }.resume()
    }
    for line in text.split(separator: "\n") where line.hasPrefix("weft_sync_bytes_out_total ") {
        if let n = Int(line.split(separator: " ")[1]) { return n }
    }
    throw MetricMissing()
}

struct MetricMissing: Error {}

struct TimedOut: Error, CustomStringConvertible {
    let what: String
    var description: String { "timed out waiting for \(what)" }
}

/// Waits until `check` holds, as a user watching the screen would (20 s at most).
func eventually(
    _ what: String, timeout: TimeInterval = 20, file: StaticString = #filePath, line: UInt = #line,
    _ check: () async throws -> Bool
) async throws {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if try await check() { return }
        try await Task.sleep(nanoseconds: 50_000_000)
    }
    XCTFail("timed out waiting for \(what)", file: file, line: line)
    throw TimedOut(what: what)
}

/// A test case whose devices live in a fresh directory each and are closed at the end.
class DeviceTestCase: XCTestCase {
    private var dirs: [URL] = []
    private var devices: [WeftDevice] = []

    /// A new device (its own data directory) acting for `user`, with `listener` set.
    func device(_ user: String, listener: Recorder? = nil) async throws -> WeftDevice {
        let dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("weft-swift-\(UUID().uuidString)")
        dirs.append(dir)
        return try await reopen(user, at: dir, listener: listener)
    }

    /// Opens the device in `dir` (again) for `user`.
    func reopen(_ user: String, at dir: URL, listener: Recorder? = nil) async throws -> WeftDevice {
        let d = try await openDevice(dataDir: dir.path, user: user)
        devices.append(d)
        if let listener { try d.setListener(listener: listener) }
        return d
    }

    func dataDir(of index: Int) -> URL { dirs[index] }

    /// Starts syncing `device` with the fixture's relay, with its user's token.
    @discardableResult
    func syncWithRelay(_ device: WeftDevice) async throws -> FixtureTokens {
        let tokens = FixtureTokens(device.user())
        try await device.startRelaySync(
            addr: Fixture.shared.relay, certPem: Fixture.shared.certPem, tokens: tokens)
        return tokens
    }

    /// Waits until `device` holds `doc` and it reads `bodies` (in order). A document listed
    /// before its first changes arrived has no kind yet, and reading its messages fails with
    /// WrongKind: wait for the kind, as an app would.
    func waitForMessages(_ device: WeftDevice, _ doc: String, _ bodies: [String]) async throws {
        try await eventually("\(device.user()) to read \(bodies.count) messages ending \(bodies.last?.prefix(20) ?? "")") {
            let info = try await device.listDocuments().first { $0.id == doc }
            guard info?.kind != nil else { return false }
            return try await device.listMessages(doc: doc, last: nil).map(\.body) == bodies
        }
    }

    /// `waitForMessages` where some were written concurrently on two devices: their order
    /// is their writers' clocks', and two written in the same millisecond sort by their random
    /// ids, so only which messages arrived is compared.
    func waitForMessageSet(_ device: WeftDevice, _ doc: String, _ bodies: [String]) async throws {
        try await eventually("\(device.user()) to read the \(bodies.count) messages") {
            let info = try await device.listDocuments().first { $0.id == doc }
            guard info?.kind != nil else { return false }
            let read = try await device.listMessages(doc: doc, last: nil).map(\.body)
            return read.count == bodies.count && Set(read) == Set(bodies)
        }
    }

    override func tearDown() async throws {
        for d in devices { try? await d.shutdown() }
        devices.removeAll()
        for dir in dirs { try? FileManager.default.removeItem(at: dir) }
        dirs.removeAll()
        try await super.tearDown()
    }
}
