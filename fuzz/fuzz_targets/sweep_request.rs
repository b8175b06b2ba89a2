//! libFuzzer target `sweep_request`: the checks of [`sdsim_fuzz_checks::bodies::sweep_request`].
#![no_main]

#[global_allocator]
static ALLOCATOR: sdsim_fuzz_checks::alloc::CountingAllocator =
    sdsim_fuzz_checks::alloc::CountingAllocator;

libfuzzer_sys::fuzz_target!(|data: &[u8]| sdsim_fuzz_checks::bodies::sweep_request(data));
