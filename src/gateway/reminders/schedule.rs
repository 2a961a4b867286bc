//! Reminders, the pure part: reading when a reminder is due ("in 2 hours", "tomorrow 08:00",
//! an ISO time) in the person's time zone, the limits every reminder is held to, which
//! reminders are due, and what is left of one once delivered. The clock is always passed in.

use std::time::Duration;

use jiff::civil::{DateTime, Time};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan, Zoned};

use crate::crd::{Reminder, ReminderBook};

/// What one person's reminders are held to, by the gateway (an agent may ask for anything).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Reminders waiting at once (a repeating one counts once).
    pub max_pending: usize,
    /// The shortest interval a repeating reminder may have.
    pub min_repeat: Duration,
    /// How far ahead a reminder may be set.
    pub max_horizon: Duration,
    /// Characters of a reminder's text.
    pub max_text: usize,
}

pub const LIMITS: Limits = Limits {
    max_pending: 20,
    min_repeat: Duration::from_secs(3600),
    max_horizon: Duration::from_secs(366 * 24 * 3600),
    max_text: 500,
};

/// How a reminder repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat {
    /// Every day at the same local time (kept across daylight-saving changes).
    Daily,
    /// Every week, same weekday and local time.
    Weekly,
    /// Every so long, by the clock.
    Every(Duration),
}

impl Repeat {
    /// `daily`, `weekly`, `every 12h`, `12h`; `none`, `once` or empty is no repeat.
    pub fn parse(text: &str) -> Result<Option<Repeat>, String> {
        let text = text.trim().to_ascii_lowercase();
        match text.as_str() {
            "" | "none" | "once" | "no" => Ok(None),
            "daily" | "every day" | "day" => Ok(Some(Repeat::Daily)),
            "weekly" | "every week" | "week" => Ok(Some(Repeat::Weekly)),
            other => {
                let interval = other.strip_prefix("every").unwrap_or(other).trim();
                crate::duration::parse(interval).map(|d| Some(Repeat::Every(d))).map_err(|_| {
                    format!("repeat {text:?} is not understood: use daily, weekly or an interval such as \"every 12h\"")
                })
            }
        }
    }

    /// The canonical form, as stored and shown.
    pub fn as_text(self) -> String {
        match self {
            Repeat::Daily => "daily".into(),
            Repeat::Weekly => "weekly".into(),
            Repeat::Every(d) => format!("every {}", humantime::format_duration(d)),
        }
    }

    fn interval(self) -> Duration {
        match self {
            Repeat::Daily => Duration::from_secs(24 * 3600),
            Repeat::Weekly => Duration::from_secs(7 * 24 * 3600),
            Repeat::Every(d) => d,
        }
    }

    /// The occurrence after `at`, in `zone` (daily and weekly keep the local time).
    fn after(self, at: &Zoned) -> Option<Zoned> {
        match self {
            Repeat::Daily => at.checked_add(1.day()).ok(),
            Repeat::Weekly => at.checked_add(1.week()).ok(),
            Repeat::Every(d) => {
                let d = jiff::SignedDuration::try_from(d).ok()?;
                at.timestamp().checked_add(d).ok().map(|t| t.to_zoned(at.time_zone().clone()))
            }
        }
    }
}

/// The zone's name as the time zone database spells it (`europe/berlin` is `Europe/Berlin`).
pub fn canonical_name(zone: &TimeZone, given: &str) -> String {
    zone.iana_name().unwrap_or(given.trim()).to_string()
}

/// The time zone by its IANA name, or what to tell the person.
pub fn time_zone(name: &str) -> Result<TimeZone, String> {
    let name = name.trim();
    if name.is_empty() || name.len() > 64 {
        return Err("a time zone is a name such as Europe/Berlin, America/New_York or UTC".into());
    }
    TimeZone::get(name).map_err(|_| {
        format!("{name:?} is not a time zone I know; use a name such as Europe/Berlin, America/New_York or UTC")
    })
}

/// The person's time zone: their own choice (`/timezone`), else the spec's, else UTC. A name
/// that no longer reads as a zone (a typo in the spec) falls back to UTC.
pub fn effective_zone(chosen: Option<&str>, spec: Option<&str>) -> (String, TimeZone) {
    for name in [chosen, spec].into_iter().flatten() {
        if let Ok(zone) = time_zone(name) {
            return (name.trim().to_string(), zone);
        }
    }
    ("UTC".into(), TimeZone::UTC)
}

/// When `text` means, seen at `now` by someone in `zone`: `in 2 hours`, `in 30m`, an RFC 3339
/// time (`2026-12-04T08:00:00Z`, `...+01:00`), a local date and time (`2026-12-04 08:00`),
/// `today 18:00`, `tomorrow 08:00`, or a bare `08:00` (its next occurrence).
pub fn resolve_when(text: &str, now: Timestamp, zone: &TimeZone) -> Result<Timestamp, String> {
    let raw = text.trim();
    let lower = raw.to_ascii_lowercase();
    let hint = "use \"in 2 hours\", \"tomorrow 08:00\", \"2026-12-04 08:00\" or an ISO time with offset";
    if lower.is_empty() {
        return Err(format!("no time given; {hint}"));
    }
    if let Some(after) = lower.strip_prefix("in ") {
        let d = crate::duration::parse(after.trim()).map_err(|_| format!("{raw:?} is not a time; {hint}"))?;
        let d = jiff::SignedDuration::try_from(d).map_err(|_| format!("{raw:?} is too far ahead"))?;
        return now.checked_add(d).map_err(|_| format!("{raw:?} is too far ahead"));
    }
    if let Ok(at) = raw.parse::<Timestamp>() {
        return Ok(at);
    }
    if let Ok(zoned) = raw.parse::<Zoned>() {
        return Ok(zoned.timestamp());
    }
    let local =
        |dt: DateTime| zone.to_ambiguous_zoned(dt).compatible().map(|z| z.timestamp()).map_err(|e| e.to_string());
    if let Ok(dt) = raw.parse::<DateTime>() {
        return local(dt);
    }
    let today = now.to_zoned(zone.clone()).date();
    let day_and_time = |rest: &str, day: jiff::civil::Date| -> Result<Timestamp, String> {
        let rest = rest.trim().trim_start_matches("at").trim();
        let time = if rest.is_empty() { Ok(Time::midnight()) } else { parse_time(rest) };
        local(day.to_datetime(time.map_err(|_| format!("{raw:?} is not a time; {hint}"))?))
    };
    if let Some(rest) = lower.strip_prefix("tomorrow") {
        let day = today.tomorrow().map_err(|e| e.to_string())?;
        return day_and_time(rest, day);
    }
    if let Some(rest) = lower.strip_prefix("today") {
        return day_and_time(rest, today);
    }
    if let Ok(time) = parse_time(lower.trim_start_matches("at").trim()) {
        let at = local(today.to_datetime(time))?;
        if at > now {
            return Ok(at);
        }
        return local(today.tomorrow().map_err(|e| e.to_string())?.to_datetime(time));
    }
    Err(format!("{raw:?} is not a time; {hint}"))
}

/// `08:00`, `8:30`, `18:00:30`, or a bare hour `8`.
fn parse_time(text: &str) -> Result<Time, ()> {
    let text = text.trim();
    if let Ok(hour) = text.parse::<i8>() {
        return Time::new(hour, 0, 0, 0).map_err(drop);
    }
    let padded = if text.find(':') == Some(1) { format!("0{text}") } else { text.to_string() };
    padded.parse::<Time>().map_err(drop)
}

/// What an agent asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub text: String,
    pub when: String,
    pub repeat: Option<String>,
}

/// Add a reminder to `book` if the limits allow it; the reminder as stored.
pub fn add(
    book: &mut ReminderBook,
    request: &Request,
    now: Timestamp,
    zone_name: &str,
    zone: &TimeZone,
    limits: &Limits,
) -> Result<Reminder, String> {
    let text = request.text.trim();
    if text.is_empty() {
        return Err("the reminder has no text".into());
    }
    if text.chars().count() > limits.max_text {
        return Err(format!("a reminder's text is at most {} characters", limits.max_text));
    }
    if book.pending.len() >= limits.max_pending {
        return Err(format!(
            "there are {} pending reminders already, the most allowed; cancel one first",
            book.pending.len()
        ));
    }
    let due = resolve_when(&request.when, now, zone)?;
    if due <= now {
        let shown = due.to_zoned(zone.clone()).strftime("%Y-%m-%d %H:%M");
        return Err(format!("{shown} ({zone_name}) is in the past; give a time still to come"));
    }
    let horizon = jiff::SignedDuration::try_from(limits.max_horizon).unwrap_or(jiff::SignedDuration::MAX);
    if now.checked_add(horizon).is_ok_and(|last| due > last) {
        return Err(format!("a reminder may be set at most {} days ahead", limits.max_horizon.as_secs() / 86_400));
    }
    let repeat = match request.repeat.as_deref() {
        Some(text) => Repeat::parse(text)?,
        None => None,
    };
    if let Some(repeat) = repeat
        && repeat.interval() < limits.min_repeat
    {
        return Err(format!("a reminder may repeat at most every {}", humantime::format_duration(limits.min_repeat)));
    }
    let id = book.next_id.max(1 + book.pending.iter().map(|r| r.id).max().unwrap_or(0));
    book.next_id = id + 1;
    let reminder = Reminder {
        id,
        text: text.to_string(),
        due: due.to_string(),
        repeat: repeat.map(Repeat::as_text),
        timezone: zone_name.to_string(),
    };
    book.pending.push(reminder.clone());
    book.pending.sort_by_key(|r| (due_of(r), r.id));
    Ok(reminder)
}

/// Remove reminder `id`; the removed one, or what to tell the person.
pub fn cancel(book: &mut ReminderBook, id: u64) -> Result<Reminder, String> {
    let at = book.pending.iter().position(|r| r.id == id).ok_or_else(|| {
        if book.pending.is_empty() {
            format!("there is no reminder #{id}: none is pending")
        } else {
            let ids: Vec<String> = book.pending.iter().map(|r| format!("#{}", r.id)).collect();
            format!("there is no reminder #{id}; the pending ones are {}", ids.join(", "))
        }
    })?;
    Ok(book.pending.remove(at))
}

/// When a stored reminder is due; one whose time does not read (edited by hand) is due now,
/// so it is delivered and leaves rather than sitting there for ever.
pub fn due_of(reminder: &Reminder) -> Timestamp {
    reminder.due.parse().unwrap_or(Timestamp::UNIX_EPOCH)
}

/// One occurrence of a reminder: the key the delivery is recorded under.
pub fn occurrence_key(reminder: &Reminder) -> String {
    format!("{}@{}", reminder.id, reminder.due)
}

/// The reminders due at `now`, earliest first.
pub fn due(book: &ReminderBook, now: Timestamp) -> Vec<Reminder> {
    let mut due: Vec<Reminder> = book.pending.iter().filter(|r| due_of(r) <= now).cloned().collect();
    due.sort_by_key(|r| (due_of(r), r.id));
    due
}

/// The occurrence `key` was delivered at `now`: a one-off reminder goes, a repeating one moves
/// to its next time after `now` (occurrences missed while no gateway ran are not made up one
/// by one). False when that occurrence is not pending (delivered and recorded already).
pub fn delivered(book: &mut ReminderBook, key: &str, now: Timestamp) -> bool {
    let Some(at) = book.pending.iter().position(|r| occurrence_key(r) == key) else { return false };
    let reminder = &book.pending[at];
    let repeat = reminder.repeat.as_deref().and_then(|r| Repeat::parse(r).ok().flatten());
    let next = repeat.and_then(|repeat| {
        let (_, zone) = effective_zone(Some(&reminder.timezone), None);
        let mut at = due_of(reminder).to_zoned(zone);
        while at.timestamp() <= now {
            at = repeat.after(&at)?;
        }
        Some(at.timestamp())
    });
    match next {
        Some(next) => book.pending[at].due = next.to_string(),
        None => drop(book.pending.remove(at)),
    }
    book.pending.sort_by_key(|r| (due_of(r), r.id));
    true
}

/// A reminder as the person and the model read it: `#3 Fri 2026-12-04 08:00 (Europe/Berlin),
/// daily: call mum`.
pub fn describe(reminder: &Reminder, zone: &TimeZone, zone_name: &str) -> String {
    let at = due_of(reminder).to_zoned(zone.clone()).strftime("%a %Y-%m-%d %H:%M");
    let repeat = reminder.repeat.as_deref().map(|r| format!(", {r}")).unwrap_or_default();
    format!("#{} {at} ({zone_name}){repeat}: {}", reminder.id, reminder.text)
}

/// What the person gets at the due time.
pub fn message(reminder: &Reminder) -> String {
    format!("⏰ Reminder: {}", reminder.text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Thursday 2026-12-03, 19:00 UTC (20:00 in Berlin).
    fn now() -> Timestamp {
        "2026-12-03T19:00:00Z".parse().unwrap()
    }

    fn berlin() -> TimeZone {
        time_zone("Europe/Berlin").unwrap()
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn times_read_in_the_persons_zone() {
        let cases = [
            ("in 2 hours", "2026-12-03T21:00:00Z"),
            ("in 90s", "2026-12-03T19:01:30Z"),
            ("IN 1h30m", "2026-12-03T20:30:00Z"),
            ("2026-12-04T08:00:00Z", "2026-12-04T08:00:00Z"),
            ("2026-12-04T08:00:00+05:00", "2026-12-04T03:00:00Z"),
            ("2026-12-04T08:00", "2026-12-04T07:00:00Z"),
            ("2026-12-04 08:00", "2026-12-04T07:00:00Z"),
            ("tomorrow 08:00", "2026-12-04T07:00:00Z"),
            ("tomorrow at 8:30", "2026-12-04T07:30:00Z"),
            ("tomorrow 8", "2026-12-04T07:00:00Z"),
            ("today 23:00", "2026-12-03T22:00:00Z"),
            // 21:00 in Berlin is still to come today; 07:00 is tomorrow's.
            ("21:00", "2026-12-03T20:00:00Z"),
            ("07:00", "2026-12-04T06:00:00Z"),
            ("2026-12-04T08:00[America/New_York]", "2026-12-04T13:00:00Z"),
        ];
        for (text, expected) in cases {
            assert_eq!(resolve_when(text, now(), &berlin()), Ok(at(expected)), "{text}");
        }
        assert_eq!(resolve_when("tomorrow 08:00", now(), &TimeZone::UTC), Ok(at("2026-12-04T08:00:00Z")));
        for bad in ["", "soon", "in a while", "tomorrow at noonish", "25:00", "2026-13-01 08:00"] {
            let err = resolve_when(bad, now(), &berlin()).unwrap_err();
            assert!(err.contains("tomorrow 08:00"), "{bad}: {err}");
        }
    }

    #[test]
    fn zones_are_checked_and_the_persons_choice_wins() {
        assert!(time_zone("Europe/Berlin").is_ok() && time_zone("UTC").is_ok());
        let err = time_zone("Mars/Olympus").unwrap_err();
        assert!(err.contains("Mars/Olympus") && err.contains("Europe/Berlin"), "{err}");
        assert!(time_zone("").is_err());
        assert_eq!(canonical_name(&time_zone("europe/berlin").unwrap(), "europe/berlin"), "Europe/Berlin");
        assert_eq!(effective_zone(Some("Asia/Tokyo"), Some("Europe/Berlin")).0, "Asia/Tokyo");
        assert_eq!(effective_zone(None, Some("Europe/Berlin")).0, "Europe/Berlin");
        assert_eq!(effective_zone(None, Some("Not/AZone")).0, "UTC");
        assert_eq!(effective_zone(None, None).0, "UTC");
    }

    fn request(text: &str, when: &str, repeat: Option<&str>) -> Request {
        Request { text: text.into(), when: when.into(), repeat: repeat.map(str::to_string) }
    }

    #[test]
    fn limits_refuse_with_the_reason() {
        let mut book = ReminderBook::default();
        let add = |book: &mut ReminderBook, r: Request| add(book, &r, now(), "Europe/Berlin", &berlin(), &LIMITS);
        let first = add(&mut book, request("call mum", "tomorrow 08:00", None)).unwrap();
        assert_eq!((first.id, first.due.as_str()), (1, "2026-12-04T07:00:00Z"));
        let refusals = [
            (request("", "in 1h", None), "no text"),
            (request(&"x".repeat(501), "in 1h", None), "at most 500"),
            (request("late", "2026-12-03T18:00:00Z", None), "in the past"),
            (request("far", "in 400d", None), "at most 366 days ahead"),
            (request("often", "in 1h", Some("every 10m")), "at most every 1h"),
            (request("odd", "in 1h", Some("fortnightly-ish")), "daily, weekly"),
        ];
        for (r, why) in refusals {
            let err = add(&mut book, r.clone()).unwrap_err();
            assert!(err.contains(why), "{r:?}: {err}");
        }
        for i in 1..LIMITS.max_pending {
            add(&mut book, request(&format!("r{i}"), "in 2h", Some("daily"))).unwrap();
        }
        let err = add(&mut book, request("one more", "in 3h", None)).unwrap_err();
        assert!(err.contains("20 pending"), "{err}");
        cancel(&mut book, 1).unwrap();
        let again = add(&mut book, request("one more", "in 3h", None)).unwrap();
        assert_eq!(again.id, 21, "numbers are never reused");
        assert!(cancel(&mut book, 1).unwrap_err().contains("no reminder #1"));
    }

    #[test]
    fn due_and_delivered() {
        let mut book = ReminderBook::default();
        let zone = berlin();
        let once = add(&mut book, &request("tea", "in 1h", None), now(), "Europe/Berlin", &zone, &LIMITS).unwrap();
        let daily =
            add(&mut book, &request("pills", "tomorrow 08:00", Some("daily")), now(), "Europe/Berlin", &zone, &LIMITS)
                .unwrap();
        assert!(due(&book, now()).is_empty());
        let later = at("2026-12-03T20:00:00Z");
        assert_eq!(due(&book, later), vec![once.clone()]);
        assert!(delivered(&mut book, &occurrence_key(&once), later));
        assert!(!delivered(&mut book, &occurrence_key(&once), later), "recorded once");
        assert!(due(&book, later).is_empty());

        // The gateway was away for three days: one delivery, then the next 08:00 to come.
        let back = at("2026-12-07T09:00:00Z");
        assert_eq!(due(&book, back), vec![daily.clone()]);
        assert!(delivered(&mut book, &occurrence_key(&daily), back));
        assert_eq!(book.pending[0].due, "2026-12-08T07:00:00Z");
        assert!(!delivered(&mut book, &occurrence_key(&daily), back), "the old occurrence is gone");
    }

    #[test]
    fn a_daily_reminder_keeps_its_local_time_across_daylight_saving() {
        let zone = berlin();
        let mut book = ReminderBook::default();
        let start: Timestamp = "2026-03-28T12:00:00Z".parse().unwrap();
        let r =
            add(&mut book, &request("walk", "tomorrow 08:00", Some("daily")), start, "Europe/Berlin", &zone, &LIMITS)
                .unwrap();
        assert_eq!(r.due, "2026-03-29T06:00:00Z", "08:00 summer time");
        let mut next = book.clone();
        assert!(delivered(&mut next, &occurrence_key(&r), at("2026-03-29T06:00:01Z")));
        assert_eq!(next.pending[0].due, "2026-03-30T06:00:00Z");
        let before = book.clone();
        let mut winter = ReminderBook::default();
        let r = add(
            &mut winter,
            &request("walk", "2026-03-28 08:00", Some("daily")),
            at("2026-03-27T12:00:00Z"),
            "Europe/Berlin",
            &zone,
            &LIMITS,
        )
        .unwrap();
        assert_eq!(r.due, "2026-03-28T07:00:00Z", "08:00 winter time");
        assert!(delivered(&mut winter, &occurrence_key(&r), at("2026-03-28T07:00:01Z")));
        assert_eq!(winter.pending[0].due, "2026-03-29T06:00:00Z", "still 08:00 once the clocks change");
        assert_eq!(book, before);
    }

    #[test]
    fn repeats_read_and_print() {
        assert_eq!(Repeat::parse("Daily"), Ok(Some(Repeat::Daily)));
        assert_eq!(Repeat::parse("every week"), Ok(Some(Repeat::Weekly)));
        assert_eq!(Repeat::parse("every 12h"), Ok(Some(Repeat::Every(Duration::from_secs(43_200)))));
        assert_eq!(Repeat::parse(""), Ok(None));
        assert_eq!(Repeat::Every(Duration::from_secs(43_200)).as_text(), "every 12h");
        assert_eq!(
            Repeat::parse(&Repeat::Every(Duration::from_secs(5400)).as_text()),
            Ok(Some(Repeat::Every(Duration::from_secs(5400))))
        );
    }

    #[test]
    fn described_in_the_persons_zone() {
        let r = Reminder {
            id: 3,
            text: "call mum".into(),
            due: "2026-12-04T07:00:00Z".into(),
            repeat: Some("daily".into()),
            timezone: "Europe/Berlin".into(),
        };
        assert_eq!(
            describe(&r, &berlin(), "Europe/Berlin"),
            "#3 Fri 2026-12-04 08:00 (Europe/Berlin), daily: call mum"
        );
        assert_eq!(message(&r), "⏰ Reminder: call mum");
    }
}
