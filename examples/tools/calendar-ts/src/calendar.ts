// A toolhost tool in TypeScript: date arithmetic (differences, business days, adding days to
// months, ISO weeks) and a list of events kept in the session's memory, which the host
// snapshots after each step, so a resumed session still has them.

import { defineTool, InvalidInput, log, t } from "@toolhost/tool";

import * as dates from "./dates.js";

const date = (doc: string) => t.string({ pattern: "^\\d{4}-\\d{2}-\\d{2}$" }).describe(doc);

const Info = t.object({ op: t.literal("info"), date: date("The date, YYYY-MM-DD.") });
const Diff = t.object({
  op: t.literal("diff"),
  from: date("The start date, YYYY-MM-DD."),
  to: date("The end date, YYYY-MM-DD (exclusive)."),
});
const Add = t.object({
  op: t.literal("add"),
  date: date("The date to start from, YYYY-MM-DD."),
  amount: t.integer({ minimum: -1_000_000, maximum: 1_000_000 }).describe("How many units to add (negative: subtract)."),
  unit: t.enum(["days", "weeks", "months", "years", "business_days"]).default("days"),
});
const AddEvent = t.object({
  op: t.literal("add_event"),
  title: t.string({ minLength: 1, maxLength: 200 }),
  date: date("When, YYYY-MM-DD."),
});
const Upcoming = t.object({
  op: t.literal("upcoming"),
  from: date("List events on or after this date, YYYY-MM-DD."),
  days: t.integer({ minimum: 1, maximum: 36_600 }).default(30).describe("How many days ahead to look."),
});

const Event = t.object({ title: t.string(), date: t.string() });
const Events = t.object({ events: t.array(Event) });

const MAX_EVENTS = 10_000;

/** The civil date in the field `field`, or an `InvalidInput` naming it. */
function civil(text: string, field: string): dates.Civil {
  const parsed = dates.parse(text);
  if (parsed === undefined) throw new InvalidInput(`at \`${field}\`: ${text} is not a calendar date`);
  return parsed;
}

function info(text: string) {
  const date = civil(text, "date");
  const days = dates.toDays(date);
  const week = dates.isoWeek(date);
  return {
    date: dates.format(date),
    weekday: dates.WEEKDAYS[dates.weekdayIndex(days)],
    iso_week: week.week,
    iso_week_year: week.year,
    day_of_year: days - dates.toDays({ year: date.year, month: 1, day: 1 }) + 1,
    quarter: Math.ceil(date.month / 3),
    leap_year: dates.isLeap(date.year),
    days_in_month: dates.daysInMonth(date.year, date.month),
  };
}

function add(start: dates.Civil, amount: number, unit: string): dates.Civil {
  const days = dates.toDays(start);
  switch (unit) {
    case "weeks":
      return dates.fromDays(days + 7 * amount);
    case "months":
      return dates.addMonths(start, amount);
    case "years":
      return dates.addMonths(start, 12 * amount);
    case "business_days": {
      let d = days;
      const step = amount >= 0 ? 1 : -1;
      for (let left = Math.abs(amount); left > 0; ) {
        d += step;
        if (dates.weekdayIndex(d) < 5) left--;
      }
      return dates.fromDays(d);
    }
    default:
      return dates.fromDays(days + amount);
  }
}

export default defineTool({
  name: "calendar",
  description:
    "Calendar arithmetic on YYYY-MM-DD dates (weekday, ISO week, differences in days and business days, " +
    "adding days, weeks, months or business days) and a list of the session's events.",
  version: "0.1.0",
  input: t.union(Info, Diff, Add, AddEvent, Upcoming),
  state: { schema: Events, initial: () => ({ events: [] }) },
  call(input, { state }) {
    switch (input.op) {
      case "info":
        return info(input.date);
      case "diff": {
        const from = dates.toDays(civil(input.from, "from"));
        const to = dates.toDays(civil(input.to, "to"));
        return { days: to - from, weeks: (to - from) / 7, business_days: dates.businessDaysBetween(from, to) };
      }
      case "add": {
        const result = add(civil(input.date, "date"), input.amount, input.unit);
        if (result.year < 1 || result.year > 9999) throw new InvalidInput("at `amount`: the result is outside years 1-9999");
        return info(dates.format(result));
      }
      case "add_event": {
        if (state.events.length >= MAX_EVENTS) throw new InvalidInput(`at most ${MAX_EVENTS} events`);
        const when = dates.format(civil(input.date, "date"));
        state.events.push({ title: input.title, date: when });
        state.events.sort((a, b) => a.date.localeCompare(b.date));
        log.info(`event ${JSON.stringify(input.title)} on ${when}`);
        return { events: state.events.length };
      }
      case "upcoming": {
        const from = dates.toDays(civil(input.from, "from"));
        const until = from + input.days;
        const events = state.events.filter((e) => {
          const d = dates.toDays(dates.parse(e.date)!);
          return d >= from && d < until;
        });
        return { events: events.map((e) => ({ ...e, in_days: dates.toDays(dates.parse(e.date)!) - from })) };
      }
    }
  },
});
