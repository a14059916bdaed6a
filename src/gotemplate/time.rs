//! Time for sprig's date functions: Go's layout formatting, durations, and IANA zones.
//!
//! A zone is its current rule as a POSIX TZ string (the footer tzdata writes into every zone file), kept in a
//! generated table: right for today's dates, which is what `now`-based templates print, at a few kilobytes
//! instead of the whole zone history. An unknown zone is UTC, as sprig's `dateInZone` makes it.

use super::value::Time;
use super::zones::{RULES, ZONES};

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];

/// The current time, UTC.
pub fn now() -> Time {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    Time { secs: d.as_secs() as i64, nanos: d.subsec_nanos(), offset: 0, zone: "UTC" }
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// The civil date of a day number: (year, month 1-12, day 1-31).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn is_leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

/// Local wall-clock fields of a time.
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    yday: u32,
    weekday: usize,
    hour: u32,
    min: u32,
    sec: u32,
}

fn civil(t: &Time) -> Civil {
    let local = t.secs + t.offset as i64;
    let days = local.div_euclid(86400);
    let rem = local.rem_euclid(86400);
    let (year, month, day) = civil_from_days(days);
    Civil {
        year,
        month,
        day,
        yday: (days - days_from_civil(year, 1, 1) + 1) as u32,
        weekday: (days + 4).rem_euclid(7) as usize,
        hour: (rem / 3600) as u32,
        min: (rem % 3600 / 60) as u32,
        sec: (rem % 60) as u32,
    }
}

/// The time in another zone (`Local` is UTC: a proxy-wasm VM has no local zone). Unknown zones are UTC.
pub fn in_zone(t: Time, zone: &str) -> Time {
    let utc = Time { offset: 0, zone: "UTC", ..t };
    if zone.is_empty() || zone == "UTC" || zone == "Local" {
        return utc;
    }
    let rule = ZONES
        .lines()
        .find_map(|line| line.strip_prefix(zone)?.strip_prefix(' ')?.parse::<usize>().ok())
        .and_then(|i| RULES.get(i))
        .and_then(|r| Posix::parse(r));
    let Some(rule) = rule else { return utc };
    let (offset, abbr) = rule.at(t.secs);
    Time { offset, zone: abbr, ..t }
}

/// A POSIX TZ rule such as `CET-1CEST,M3.5.0,M10.5.0/3`.
struct Posix {
    std: &'static str,
    std_off: i32,
    dst: Option<(&'static str, i32, Rule, i32, Rule, i32)>,
}

#[derive(Clone, Copy)]
enum Rule {
    /// `Mm.w.d`
    Month(u32, u32, u32),
    /// `Jn`: day 1-365, February 29 never counted.
    Julian(u32),
    /// `n`: day 0-365.
    Day(u32),
}

impl Posix {
    fn parse(s: &'static str) -> Option<Posix> {
        let mut p = s;
        let std = name(&mut p)?;
        let std_off = -offset(&mut p)?;
        if p.is_empty() {
            return Some(Posix { std, std_off, dst: None });
        }
        let dst_name = name(&mut p)?;
        let dst_off = if p.starts_with(',') { std_off + 3600 } else { -offset(&mut p)? };
        let p = p.strip_prefix(',')?;
        let (start, end) = p.split_once(',')?;
        let (r1, t1) = rule(start)?;
        let (r2, t2) = rule(end)?;
        Some(Posix { std, std_off, dst: Some((dst_name, dst_off, r1, t1, r2, t2)) })
    }

    /// The offset and abbreviation in force at a Unix time.
    fn at(&self, secs: i64) -> (i32, &'static str) {
        let Some((dst, dst_off, r1, t1, r2, t2)) = self.dst else { return (self.std_off, self.std) };
        let (year, _, _) = civil_from_days((secs + self.std_off as i64).div_euclid(86400));
        let start = rule_day(year, r1) * 86400 + t1 as i64 - self.std_off as i64;
        let end = rule_day(year, r2) * 86400 + t2 as i64 - dst_off as i64;
        let in_dst = if start < end { secs >= start && secs < end } else { !(secs >= end && secs < start) };
        if in_dst {
            (dst_off, dst)
        } else {
            (self.std_off, self.std)
        }
    }
}

fn name(p: &mut &'static str) -> Option<&'static str> {
    let s = *p;
    if let Some(rest) = s.strip_prefix('<') {
        let end = rest.find('>')?;
        *p = &rest[end + 1..];
        return Some(&rest[..end]);
    }
    let n = s.len() - s.trim_start_matches(|c: char| c.is_ascii_alphabetic()).len();
    if n < 3 {
        return None;
    }
    *p = &s[n..];
    Some(&s[..n])
}

/// `[+-]hh[:mm[:ss]]` in seconds.
fn offset(p: &mut &'static str) -> Option<i32> {
    let s = *p;
    let n = s.len() - s.trim_start_matches(|c: char| c.is_ascii_digit() || "+-:".contains(c)).len();
    *p = &s[n..];
    hms(&s[..n])
}

fn hms(s: &str) -> Option<i32> {
    let (sign, body) = match s.strip_prefix('-') {
        Some(b) => (-1, b),
        None => (1, s.strip_prefix('+').unwrap_or(s)),
    };
    let mut total = 0;
    for (k, part) in body.split(':').enumerate() {
        let v: i32 = part.parse().ok()?;
        total += v * [3600, 60, 1].get(k)?;
    }
    Some(sign * total)
}

fn rule(s: &str) -> Option<(Rule, i32)> {
    let (day, time) = match s.split_once('/') {
        Some((d, t)) => (d, hms(t)?),
        None => (s, 7200),
    };
    let r = if let Some(m) = day.strip_prefix('M') {
        let mut it = m.split('.').map(|x| x.parse::<u32>().ok());
        Rule::Month(it.next()??, it.next()??, it.next()??)
    } else if let Some(j) = day.strip_prefix('J') {
        Rule::Julian(j.parse().ok()?)
    } else {
        Rule::Day(day.parse().ok()?)
    };
    Some((r, time))
}

/// The day number (since 1970) a rule picks in a year.
fn rule_day(year: i64, r: Rule) -> i64 {
    let jan1 = days_from_civil(year, 1, 1);
    match r {
        Rule::Julian(n) => {
            let n = n.clamp(1, 365) as i64;
            jan1 + n - 1 + if is_leap(year) && n >= 60 { 1 } else { 0 }
        }
        Rule::Day(n) => jan1 + n.min(365) as i64,
        Rule::Month(m, w, d) => {
            let m = m.clamp(1, 12);
            let first = days_from_civil(year, m, 1);
            let first_wd = (first + 4).rem_euclid(7);
            let mut day = first + (d as i64 - first_wd).rem_euclid(7) + 7 * (w.clamp(1, 5) as i64 - 1);
            let next_month = if m == 12 { days_from_civil(year + 1, 1, 1) } else { days_from_civil(year, m + 1, 1) };
            while day >= next_month {
                day -= 7;
            }
            day
        }
    }
}

fn zone_offset(off: i32, colon: bool, seconds: bool, hours_only: bool) -> String {
    let sign = if off < 0 { '-' } else { '+' };
    let a = off.unsigned_abs();
    let (h, m, s) = (a / 3600, a % 3600 / 60, a % 60);
    let sep = if colon { ":" } else { "" };
    if hours_only {
        return format!("{sign}{h:02}");
    }
    if seconds {
        return format!("{sign}{h:02}{sep}{m:02}{sep}{s:02}");
    }
    format!("{sign}{h:02}{sep}{m:02}")
}

/// Formats a time with a Go layout (`2006-01-02 15:04:05`), as Go's `Time.Format` does.
pub fn format(t: &Time, layout: &str) -> String {
    let c = civil(t);
    let mut out = String::new();
    let mut rest = layout;
    while !rest.is_empty() {
        let (piece, n): (String, usize) = if rest.starts_with("January") {
            (MONTHS[(c.month - 1) as usize].into(), 7)
        } else if rest.starts_with("Jan") {
            (MONTHS[(c.month - 1) as usize][..3].into(), 3)
        } else if rest.starts_with("Monday") {
            (DAYS[c.weekday].into(), 6)
        } else if rest.starts_with("Mon") {
            (DAYS[c.weekday][..3].into(), 3)
        } else if rest.starts_with("MST") {
            let z = if t.zone.is_empty() || t.zone.starts_with(['+', '-']) {
                zone_offset(t.offset, false, false, t.offset % 3600 == 0)
            } else {
                t.zone.to_string()
            };
            (z, 3)
        } else if rest.starts_with("2006") {
            (format!("{:04}", c.year), 4)
        } else if rest.starts_with("002") {
            (format!("{:03}", c.yday), 3)
        } else if rest.starts_with("01") {
            (format!("{:02}", c.month), 2)
        } else if rest.starts_with("02") {
            (format!("{:02}", c.day), 2)
        } else if rest.starts_with("03") {
            (format!("{:02}", (c.hour + 11) % 12 + 1), 2)
        } else if rest.starts_with("04") {
            (format!("{:02}", c.min), 2)
        } else if rest.starts_with("05") {
            (format!("{:02}", c.sec), 2)
        } else if rest.starts_with("06") {
            (format!("{:02}", c.year.rem_euclid(100)), 2)
        } else if rest.starts_with("15") {
            (format!("{:02}", c.hour), 2)
        } else if rest.starts_with('1') {
            (c.month.to_string(), 1)
        } else if rest.starts_with("__2") {
            (format!("{:>3}", c.yday), 3)
        } else if rest.starts_with("_2") && !rest.starts_with("_2006") {
            (format!("{:>2}", c.day), 2)
        } else if rest.starts_with('2') {
            (c.day.to_string(), 1)
        } else if rest.starts_with('3') {
            (((c.hour + 11) % 12 + 1).to_string(), 1)
        } else if rest.starts_with('4') {
            (c.min.to_string(), 1)
        } else if rest.starts_with('5') {
            (c.sec.to_string(), 1)
        } else if rest.starts_with("PM") {
            ((if c.hour >= 12 { "PM" } else { "AM" }).into(), 2)
        } else if rest.starts_with("pm") {
            ((if c.hour >= 12 { "pm" } else { "am" }).into(), 2)
        } else if let Some((z, n)) = zone_chunk(rest, t.offset) {
            (z, n)
        } else if let Some((frac, n)) = fraction(rest, t.nanos) {
            (frac, n)
        } else {
            let ch = rest.chars().next().unwrap_or(' ');
            (ch.to_string(), ch.len_utf8())
        };
        out.push_str(&piece);
        rest = rest.get(n..).unwrap_or("");
    }
    out
}

fn zone_chunk(rest: &str, off: i32) -> Option<(String, usize)> {
    let z = rest.starts_with('Z');
    let body = rest.strip_prefix(['Z', '-'])?;
    let (colon, seconds, hours, n) = if body.starts_with("07:00:00") {
        (true, true, false, 8)
    } else if body.starts_with("070000") {
        (false, true, false, 6)
    } else if body.starts_with("07:00") {
        (true, false, false, 5)
    } else if body.starts_with("0700") {
        (false, false, false, 4)
    } else if body.starts_with("07") {
        (false, false, true, 2)
    } else {
        return None;
    };
    let text = if z && off == 0 { "Z".to_string() } else { zone_offset(off, colon, seconds, hours) };
    Some((text, n + 1))
}

/// `.000` (fixed) or `.999` (trailing zeros dropped) fractional seconds.
fn fraction(rest: &str, nanos: u32) -> Option<(String, usize)> {
    let mut chars = rest.chars();
    let sep = chars.next().filter(|c| *c == '.' || *c == ',')?;
    let digit = chars.next().filter(|c| *c == '0' || *c == '9')?;
    let count = 1 + rest[2..].chars().take_while(|c| *c == digit).count();
    if rest[1 + count..].starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let digits = format!("{nanos:09}");
    let mut frac = digits[..count.min(9)].to_string();
    if digit == '9' {
        frac = frac.trim_end_matches('0').to_string();
        if frac.is_empty() {
            return Some((String::new(), 1 + count));
        }
    }
    Some((format!("{sep}{frac}"), 1 + count))
}

/// RFC 3339 with nanoseconds, as Go's `time.Time` marshals to JSON.
pub fn rfc3339(t: &Time) -> String {
    format(t, "2006-01-02T15:04:05.999999999Z07:00")
}

/// Go's `Time.String()`: `2006-01-02 15:04:05.999999999 -0700 MST`.
pub fn go_string(t: &Time) -> String {
    format(t, "2006-01-02 15:04:05.999999999 -0700 MST")
}

/// Go's `Duration.String()` of nanoseconds: `1h2m3s`, `1.5s`, `0s`.
pub fn duration_string(nanos: i128) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let neg = nanos < 0;
    let u = nanos.unsigned_abs();
    let mut out = String::new();
    if u < 1_000_000_000 {
        let (unit, div) = if u < 1_000 {
            ("ns", 1)
        } else if u < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        out.push_str(&trim_frac(u / div, u % div, div));
        out.push_str(unit);
    } else {
        let secs = u / 1_000_000_000;
        let frac = u % 1_000_000_000;
        let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
        if h > 0 {
            out.push_str(&format!("{h}h"));
        }
        if h > 0 || m > 0 {
            out.push_str(&format!("{m}m"));
        }
        out.push_str(&trim_frac(s, frac, 1_000_000_000));
        out.push('s');
    }
    if neg {
        format!("-{out}")
    } else {
        out
    }
}

fn trim_frac(int: u128, frac: u128, div: u128) -> String {
    if frac == 0 {
        return int.to_string();
    }
    let width = div.to_string().len() - 1;
    let f = format!("{frac:0width$}");
    format!("{int}.{}", f.trim_end_matches('0'))
}

/// Go's `time.ParseDuration`: `-1h30m`, `1.5s`, `300ms`, in nanoseconds.
pub fn parse_duration(s: &str) -> Option<i128> {
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let n = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit() || c == '.').len();
        let num: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest.len() - rest.trim_start_matches(|c: char| !(c.is_ascii_digit() || c == '.')).len();
        let unit = match &rest[..u] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[u..];
        total += num * unit;
    }
    if total > 9.2e18 {
        return None;
    }
    Some(if neg { -(total as i128) } else { total as i128 })
}

/// A time moved by a duration in nanoseconds.
pub fn add(t: Time, nanos: i128) -> Time {
    let total = t.secs as i128 * 1_000_000_000 + t.nanos as i128 + nanos;
    let secs = total.div_euclid(1_000_000_000);
    Time {
        secs: secs.clamp(-1_000_000_000_000, 1_000_000_000_000) as i64,
        nanos: total.rem_euclid(1_000_000_000) as u32,
        ..t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every generated zone names a rule that parses: a tzdata update cannot leave a zone silently UTC.
    #[test]
    fn every_zone_rule_parses() {
        let mut count = 0;
        for line in ZONES.lines() {
            let (name, index) = line.split_once(' ').unwrap();
            let rule = RULES[index.parse::<usize>().unwrap()];
            assert!(Posix::parse(rule).is_some(), "{name}: {rule}");
            count += 1;
        }
        assert!(count > 400, "{count} zones");
        // Southern-hemisphere summer time, and a zone whose rule has a half-hour offset.
        let t = Time { secs: 1_704_067_200, nanos: 0, offset: 0, zone: "UTC" }; // 2024-01-01 00:00 UTC
        assert_eq!(format(&in_zone(t, "Australia/Sydney"), "15:04 MST"), "11:00 AEDT");
        assert_eq!(format(&in_zone(t, "Asia/Kathmandu"), "15:04 -07:00"), "05:45 +05:45");
        assert_eq!(format(&in_zone(t, "Europe/Berlin"), "15:04 MST"), "01:00 CET");
    }
}
