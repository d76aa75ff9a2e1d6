// Run with `toolhost build --test` (the SDK's test host under Node).
import assert from "node:assert/strict";
import { test } from "node:test";

import { testing } from "@toolhost/tool/testing";

import calendar from "../src/calendar.js";
import * as dates from "../src/dates.js";

test("days round-trip through civil dates, across leap years and centuries", () => {
  for (const text of ["1970-01-01", "2000-02-29", "1900-03-01", "2024-12-31", "0001-01-01", "9999-12-31"]) {
    assert.equal(dates.format(dates.fromDays(dates.toDays(dates.parse(text)!))), text);
  }
  assert.equal(dates.parse("2023-02-29"), undefined);
  assert.equal(dates.toDays({ year: 2000, month: 3, day: 1 }) - dates.toDays({ year: 2000, month: 2, day: 28 }), 2);
});

test("info, diff and add answer like a calendar", async () => {
  testing.reset();
  const info = await testing.call(calendar, { op: "info", date: "2021-01-03" });
  assert.deepEqual(info.ok, {
    date: "2021-01-03", weekday: "sunday", iso_week: 53, iso_week_year: 2020, day_of_year: 3, quarter: 1,
    leap_year: false, days_in_month: 31,
  });
  const diff = await testing.call(calendar, { op: "diff", from: "2024-03-01", to: "2024-03-15" });
  assert.deepEqual(diff.ok, { days: 14, weeks: 2, business_days: 10 });
  const month = await testing.call(calendar, { op: "add", date: "2024-01-31", amount: 1, unit: "months" });
  assert.equal(month.ok.date, "2024-02-29");
  const friday = await testing.call(calendar, { op: "add", date: "2024-03-01", amount: 5, unit: "business_days" });
  assert.equal(friday.ok.date, "2024-03-08");
});

test("a date that is not on the calendar is an invalid input naming the field", async () => {
  testing.reset();
  const out = await testing.call(calendar, { op: "diff", from: "2023-02-29", to: "2023-03-01" });
  assert.deepEqual(out.err, { tag: "invalid-input", val: "at `from`: 2023-02-29 is not a calendar date" });
});

test("events stay in the session's state and come back in date order", async () => {
  testing.reset();
  await testing.call(calendar, { op: "add_event", title: "review", date: "2024-05-10" });
  await testing.call(calendar, { op: "add_event", title: "launch", date: "2024-05-02" });
  const upcoming = await testing.call(calendar, { op: "upcoming", from: "2024-05-01", days: 7 });
  assert.deepEqual(upcoming.ok.events, [{ title: "launch", date: "2024-05-02", in_days: 1 }]);
  assert.match(testing.snapshot(calendar)!, /"review"/);
});
