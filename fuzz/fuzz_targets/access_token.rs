//! libFuzzer target `access_token`: the checks of [`sdsim_fuzz_checks::token::access_token`].
#![no_main]

#[global_allocator]
static ALLOCATOR: sdsim_fuzz_checks::alloc::CountingAllocator =
    sdsim_fuzz_checks::alloc::CountingAllocator;

libfuzzer_sys::fuzz_target!(|data: &[u8]| sdsim_fuzz_checks::token::access_token(data));
