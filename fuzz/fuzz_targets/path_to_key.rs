//! FTP path → object key: see `bucketftp_fuzz::path_to_key`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bucketftp_fuzz::path_to_key(data));
