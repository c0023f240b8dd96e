// Trips through the Swift bindings, as the Kotlin test drives them: the itinerary and tasks
// converge, the listener names who changed what, and a member who may not change the trip's
// members is refused on their own device.
import Foundation
import XCTest

@testable import Weft

final class TripTests: DeviceTestCase {
    /// Kim plans a trip and shares it with Lou. Lou reads the flight Kim added, adds a task for
    /// Kim, and Kim is told Lou changed the tasks; Kim ticks it off and Lou sees it done.
    func testItineraryAndTasksConverge() async throws {
        let kimHeard = Recorder()
        let kim = try await device("kim", listener: kimHeard)
        let lou = try await device("lou")
        try await syncWithRelay(kim)
        try await syncWithRelay(lou)

        let trip = try await kim.createTrip(title: "Lisbon", startDate: "2027-05-01", endDate: "2027-05-05")
        try await kim.share(doc: trip, user: "lou", role: .readWrite)
        let flight = try await kim.putItineraryItem(
            doc: trip,
            item: ItineraryItem(id: "", title: "Flight", startsAt: "2027-05-01T09:30", location: "LIS", notes: nil))
        try await eventually("Lou to read the trip's flight") {
            (try? await lou.readTrip(doc: trip))?.itinerary.map(\.id) == [flight]
        }
        let lousTrip = try await lou.readTrip(doc: trip)
        XCTAssertEqual(lousTrip.title, "Lisbon")
        XCTAssertEqual(lousTrip.startDate, "2027-05-01")
        XCTAssertEqual(lousTrip.endDate, "2027-05-05")
        XCTAssertEqual(lousTrip.itinerary.first?.title, "Flight")
        XCTAssertEqual(lousTrip.itinerary.first?.startsAt, "2027-05-01T09:30")
        XCTAssertEqual(lousTrip.itinerary.first?.location, "LIS")

        let hotel = try await lou.addTask(doc: trip, title: "Book the hotel", assignee: "kim")
        try await eventually("Kim to be told Lou changed the tasks") {
            kimHeard.remoteChanges(trip).contains { $0.fieldsChanged.contains("tasks") && $0.authors == ["lou"] }
        }
        let kimsTasks = try await kim.readTrip(doc: trip).tasks
        XCTAssertEqual(kimsTasks.map(\.id), [hotel])
        XCTAssertEqual(kimsTasks.first?.title, "Book the hotel")
        XCTAssertEqual(kimsTasks.first?.assignee, "kim")
        XCTAssertEqual(kimsTasks.first?.done, false)

        try await kim.setTaskDone(doc: trip, taskId: hotel, done: true)
        try await eventually("Lou to see the task done") {
            (try? await lou.readTrip(doc: trip))?.tasks.first?.done == true
        }
        do {
            try await kim.setTaskDone(doc: trip, taskId: "../../", done: true)
            XCTFail("a malformed task id is refused")
        } catch WeftError.InvalidArgument(let field, _) {
            XCTAssertEqual(field, "task_id")
        }
    }

    /// Kim, the trip's owner, makes Lou a member; Lou, who may write the trip but not its
    /// members, is refused on his own device, and his trip is left as it was.
    func testOnlyTheOwnerChangesMembers() async throws {
        let kim = try await device("kim")
        let lou = try await device("lou")
        try await syncWithRelay(kim)
        try await syncWithRelay(lou)

        let trip = try await kim.createTrip(title: "Porto", startDate: nil, endDate: nil)
        try await kim.share(doc: trip, user: "lou", role: .readWrite)
        try await kim.setTripMember(doc: trip, user: "lou", role: "traveller")
        try await eventually("Lou to see himself among the members") {
            (try? await lou.readTrip(doc: trip))?.members == [TripMember(user: "lou", role: "traveller")]
        }
        do {
            try await lou.setTripMember(doc: trip, user: "max", role: "guest")
            XCTFail("only the owner adds a member")
        } catch WeftError.Forbidden(let reason) {
            XCTAssertTrue(reason.contains("owner"), "the refusal names the rule: \(reason)")
        }
        do {
            try await lou.removeTripMember(doc: trip, user: "lou")
            XCTFail("only the owner takes a member off")
        } catch WeftError.Forbidden {
        }
        let members = try await lou.readTrip(doc: trip).members
        XCTAssertEqual(members, [TripMember(user: "lou", role: "traveller")], "a refused write changes nothing")
        // A task is any member's to add.
        _ = try await lou.addTask(doc: trip, title: "Train tickets", assignee: nil)
    }
}
