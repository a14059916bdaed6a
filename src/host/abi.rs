//! Hostcalls the proxy-wasm crate would panic on. Its wrappers treat every status but `Ok` as a bug and
//! panic, and a panic kills the VM with every stream of its worker; these return the status instead, for
//! calls whose refusal is an ordinary outcome (rewriting a request or an answer Envoy no longer holds, a
//! local reply after the response has started).

use crate::header_edits::Edit;
use crate::headers::MapSpans;
use proxy_wasm::types::{BufferType, MapType};

extern "C" {
    fn proxy_get_header_map_pairs(map_type: u32, return_map_data: *mut *mut u8, return_map_size: *mut usize) -> u32;
    fn proxy_set_header_map_pairs(map_type: u32, map_data: *const u8, map_size: usize) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_add_header_map_value(
        map_type: u32,
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key: *const u8, key_size: usize) -> u32;
    fn proxy_set_buffer_bytes(buffer_type: u32, start: usize, size: usize, data: *const u8, data_size: usize) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
    fn proxy_set_property(path_data: *const u8, path_size: usize, value_data: *const u8, value_size: usize) -> u32;
    #[allow(clippy::too_many_arguments)]
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
}

/// A status other than `Ok` (0), as the host returned it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused(pub u32);

fn check(status: u32) -> Result<(), Refused> {
    if status == 0 {
        Ok(())
    } else {
        Err(Refused(status))
    }
}

/// The proxy-wasm map encoding: count, then each name and value length, then each name and value with a NUL.
fn serialize(map: &[(&str, &str)]) -> Vec<u8> {
    let size = 4 + map.iter().map(|(k, v)| k.len() + v.len() + 10).sum::<usize>();
    let mut bytes = Vec::with_capacity(size);
    bytes.extend_from_slice(&(map.len() as u32).to_le_bytes());
    for (k, v) in map {
        bytes.extend_from_slice(&(k.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in map {
        bytes.extend_from_slice(k.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(v.as_bytes());
        bytes.push(0);
    }
    bytes
}

/// A header map as the host serializes it (one hostcall, one buffer; empty when refused), read with
/// [`pairs`]: the request head is read once this way and tested for ours without a copy per header.
pub fn header_map(map: MapType) -> Vec<u8> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the host writes a buffer it allocated with this module's allocator (as the SDK reads it).
    unsafe {
        if proxy_get_header_map_pairs(map as u32, &mut data, &mut size) != 0 || data.is_null() {
            return Vec::new();
        }
        Vec::from_raw_parts(data, size, size)
    }
}

/// The name and value pairs of a serialized header map ([`serialize`]'s encoding), in order; a malformed
/// map ends early instead of failing.
pub fn pairs(map: &[u8]) -> Pairs<'_> {
    Pairs { map, spans: MapSpans::of(map) }
}

/// The iterator of [`pairs`].
pub struct Pairs<'a> {
    map: &'a [u8],
    spans: MapSpans<'a>,
}

impl<'a> Iterator for Pairs<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let [a, b, c, d] = self.spans.next()?;
        Some((self.map.get(a..b)?, self.map.get(c..d)?))
    }
}

impl Pairs<'_> {
    /// The pairs left, as the map declares them ([`MapSpans::declared`]).
    pub fn declared(&self) -> usize {
        self.spans.declared()
    }
}

/// Replaces a whole header map.
pub fn set_map(map: MapType, pairs: &[(&str, &str)]) -> Result<(), Refused> {
    let bytes = serialize(pairs);
    check(unsafe { proxy_set_header_map_pairs(map as u32, bytes.as_ptr(), bytes.len()) })
}

/// Applies the core's edits to a header map, one hostcall each (only the headers that change are written);
/// stops at the first refusal.
pub fn edit_map(map: MapType, edits: &[Edit]) -> Result<(), Refused> {
    let map = map as u32;
    for e in edits {
        // SAFETY: pointers and lengths of live strings; the host copies them.
        check(unsafe {
            match e {
                Edit::Set(k, v) => proxy_replace_header_map_value(map, k.as_ptr(), k.len(), v.as_ptr(), v.len()),
                Edit::Add(k, v) => proxy_add_header_map_value(map, k.as_ptr(), k.len(), v.as_ptr(), v.len()),
                Edit::Remove(k) => proxy_remove_header_map_value(map, k.as_ptr(), k.len()),
            }
        })?;
    }
    Ok(())
}

/// Replaces a buffer's bytes from `start` on (`usize::MAX` bytes: all of them).
pub fn set_buffer(buffer: BufferType, start: usize, size: usize, value: &[u8]) -> Result<(), Refused> {
    check(unsafe { proxy_set_buffer_bytes(buffer as u32, start, size, value.as_ptr(), value.len()) })
}

/// Sets a property of the stream (Envoy keeps it as filter state `wasm.<name>`, for access logs).
pub fn set_property(name: &str, value: &str) -> Result<(), Refused> {
    check(unsafe { proxy_set_property(name.as_ptr(), name.len(), value.as_ptr(), value.len()) })
}

/// Lets a paused request go on.
pub fn resume_request() -> Result<(), Refused> {
    check(unsafe { proxy_continue_stream(0) })
}

/// Lets a paused response go on.
pub fn resume_response() -> Result<(), Refused> {
    check(unsafe { proxy_continue_stream(1) })
}

/// Answers the client locally.
pub fn send_response(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Result<(), Refused> {
    let bytes = serialize(headers);
    let body_ptr = if body.is_empty() { std::ptr::null() } else { body.as_ptr() };
    check(unsafe {
        proxy_send_local_response(
            u32::from(status),
            std::ptr::null(),
            0,
            body_ptr,
            body.len(),
            bytes.as_ptr(),
            bytes.len(),
            -1,
        )
    })
}
