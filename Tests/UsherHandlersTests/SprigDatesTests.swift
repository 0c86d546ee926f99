import Foundation
import Testing

@testable import UsherHandlers

/// Sprig's date functions: the expected lines were recorded from Caddy 2.11.7 on a machine whose zone is UTC.
@Suite(
    "templates: Sprig's date functions, against lines recorded from Caddy",
    .enabled(if: TimeZone.current.secondsFromGMT() == 0, "the recorded lines are in UTC"))
struct SprigDatesTests {
    func run(_ text: String) throws -> String {
        try GoTemplate(name: "t", text: text, functions: TemplateRun.functions).execute(.null)
    }

    @Test("date, dateInZone, htmlDate, unixEpoch, toDate, dateModify and time fields as Caddy prints them")
    func recorded() throws {
        let cases: [(String, String)] = [
            (
                "{{date \"2006-01-02 15:04:05 MST -0700 Z07:00 Jan January Mon Monday _2 3PM pm .000\" 0}}",
                "1970-01-01 00:00:00 UTC +0000 Z Jan January Thu Thursday  1 12AM am .000"
            ),
            (
                "{{dateInZone \"2006-01-02T15:04:05Z07:00 MST\" 86400 \"America/New_York\"}}",
                "1970-01-01T19:00:00-05:00 EST"
            ),
            ("{{htmlDate 1700000000}} {{htmlDateInZone 1700000000 \"Asia/Tokyo\"}}", "2023-11-14 2023-11-15"),
            (
                "{{unixEpoch (toDate \"2006-01-02\" \"2024-02-03\")}} {{toDate \"2006-01-02\" \"2024-02-03\"}}",
                "1706918400 2024-02-03 00:00:00 +0000 UTC"
            ),
            ("{{duration \"90\"}}", "1m30s"),
            (
                "{{now | date \"2006\" | len}} {{(toDate \"2006-01-02\" \"2024-02-03\").Year}} {{dateModify \"1.5h\" (toDate \"2006-01-02\" \"2024-02-03\") | date \"15:04\"}}",
                "4 2024 01:30"
            ),
            (
                "{{toDate \"2006-01-02\" \"bad\"}} {{date \"2006\" (toDate \"2006-01-02\" \"bad\")}}",
                "0001-01-01 00:00:00 +0000 UTC 0001"
            ),
            (
                "{{dateInZone \"15:04 MST\" 0 \"UTC\"}} {{dateInZone \"15:04 MST\" 0 \"Nowhere/Zone\"}}",
                "00:00 UTC 00:00 UTC"
            ),
        ]
        for (text, expected) in cases {
            let got = try run(text)
            #expect(got == expected, "\(text) gave \(got)")
        }
    }

    @Test("ago and durations: Go's Duration strings for whole seconds")
    func durations() throws {
        #expect(SprigDates.durationString(seconds: 3725) == "1h2m5s")
        #expect(SprigDates.durationString(seconds: 240) == "4m0s")
        #expect(SprigDates.durationString(seconds: -59) == "-59s")
        #expect(SprigDates.parseDuration("1h2m3.5s") == 3723.5)
        #expect(SprigDates.parseDuration("250ms") == 0.25)
        #expect(SprigDates.parseDuration("1x") == nil)
        #expect(try run("{{ago (dateModify \"-2h\" now)}}") == "2h0m0s")
    }
}
