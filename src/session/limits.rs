//! Limits on sessions, so that opening them is not free and unlimited: at most `maxNewPerSecond` new
//! sessions per second per server on one Envoy process (every store), and at most `maxSessions` live
//! sessions per server where they cost the gateway memory (`local`). A signed session costs the gateway
//! nothing and a Redis one costs Redis memory bounded by its TTL, so for those the rate bounds how many can
//! live at once (rate x TTL).
//!
//! Both are counters in shared data (one key per server, so the key count stays bounded), updated with
//! compare-and-swap so that every worker of the process sees the same count. Under heavy contention a
//! counter gives up rather than block: the rate admits, and the live count refuses.

use super::KeyValue;

/// Compare-and-swap attempts before giving up.
const CAS_RETRIES: usize = 16;

/// Why a new session was refused; the exchange turns it into an HTTP status and a JSON-RPC error.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// 429 for a rate, 503 for a capacity.
    pub status: u16,
    /// Names the limit and its value.
    pub message: String,
}

/// The configured limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub max_sessions: u64,
    pub max_new_per_second: u32,
}

fn rate_key(server: &str) -> String {
    format!("mcp-gateway/new-sessions/{server}")
}

fn live_key(server: &str) -> String {
    format!("mcp-gateway/live-sessions/{server}")
}

fn read_u64(text: &[u8]) -> u64 {
    std::str::from_utf8(text).ok().and_then(|t| t.trim().parse().ok()).unwrap_or(0)
}

impl Limits {
    /// Counts a new session of `server` against the per-second rate; `Err` when the rate is spent.
    pub fn admit_new(&self, kv: &mut dyn KeyValue, server: &str, now_ms: u64) -> Result<(), Refusal> {
        let key = rate_key(server);
        let second = now_ms / 1000;
        for _ in 0..CAS_RETRIES {
            let (value, cas) = kv.get(&key);
            let text = String::from_utf8_lossy(&value);
            let mut parts = text.split(' ');
            let (at, count) =
                (read_u64(parts.next().unwrap_or("").as_bytes()), read_u64(parts.next().unwrap_or("").as_bytes()));
            let count = if at == second { count } else { 0 };
            if count >= u64::from(self.max_new_per_second) {
                return Err(Refusal {
                    status: 429,
                    message: format!(
                        "too many new sessions: at most {} per second for server '{server}' on this gateway \
                         (sessions.maxNewPerSecond); retry in a second",
                        self.max_new_per_second
                    ),
                });
            }
            if matches!(kv.set(&key, format!("{second} {}", count + 1).as_bytes(), cas), Ok(true)) {
                return Ok(());
            }
        }
        Ok(()) // contended: admit rather than stall initialize
    }

    /// Reserves room for one more live session of `server`; `Err` when `maxSessions` are live.
    pub fn reserve_live(&self, kv: &mut dyn KeyValue, server: &str) -> Result<(), Refusal> {
        let key = live_key(server);
        let full = || Refusal {
            status: 503,
            message: format!(
                "too many live sessions: server '{server}' has {} (sessions.maxSessions); retry later",
                self.max_sessions
            ),
        };
        for _ in 0..CAS_RETRIES {
            let (value, cas) = kv.get(&key);
            let live = read_u64(&value);
            if live >= self.max_sessions {
                return Err(full());
            }
            if matches!(kv.set(&key, (live + 1).to_string().as_bytes(), cas), Ok(true)) {
                return Ok(());
            }
        }
        Err(full())
    }

    /// Gives back room for `n` sessions of `server` that ended (deleted, expired, or never created).
    pub fn release_live(kv: &mut dyn KeyValue, server: &str, n: u64) {
        let key = live_key(server);
        for _ in 0..CAS_RETRIES {
            let (value, cas) = kv.get(&key);
            let live = read_u64(&value).saturating_sub(n);
            if matches!(kv.set(&key, live.to_string().as_bytes(), cas), Ok(true)) {
                return;
            }
        }
    }

    /// Live sessions counted for `server` (for tests and logs).
    pub fn live(kv: &dyn KeyValue, server: &str) -> u64 {
        read_u64(&kv.get(&live_key(server)).0)
    }
}

#[cfg(test)]
mod tests {
    use super::super::memory::MemoryKv;
    use super::*;

    #[test]
    fn the_rate_resets_every_second_per_server() {
        let limits = Limits { max_sessions: 10, max_new_per_second: 2 };
        let mut kv = MemoryKv::default();
        assert!(limits.admit_new(&mut kv, "a", 1_000).is_ok());
        assert!(limits.admit_new(&mut kv, "a", 1_500).is_ok());
        let refused = limits.admit_new(&mut kv, "a", 1_999).unwrap_err();
        assert_eq!(refused.status, 429);
        assert!(refused.message.contains("sessions.maxNewPerSecond"), "{}", refused.message);
        assert!(limits.admit_new(&mut kv, "b", 1_999).is_ok(), "per server");
        assert!(limits.admit_new(&mut kv, "a", 2_000).is_ok(), "a new second");
    }

    #[test]
    fn live_sessions_are_reserved_and_released() {
        let limits = Limits { max_sessions: 2, max_new_per_second: 100 };
        let mut kv = MemoryKv::default();
        limits.reserve_live(&mut kv, "a").unwrap();
        limits.reserve_live(&mut kv, "a").unwrap();
        let refused = limits.reserve_live(&mut kv, "a").unwrap_err();
        assert_eq!(refused.status, 503);
        assert!(refused.message.contains("sessions.maxSessions"));
        Limits::release_live(&mut kv, "a", 1);
        assert_eq!(Limits::live(&kv, "a"), 1);
        limits.reserve_live(&mut kv, "a").unwrap();
        Limits::release_live(&mut kv, "a", 5);
        assert_eq!(Limits::live(&kv, "a"), 0, "never below zero");
    }
}
