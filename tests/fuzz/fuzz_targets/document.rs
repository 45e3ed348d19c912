#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| filter_tests::fuzz::document(data));
