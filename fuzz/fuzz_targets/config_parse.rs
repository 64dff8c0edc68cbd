//! Configuration text → validated config: see `bucketftp_fuzz::config_parse`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bucketftp_fuzz::config_parse(data));
