//! The arithmetic of limits, on plain integers and a clock passed in: token buckets (rate limits) and
//! calendar periods (quotas). The shared-data counters ([`super::local`]) use it directly; the Redis
//! script ([`super::redis`]) does the same sums in Lua, so both scopes refill and refuse alike.

/// One call costs one token; levels are kept in thousandths of a token so that slow refills (one call per
/// hour) still advance between calls.
pub const TOKEN: u64 = 1000;

/// A token bucket's state: its level (thousandths of a token) when it was last written, and the tokens
/// leased to workers in the lease period of `at_ms` (process counters only: [`Rate::lease`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level {
    pub milli: u64,
    pub at_ms: u64,
    pub leased: u64,
}

/// The most tokens one lease takes, and the fewest worth one (smaller takes are single tokens).
pub const MAX_LEASE: u64 = 32;
pub const MIN_LEASE: u64 = 4;
/// A lease takes at most 1/16 of the tokens in the bucket, and leases of one period at most 1/16 of its
/// capacity: a burst below 64 (16 x [`MIN_LEASE`]) never leases.
pub const LEASE_SHARE: u64 = 16;
/// How far a worker's clock may be behind a counter's time and still count from the counter's (two workers'
/// clocks read a moment apart); further back is a clock stepped back, counted from anew.
const SKEW_MS: u64 = 1000;
/// The longest lease period: a worker's unspent tokens are lost at most this long after it took them.
pub const MAX_LEASE_PERIOD_MS: u64 = 1000;

/// A token bucket's shape: `capacity` tokens (the burst), refilled at `requests` per `window_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub requests: u64,
    pub window_ms: u64,
    pub capacity: u64,
}

impl Rate {
    /// The level at `now_ms`: `state` refilled for the time since it was written (a new bucket is full;
    /// a clock that went back refills nothing; a bucket from a larger capacity is cut to this one).
    pub fn refill(&self, state: Option<Level>, now_ms: u64) -> u64 {
        let cap = self.capacity.saturating_mul(TOKEN);
        let Some(s) = state else { return cap };
        let elapsed = u128::from(now_ms.saturating_sub(s.at_ms));
        let gained =
            elapsed.saturating_mul(u128::from(self.requests) * u128::from(TOKEN)) / u128::from(self.window_ms.max(1));
        u64::try_from(u128::from(s.milli) + gained).unwrap_or(u64::MAX).min(cap)
    }

    /// Takes one token at `now_ms`: the new state, or how many milliseconds until a token is there. The strict
    /// bucket without leases: what the Redis script computes (the test host's model of it), and the
    /// reference leasing is checked against; process counters take through [`Rate::lease`].
    #[cfg(test)]
    pub fn take(&self, state: Option<Level>, now_ms: u64) -> Result<Level, u64> {
        let level = self.refill(state, now_ms);
        if level >= TOKEN {
            Ok(Level { milli: level - TOKEN, at_ms: now_ms, leased: 0 })
        } else {
            Err(self.wait_ms(level))
        }
    }

    /// How long a lease lasts: leases are counted per period of this length (`at_ms / period`).
    pub fn lease_period_ms(&self) -> u64 {
        self.window_ms.clamp(1, MAX_LEASE_PERIOD_MS)
    }

    /// Takes one token at `now_ms` from a process counter, and with it, when the bucket is large and full
    /// enough and `may_lease`, a lease of more tokens for this worker to spend alone until the lease period
    /// of the returned state's `at_ms` ends: the new state and the tokens taken (the call's one included),
    /// or how many milliseconds until a token is there.
    ///
    /// Sound as long as leased tokens are spent only in their period: within a period the bucket refills
    /// only up to its capacity less the tokens leased in it, so the bucket's level plus the leased tokens
    /// still unspent never exceeds the capacity, and every call (taken here or spent from a lease) costs
    /// one token of that sum, which refills at the rate and no faster. Over any interval the calls admitted
    /// are then at most what one strict bucket admits: the capacity plus the rate times the interval
    /// (`tests::leases`). A counter's time never goes back by a second or less (a worker whose clock was
    /// read before another's write counts from that write), so no interval refills twice.
    pub fn lease(&self, state: Option<Level>, now_ms: u64, may_lease: bool) -> Result<(Level, u64), u64> {
        let mut s = self.settle(state, now_ms);
        if s.milli < TOKEN {
            return Err(self.wait_ms(s.milli).saturating_add(s.at_ms.saturating_sub(now_ms)));
        }
        let whole = s.milli / TOKEN;
        let room = (self.capacity / LEASE_SHARE).saturating_sub(s.leased);
        let k = MAX_LEASE.min(whole / LEASE_SHARE).min(room);
        if may_lease && k >= MIN_LEASE {
            s.milli -= k * TOKEN;
            s.leased += k;
            Ok((s, k))
        } else {
            s.milli -= TOKEN;
            Ok((s, 1))
        }
    }

    /// The state at `now_ms` (or at the counter's own time, if `now_ms` is at most a second before it):
    /// refilled, but within a lease period only up to the capacity less the tokens leased in it; a new
    /// period starts with none leased.
    fn settle(&self, state: Option<Level>, now_ms: u64) -> Level {
        let cap = self.capacity.saturating_mul(TOKEN);
        let Some(s) = state else { return Level { milli: cap, at_ms: now_ms, leased: 0 } };
        let at = if now_ms < s.at_ms && s.at_ms - now_ms <= SKEW_MS { s.at_ms } else { now_ms };
        if s.leased == 0 {
            return Level { milli: self.refill(Some(s), at), at_ms: at, leased: 0 };
        }
        let period = self.lease_period_ms();
        let end = (s.at_ms / period).saturating_add(1).saturating_mul(period);
        let held = cap.saturating_sub(s.leased.saturating_mul(TOKEN));
        let in_period =
            |milli: u64, from: u64, to: u64| self.refill(Some(Level { milli, at_ms: from, leased: 0 }), to).min(held);
        if at < end {
            return Level { milli: in_period(s.milli, s.at_ms, at), at_ms: at, leased: s.leased };
        }
        // The period of the leases ended: its refill was capped up to its end, the rest is not.
        let at_end = in_period(s.milli, s.at_ms, end);
        Level { milli: self.refill(Some(Level { milli: at_end, at_ms: end, leased: 0 }), at), at_ms: at, leased: 0 }
    }

    /// Milliseconds until a bucket at `level` holds a whole token again (rounded up).
    pub fn wait_ms(&self, level: u64) -> u64 {
        let missing = u128::from(TOKEN.saturating_sub(level));
        let per_ms = u128::from(self.requests) * u128::from(TOKEN);
        let ms = (missing * u128::from(self.window_ms)).div_ceil(per_ms.max(1));
        u64::try_from(ms).unwrap_or(u64::MAX)
    }

    /// How long an untouched bucket takes to fill up: after that its stored state says nothing more
    /// than "full", so Redis may forget it.
    pub fn fill_ms(&self) -> u64 {
        self.wait_ms(0).saturating_mul(self.capacity)
    }
}

/// Gives a token back (a call another limit refused after this one had let it through), up to the
/// capacity less the tokens leased in the state's period.
pub fn refund(state: Level, capacity: u64) -> Level {
    let held = capacity.saturating_sub(state.leased).saturating_mul(TOKEN);
    Level { milli: (state.milli + TOKEN).min(held.max(state.milli)), ..state }
}

/// Reads a stored level, `"{milli} {at_ms}"` or `"{milli} {at_ms} {leased}"` (decimal digits, surrounding
/// whitespace aside); anything else is a new bucket. Read byte by byte: it runs on every limited call.
pub fn decode(text: &[u8]) -> Option<Level> {
    let text = text.trim_ascii();
    let space = text.iter().position(|b| *b == b' ')?;
    let (milli, rest) = (text.get(..space)?, text.get(space + 1..)?);
    let (at, leased) = match rest.iter().position(|b| *b == b' ') {
        Some(i) => (rest.get(..i)?, number(rest.get(i + 1..)?)?),
        None => (rest, 0),
    };
    Some(Level { milli: number(milli)?, at_ms: number(at)?, leased })
}

/// A `u64` in decimal digits only (no sign, no overflow).
fn number(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, b| {
        let d = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        n.checked_mul(10)?.checked_add(u64::from(d))
    })
}

/// A level as stored, written on the stack (three `u64`s and two spaces: at most 62 bytes).
pub struct Encoded {
    buf: [u8; 62],
    len: usize,
}

impl Encoded {
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

/// `"{milli} {at_ms}"`, and `" {leased}"` when tokens are leased, without the formatting machinery or an
/// allocation.
pub fn encode(level: Level) -> Encoded {
    let mut e = Encoded { buf: [0; 62], len: 0 };
    push_number(&mut e, level.milli);
    e.buf[e.len] = b' ';
    e.len += 1;
    push_number(&mut e, level.at_ms);
    if level.leased > 0 {
        e.buf[e.len] = b' ';
        e.len += 1;
        push_number(&mut e, level.leased);
    }
    e
}

fn push_number(e: &mut Encoded, n: u64) {
    let mut digits = [0u8; 20];
    for d in crate::encoding::decimal(n, &mut digits).bytes() {
        e.buf[e.len] = d;
        e.len += 1;
    }
}

/// A quota's calendar period, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Day,
    Month,
}

const DAY_MS: u64 = 86_400_000;

impl Period {
    /// The period `now_ms` falls in: its name (`2026-11-26`, `2026-11`), part of the counter's key, and
    /// when it ends (the counter's expiry, and when a refused caller may retry).
    pub fn at(self, now_ms: u64) -> (String, u64) {
        let day = now_ms / DAY_MS;
        let (y, m, d) = civil_from_days(day as i64);
        match self {
            Period::Day => (format!("{y:04}-{m:02}-{d:02}"), (day + 1) * DAY_MS),
            Period::Month => {
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                let next = days_from_civil(ny, nm, 1).max(0) as u64;
                (format!("{y:04}-{m:02}"), next * DAY_MS)
            }
        }
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The inverse of [`civil_from_days`].
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Whole seconds to wait, rounded up, at least one: what `Retry-After` says.
pub fn retry_secs(ms: u64) -> u64 {
    ms.div_ceil(1000).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIVE_PER_2S: Rate = Rate { requests: 5, window_ms: 2000, capacity: 5 };

    #[test]
    fn a_bucket_lets_its_burst_through_then_refills_at_its_rate() {
        let mut state = None;
        for _ in 0..5 {
            state = Some(FIVE_PER_2S.take(state, 10_000).unwrap());
        }
        // One token comes back every 400 ms.
        assert_eq!(FIVE_PER_2S.take(state, 10_000), Err(400));
        assert_eq!(FIVE_PER_2S.take(state, 10_300), Err(100));
        let s = FIVE_PER_2S.take(state, 10_400).unwrap();
        assert_eq!(s, Level { milli: 0, at_ms: 10_400, leased: 0 });
        assert_eq!(FIVE_PER_2S.refill(Some(s), 12_400), 5000, "a whole window refills it");
        assert_eq!(FIVE_PER_2S.refill(Some(s), 99_999), 5000, "never above the burst");
        assert_eq!(FIVE_PER_2S.refill(Some(s), 1), 0, "a clock that went back refills nothing");
    }

    #[test]
    fn slow_rates_and_bursts() {
        let hourly = Rate { requests: 1, window_ms: 3_600_000, capacity: 1 };
        let s = hourly.take(None, 0).unwrap();
        // Levels advance in thousandths of a token: 3.6 s of an hourly rate.
        assert_eq!(hourly.take(Some(s), 1_000), Err(3_600_000));
        assert_eq!(hourly.take(Some(s), 3_600), Err(3_596_400));
        assert_eq!(retry_secs(3_599_000), 3599);
        assert_eq!(retry_secs(1), 1);
        assert_eq!(retry_secs(0), 1);
        // A burst above the rate: 10 at once, then 1 a second.
        let bursty = Rate { requests: 1, window_ms: 1000, capacity: 10 };
        let mut state = None;
        for _ in 0..10 {
            state = Some(bursty.take(state, 0).unwrap());
        }
        assert_eq!(bursty.take(state, 0), Err(1000));
        assert_eq!(bursty.fill_ms(), 10_000);
        assert_eq!(FIVE_PER_2S.fill_ms(), 2000);
        // A huge rate does not overflow.
        let huge = Rate { requests: u64::MAX / 2, window_ms: 1, capacity: 1_000_000 };
        assert_eq!(huge.refill(Some(Level { milli: 0, at_ms: 0, leased: 0 }), u64::MAX), 1_000_000_000);
    }

    #[test]
    fn refunds_and_stored_levels() {
        let s = Level { milli: 4500, at_ms: 7, leased: 0 };
        assert_eq!(refund(s, 5), Level { milli: 5000, at_ms: 7, leased: 0 });
        assert_eq!(refund(Level { milli: 100, at_ms: 7, leased: 0 }, 5).milli, 1100);
        assert_eq!(decode(encode(s).as_bytes()), Some(s));
        assert_eq!(decode(b""), None);
        assert_eq!(decode(b"x y"), None);
        for level in [Level { milli: 0, at_ms: 0, leased: 0 }, Level { milli: u64::MAX, at_ms: u64::MAX, leased: 0 }, s]
        {
            let text = encode(level);
            assert_eq!(text.as_bytes(), format!("{} {}", level.milli, level.at_ms).as_bytes());
            assert_eq!(decode(text.as_bytes()), Some(level));
        }
        assert_eq!(
            decode(b" 12 34\n"),
            Some(Level { milli: 12, at_ms: 34, leased: 0 }),
            "whitespace around it is read"
        );
        let leased = Level { milli: 12, at_ms: 34, leased: 5 };
        assert_eq!(encode(leased).as_bytes(), b"12 34 5");
        assert_eq!(decode(b"12 34 5"), Some(leased));
        assert_eq!(refund(leased, 10).milli, 1012);
        assert_eq!(refund(Level { milli: 4800, ..leased }, 10).milli, 5000, "up to the capacity less the leased");
        for bad in
            [&b"12"[..], b"12 ", b" 34", b"1 2 3 4", b"1  2", b"-1 2", b"+1 2", b"1x 2", b"18446744073709551616 0"]
        {
            assert_eq!(decode(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn periods_are_utc_calendar_days_and_months() {
        // 2025-11-26T02:05:00Z
        let now = 1_764_122_700_000;
        assert_eq!(Period::Day.at(now), ("2025-11-26".to_string(), 1_764_201_600_000));
        assert_eq!(Period::Month.at(now), ("2025-11".to_string(), 1_764_547_200_000)); // 2025-12-01
        assert_eq!(Period::Month.at(1_767_225_599_000).0, "2025-12"); // 2025-12-31T23:59:59Z
        assert_eq!(Period::Month.at(1_767_225_599_000).1, 1_767_225_600_000); // 2026-01-01
        assert_eq!(Period::Day.at(0), ("1970-01-01".to_string(), DAY_MS));
        assert_eq!(Period::Month.at(951_782_400_000).0, "2000-02"); // 2000-02-29, a leap day
        assert_eq!(Period::Month.at(951_782_400_000).1, 951_868_800_000); // 2000-03-01
    }
}
