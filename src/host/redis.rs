//! Higress's Redis calls (`--features higress` only): vanilla Envoy does not provide these imports and
//! refuses any module that names them, hence the separate artifact.
//!
//! As Higress's hosts define them (module `env`, statuses as proxy-wasm's `WasmResult`, 0 = Ok):
//! - `proxy_redis_init(cluster, username, password, timeout_ms) -> status`, once at configure time;
//! - `proxy_redis_call(cluster, query, *token) -> status`, the query one RESP-encoded command;
//! - the host calls our export `proxy_on_redis_call_response(context_id, token, status, size)`; a non-zero
//!   status is a failed call (connection, timeout), else the raw RESP reply is buffer type 9.
//!
//! The callback names a context but the SDK does not route it, so replies are matched to the HTTP context
//! that sent the command by token ([`TOKENS`]). Re-initialising the client (after `NOAUTH`) closes its
//! connections and fails every command pending on them, so each command remembers the client generation it
//! was sent under ([`GENERATION`]): a failure after a re-initialisation is reported as interrupted, and the
//! driver sends it again instead of failing a request that had nothing to do with the bad credentials.

use crate::session::redis::{Answer, RedisStore};
use crate::slots::Slots;
use std::cell::{Cell, RefCell};
use std::ptr::null_mut;

/// Higress's buffer type for the reply of a Redis call.
const REDIS_CALL_RESPONSE: u32 = 9;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_redis_init(
        cluster: *const u8,
        cluster_size: usize,
        username: *const u8,
        username_size: usize,
        password: *const u8,
        password_size: usize,
        timeout_ms: u32,
    ) -> u32;
    fn proxy_redis_call(
        cluster: *const u8,
        cluster_size: usize,
        query: *const u8,
        query_size: usize,
        token: *mut u32,
    ) -> u32;
}

#[link(wasm_import_module = "env")]
extern "C" {
    // The SDK declares this import with its own `BufferType` enum, which has no variant 9.
    #[link_name = "proxy_get_buffer_bytes"]
    #[allow(clashing_extern_declarations)]
    fn get_buffer_bytes(buffer_type: u32, start: usize, max_size: usize, data: *mut *mut u8, size: *mut usize) -> u32;
}

thread_local! {
    /// Commands in flight: token to the HTTP context that sent it and the client generation it went out on.
    static TOKENS: RefCell<Slots<(u32, u64)>> = const { RefCell::new(Slots::new()) };
    /// How many times this VM has (re-)initialised its Redis client.
    static GENERATION: Cell<u64> = const { Cell::new(0) };
}

/// Sets up (or re-establishes, after `NOAUTH`) the host's Redis client. The password is passed to the host
/// and nowhere else.
pub fn init(store: &RedisStore) -> Result<(), String> {
    let timeout = u32::try_from(store.timeout_ms).unwrap_or(u32::MAX);
    // SAFETY: pointers and lengths of live slices; the host copies them before returning.
    let status = unsafe {
        proxy_redis_init(
            store.cluster.as_ptr(),
            store.cluster.len(),
            store.username.as_ptr(),
            store.username.len(),
            store.password.as_ptr(),
            store.password.len(),
            timeout,
        )
    };
    GENERATION.with(|g| g.set(g.get() + 1));
    match status {
        0 => Ok(()),
        s => Err(format!("the host refused proxy_redis_init for cluster '{}' (status {s})", store.cluster)),
    }
}

/// Sends one command; the reply arrives at [`proxy_on_redis_call_response`].
pub fn call(store: &RedisStore, command: &[u8], context_id: u32) -> Result<u32, String> {
    let mut token = 0u32;
    // SAFETY: pointers and lengths of live slices, and a valid out-pointer.
    let status = unsafe {
        proxy_redis_call(store.cluster.as_ptr(), store.cluster.len(), command.as_ptr(), command.len(), &mut token)
    };
    if status != 0 {
        return Err(format!("proxy_redis_call to cluster '{}' returned status {status}", store.cluster));
    }
    let generation = GENERATION.with(Cell::get);
    TOKENS.with(|t| t.borrow_mut().insert(token, (context_id, generation)));
    Ok(token)
}

/// Drops the commands of a finished HTTP context: their replies, if any come, are ignored.
pub fn forget_context(context_id: u32) {
    TOKENS.with(|t| t.borrow_mut().retain(|_, (c, _)| *c != context_id));
}

fn reply_bytes(size: usize) -> Result<Vec<u8>, String> {
    let mut data: *mut u8 = null_mut();
    let mut len: usize = 0;
    // SAFETY: valid out-pointers; on success the host hands over a buffer it allocated through our
    // allocator (`proxy_on_memory_allocate`), which we own from here on.
    let status = unsafe { get_buffer_bytes(REDIS_CALL_RESPONSE, 0, size, &mut data, &mut len) };
    match status {
        0 if data.is_null() => Ok(Vec::new()),
        0 => Ok(unsafe { Vec::from_raw_parts(data, len, len) }),
        s => Err(format!("the Redis reply could not be read (status {s})")),
    }
}

/// Higress's host calls this when a Redis command completes.
#[no_mangle]
pub extern "C" fn proxy_on_redis_call_response(_context_id: u32, token: u32, status: u32, response_size: usize) {
    let Some((context_id, sent_under)) = TOKENS.with(|t| t.borrow_mut().remove(&token)) else {
        return; // its exchange is gone
    };
    let bytes;
    let answer = if status != 0 {
        if sent_under != GENERATION.with(Cell::get) {
            Answer::Interrupted
        } else {
            Answer::Failed(format!("the host reported status {status}: connection failure or timeout"))
        }
    } else {
        match reply_bytes(response_size) {
            Ok(b) => {
                bytes = b;
                Answer::Reply(&bytes)
            }
            Err(why) => Answer::Failed(why),
        }
    };
    super::calls_go_to_the_root();
    if super::proxy::on_redis_reply(context_id, token, answer.clone()) {
        return;
    }
    super::with_driver(context_id, true, |gw, driver, calls| driver.on_redis_reply(gw, calls, token, answer));
}
