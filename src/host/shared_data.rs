//! Envoy shared data as a [`KeyValue`]: one space for all worker threads of an Envoy process.

use crate::session::KeyValue;
use proxy_wasm::hostcalls;
use proxy_wasm::types::Status;

/// The VM's shared-data space.
pub struct SharedData;

impl KeyValue for SharedData {
    fn get(&self, key: &str) -> (Vec<u8>, Option<u32>) {
        match hostcalls::get_shared_data(key) {
            Ok((value, cas)) => (value.unwrap_or_default(), cas),
            Err(_) => (Vec::new(), None),
        }
    }

    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<bool, String> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(true),
            Err(Status::CasMismatch) => Ok(false),
            Err(status) => Err(format!("shared data write failed: {status:?}")),
        }
    }
}
