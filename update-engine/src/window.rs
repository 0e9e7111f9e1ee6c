//! Maintenance windows for the reboot strategy: `DAYS HH:MM for DURATION`.
//!
//! Pure functions of unix time (seconds, **UTC**): parsing, "is this
//! instant inside a window", "when does the next window open".
//!
//! Grammar (words separated by whitespace, case-insensitive):
//!
//! ```text
//! window   = days " " time " for " duration
//! days     = "daily" | "*" | item ("," item)*
//! item     = day | day "-" day          (a range may wrap: Fri-Mon)
//! day      = Mon | Tue | Wed | Thu | Fri | Sat | Sun  (or the full name)
//! time     = H:MM or HH:MM, 00:00 .. 23:59, UTC
//! duration = [N "d"] [N "h"] [N "m"], at least one part, 1 minute .. 7 days
//! ```
//!
//! Examples: `Sat 02:00 for 2h`, `Mon-Fri 23:30 for 1h30m`,
//! `Mon,Wed 04:00 for 45m`, `daily 03:00 for 1h`. A window that starts on
//! one day and runs past midnight belongs to the day it starts on:
//! `Sun 23:00 for 2h` is open from Sunday 23:00 to Monday 01:00.

use std::fmt;

/// Seconds per day.
const DAY: u64 = 86_400;
/// Longest window.
const MAX_DURATION: u64 = 7 * DAY;

const DAY_NAMES: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const FULL_NAMES: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

const GRAMMAR: &str = "expected \"DAYS HH:MM for DURATION\" in UTC, e.g. \"Sat 02:00 for 2h\", \"Mon-Fri 23:30 for 1h30m\", \"Mon,Wed 04:00 for 45m\" or \"daily 03:00 for 1h\"";

/// Why a window string was refused; every variant names the string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("reboot window {input:?}: {GRAMMAR}")]
    Shape { input: String },
    #[error("reboot window {input:?}: unknown day {day:?} (use Mon, Tue, Wed, Thu, Fri, Sat, Sun, a list like Mon,Wed, a range like Mon-Fri, or daily / *)")]
    Day { input: String, day: String },
    #[error("reboot window {input:?}: bad time {time:?} (HH:MM from 00:00 to 23:59, UTC)")]
    Time { input: String, time: String },
    #[error("reboot window {input:?}: bad duration {duration:?} (like 30m, 2h, 1h30m or 1d)")]
    Duration { input: String, duration: String },
    #[error("reboot window {input:?}: duration {duration:?} must be between 1 minute and 7 days")]
    DurationRange { input: String, duration: String },
}

/// A weekly maintenance window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Bit `d` set: the window opens on weekday `d` (0 = Monday).
    days: u8,
    /// Opening time, minutes after midnight UTC.
    start_minute: u32,
    /// Length in seconds.
    duration: u64,
    /// The string it was parsed from, whitespace normalized.
    text: String,
}

/// Weekday of a day number since the epoch (0 = Monday; 1970-01-01 was a
/// Thursday).
pub fn weekday(day: u64) -> usize {
    ((day + 3) % 7) as usize
}

fn parse_day(word: &str) -> Option<usize> {
    let w = word.to_ascii_lowercase();
    DAY_NAMES
        .iter()
        .position(|d| d.eq_ignore_ascii_case(&w))
        .or_else(|| FULL_NAMES.iter().position(|d| *d == w))
}

fn parse_days(input: &str, s: &str) -> Result<u8, WindowError> {
    let bad = |day: &str| WindowError::Day {
        input: input.to_string(),
        day: day.to_string(),
    };
    if s == "*" || s.eq_ignore_ascii_case("daily") {
        return Ok(0x7f);
    }
    let mut days = 0u8;
    for item in s.split(',') {
        match item.split_once('-') {
            Some((a, b)) => {
                let a = parse_day(a).ok_or_else(|| bad(item))?;
                let b = parse_day(b).ok_or_else(|| bad(item))?;
                let mut d = a;
                loop {
                    days |= 1 << d;
                    if d == b {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
            None => days |= 1 << parse_day(item).ok_or_else(|| bad(item))?,
        }
    }
    Ok(days)
}

fn parse_time(input: &str, s: &str) -> Result<u32, WindowError> {
    let bad = || WindowError::Time {
        input: input.to_string(),
        time: s.to_string(),
    };
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    let digits = |x: &str, max_len: usize| {
        !x.is_empty() && x.len() <= max_len && x.bytes().all(|b| b.is_ascii_digit())
    };
    if !digits(h, 2) || !digits(m, 2) || m.len() != 2 {
        return Err(bad());
    }
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 23 || m > 59 {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

fn parse_duration(input: &str, s: &str) -> Result<u64, WindowError> {
    let bad = || WindowError::Duration {
        input: input.to_string(),
        duration: s.to_string(),
    };
    let mut rest = s;
    let mut total = 0u64;
    // Units must come in this order, each at most once.
    let mut allowed: &[(char, u64)] = &[('d', DAY), ('h', 3600), ('m', 60)];
    while !rest.is_empty() {
        let n_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        if n_len == 0 || n_len > 6 {
            return Err(bad());
        }
        let n: u64 = rest[..n_len].parse().map_err(|_| bad())?;
        let unit = rest[n_len..]
            .chars()
            .next()
            .map(|c| c.to_ascii_lowercase())
            .ok_or_else(bad)?;
        let at = allowed
            .iter()
            .position(|(u, _)| *u == unit)
            .ok_or_else(bad)?;
        total = total.saturating_add(n.saturating_mul(allowed[at].1));
        allowed = &allowed[at + 1..];
        rest = &rest[n_len + 1..];
    }
    if s.is_empty() {
        return Err(bad());
    }
    if !(60..=MAX_DURATION).contains(&total) {
        return Err(WindowError::DurationRange {
            input: input.to_string(),
            duration: s.to_string(),
        });
    }
    Ok(total)
}

impl Window {
    /// Parses `DAYS HH:MM for DURATION` (see the module documentation).
    pub fn parse(input: &str) -> Result<Window, WindowError> {
        let words: Vec<&str> = input.split_whitespace().collect();
        let [days, time, word_for, duration] = words[..] else {
            return Err(WindowError::Shape {
                input: input.to_string(),
            });
        };
        if !word_for.eq_ignore_ascii_case("for") {
            return Err(WindowError::Shape {
                input: input.to_string(),
            });
        }
        Ok(Window {
            days: parse_days(input, days)?,
            start_minute: parse_time(input, time)?,
            duration: parse_duration(input, duration)?,
            text: words.join(" "),
        })
    }

    /// Length of the window in seconds.
    pub fn duration(&self) -> u64 {
        self.duration
    }

    fn opens_on(&self, day: u64) -> bool {
        self.days & (1 << weekday(day)) != 0
    }

    fn start_on(&self, day: u64) -> u64 {
        day * DAY + u64::from(self.start_minute) * 60
    }

    /// The window open at `now` as `(opened, closes)`, if any. When
    /// windows overlap (a duration longer than the gap between two
    /// openings) the latest opening is returned.
    pub fn current(&self, now: u64) -> Option<(u64, u64)> {
        let today = now / DAY;
        // A window that opened up to `duration` ago may still be open.
        for back in 0..=(self.duration / DAY + 1) {
            let Some(day) = today.checked_sub(back) else {
                break;
            };
            if !self.opens_on(day) {
                continue;
            }
            let start = self.start_on(day);
            let end = start.saturating_add(self.duration);
            if start <= now && now < end {
                return Some((start, end));
            }
        }
        None
    }

    /// Whether `now` is inside a window.
    pub fn contains(&self, now: u64) -> bool {
        self.current(now).is_some()
    }

    /// The first opening at or after `now`.
    pub fn next_start(&self, now: u64) -> u64 {
        let today = now / DAY;
        for ahead in 0..=7 {
            let day = today + ahead;
            if self.opens_on(day) && self.start_on(day) >= now {
                return self.start_on(day);
            }
        }
        // Unreachable for a parsed window (at least one day is set, so
        // the same weekday a week later qualifies).
        now
    }

    /// Seconds to wait until a window is open: 0 inside one.
    pub fn wait(&self, now: u64) -> u64 {
        if self.contains(now) {
            0
        } else {
            self.next_start(now).saturating_sub(now)
        }
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for Window {
    type Err = WindowError;
    fn from_str(s: &str) -> Result<Window, WindowError> {
        Window::parse(s)
    }
}

/// `2026-05-02 02:00 UTC (Sat)` for a unix time.
pub fn format_utc(t: u64) -> String {
    let day = t / DAY;
    let secs = t % DAY;
    let (y, m, d) = civil_from_days(day);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC ({})",
        secs / 3600,
        secs % 3600 / 60,
        DAY_NAMES[weekday(day)]
    )
}

/// `1d 3h 5m`, `2h`, `45m`, `30s` for a number of seconds.
pub fn format_duration(secs: u64) -> String {
    if secs < 60 {
        return format!("{secs}s");
    }
    let (d, h, m) = (secs / DAY, secs % DAY / 3600, secs % 3600 / 60);
    let mut parts = Vec::new();
    if d > 0 {
        parts.push(format!("{d}d"));
    }
    if h > 0 {
        parts.push(format!("{h}h"));
    }
    if m > 0 {
        parts.push(format!("{m}m"));
    }
    parts.join(" ")
}

/// Year, month, day of a day number since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for days after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix time of a UTC date and time (inverse of `civil_from_days`).
    fn at(y: u64, m: u64, d: u64, hh: u64, mm: u64) -> u64 {
        let y = if m <= 2 { y - 1 } else { y };
        let era = y / 400;
        let yoe = y - era * 400;
        let mp = if m > 2 { m - 3 } else { m + 9 };
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        days * DAY + hh * 3600 + mm * 60
    }

    // 2024-01-06 was a Saturday (`date -u -d 2024-01-06 +%s`).
    const SAT: u64 = 1_704_499_200;

    #[test]
    fn calendar_helpers_agree_with_date() {
        assert_eq!(at(2024, 1, 6, 0, 0), SAT);
        assert_eq!(weekday(SAT / DAY), 5);
        assert_eq!(weekday(0), 3); // 1970-01-01, a Thursday
        assert_eq!(format_utc(SAT + 2 * 3600), "2024-01-06 02:00 UTC (Sat)");
        assert_eq!(
            format_utc(at(2024, 2, 29, 23, 59)),
            "2024-02-29 23:59 UTC (Thu)"
        );
        assert_eq!(format_duration(DAY + 3 * 3600 + 5 * 60), "1d 3h 5m");
        assert_eq!(format_duration(7200), "2h");
        assert_eq!(format_duration(59), "59s");
    }

    #[test]
    fn parses_the_grammar() {
        let w = Window::parse("Sat 02:00 for 2h").unwrap();
        assert_eq!((w.days, w.start_minute, w.duration), (1 << 5, 120, 7200));
        assert_eq!(w.to_string(), "Sat 02:00 for 2h");
        let w = Window::parse("  mon-FRI   23:30 FOR 1h30m ").unwrap();
        assert_eq!((w.days, w.start_minute, w.duration), (0x1f, 1410, 5400));
        assert_eq!(w.to_string(), "mon-FRI 23:30 FOR 1h30m");
        let w = Window::parse("Mon,Wed,Sunday 4:05 for 45m").unwrap();
        assert_eq!((w.days, w.start_minute), (1 | 4 | 64, 245));
        assert_eq!(Window::parse("daily 00:00 for 1d").unwrap().days, 0x7f);
        assert_eq!(Window::parse("* 00:00 for 90m").unwrap().duration, 5400);
        // A range wraps over the week end.
        assert_eq!(
            Window::parse("Fri-Mon 01:00 for 1h").unwrap().days,
            1 | 1 << 4 | 1 << 5 | 1 << 6
        );
        assert_eq!(Window::parse("Wed,Mon-Tue 01:00 for 1h").unwrap().days, 7);
    }

    #[test]
    fn bad_strings_name_the_string_and_the_part() {
        let cases: &[(&str, &str)] = &[
            ("", "expected \"DAYS HH:MM for DURATION\""),
            ("Sat 02:00", "expected \"DAYS HH:MM for DURATION\""),
            (
                "Sat 02:00 during 2h",
                "expected \"DAYS HH:MM for DURATION\"",
            ),
            (
                "Sat 02:00 for 2h extra",
                "expected \"DAYS HH:MM for DURATION\"",
            ),
            ("Sta 02:00 for 2h", "unknown day \"Sta\""),
            ("Mon-Fry 02:00 for 2h", "unknown day \"Mon-Fry\""),
            ("Mon,,Tue 02:00 for 2h", "unknown day \"\""),
            ("Sat 24:00 for 2h", "bad time \"24:00\""),
            ("Sat 2:5 for 2h", "bad time \"2:5\""),
            ("Sat 0200 for 2h", "bad time \"0200\""),
            ("Sat 02:00 for 2", "bad duration \"2\""),
            ("Sat 02:00 for 2x", "bad duration \"2x\""),
            ("Sat 02:00 for 30m2h", "bad duration \"30m2h\""),
            ("Sat 02:00 for h", "bad duration \"h\""),
            ("Sat 02:00 for 0m", "must be between 1 minute and 7 days"),
            ("Sat 02:00 for 8d", "must be between 1 minute and 7 days"),
        ];
        for (input, want) in cases {
            let e = Window::parse(input).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("reboot window {input:?}: ")),
                "{input:?}: {e}"
            );
            assert!(e.contains(want), "{input:?}: {e}");
        }
    }

    #[test]
    fn next_start_and_inside() {
        let w = Window::parse("Sat 02:00 for 2h").unwrap();
        let open = at(2024, 1, 6, 2, 0);
        // Before: waits until Saturday 02:00.
        assert_eq!(w.next_start(at(2024, 1, 3, 12, 0)), open);
        assert_eq!(w.wait(at(2024, 1, 6, 1, 0)), 3600);
        // Open right now, at the first second and the last.
        assert_eq!(w.current(open), Some((open, open + 7200)));
        assert!(w.contains(open + 7199));
        assert_eq!(w.wait(open + 60), 0);
        // Closed at the end: the next one is a week later.
        assert!(!w.contains(open + 7200));
        assert_eq!(w.next_start(open + 7200), open + 7 * DAY);
        assert_eq!(w.wait(open + 7200), 7 * DAY - 7200);
        // next_start of an opening instant is that instant.
        assert_eq!(w.next_start(open), open);
    }

    #[test]
    fn windows_crossing_midnight_and_the_week_end() {
        // Sunday 23:00 to Monday 01:00: crosses midnight and the week end.
        let w = Window::parse("Sun 23:00 for 2h").unwrap();
        let sun = at(2024, 1, 7, 23, 0);
        assert_eq!(weekday(sun / DAY), 6);
        assert!(w.contains(at(2024, 1, 7, 23, 30)));
        assert!(w.contains(at(2024, 1, 8, 0, 59)));
        assert_eq!(w.current(at(2024, 1, 8, 0, 30)), Some((sun, sun + 7200)));
        assert!(!w.contains(at(2024, 1, 8, 1, 0)));
        assert!(!w.contains(at(2024, 1, 7, 22, 59)));
        // On Monday morning after it closed, the next is next Sunday.
        assert_eq!(w.next_start(at(2024, 1, 8, 1, 0)), at(2024, 1, 14, 23, 0));
        // From Saturday, it is tomorrow evening.
        assert_eq!(w.next_start(at(2024, 1, 6, 12, 0)), sun);

        // Weekdays late at night: Friday's window runs into Saturday, but
        // none opens on Saturday or Sunday.
        let w = Window::parse("Mon-Fri 23:30 for 1h").unwrap();
        assert!(w.contains(at(2024, 1, 6, 0, 15))); // Saturday 00:15, from Friday
        assert!(!w.contains(at(2024, 1, 6, 23, 45))); // Saturday night
        assert!(!w.contains(at(2024, 1, 7, 0, 15))); // Sunday 00:15
        assert_eq!(w.next_start(at(2024, 1, 6, 1, 0)), at(2024, 1, 8, 23, 30));

        // A multi-day window: Saturday 22:00 for 2 days.
        let w = Window::parse("Sat 22:00 for 2d").unwrap();
        assert!(w.contains(at(2024, 1, 8, 21, 59)));
        assert!(!w.contains(at(2024, 1, 8, 22, 0)));
        assert!(!w.contains(at(2024, 1, 6, 21, 59)));

        // Daily windows.
        let w = Window::parse("daily 03:00 for 30m").unwrap();
        assert_eq!(w.next_start(at(2024, 1, 6, 3, 30)), at(2024, 1, 7, 3, 0));
        assert_eq!(w.wait(at(2024, 1, 6, 2, 0)), 3600);
        // Always open.
        let w = Window::parse("* 00:00 for 1d").unwrap();
        assert!((0..48).all(|h| w.contains(SAT + h * 1800)));
    }

    #[test]
    fn near_the_epoch() {
        let w = Window::parse("Thu 00:00 for 1h").unwrap();
        assert!(w.contains(0));
        assert_eq!(w.current(10), Some((0, 3600)));
        assert_eq!(w.next_start(3600), 7 * DAY);
    }
}
