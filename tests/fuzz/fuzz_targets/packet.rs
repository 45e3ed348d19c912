#![no_main]
libfuzzer_sys::fuzz_target!(
    init: filter_tests::fuzz::packet_init(),
    |data: &[u8]| filter_tests::fuzz::packet(data)
);
