#![no_main]
// The logic lives in weft_core::fuzz_targets so a stable test replays the corpus and crashes.
libfuzzer_sys::fuzz_target!(|data: &[u8]| weft_core::fuzz_targets::check_changes(data));
