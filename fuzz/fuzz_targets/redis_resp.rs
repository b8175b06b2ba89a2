//! libFuzzer target `redis_resp`: the checks of [`sdsim_fuzz_checks::redis::resp`].
#![no_main]

#[global_allocator]
static ALLOCATOR: sdsim_fuzz_checks::alloc::CountingAllocator =
    sdsim_fuzz_checks::alloc::CountingAllocator;

libfuzzer_sys::fuzz_target!(|data: &[u8]| sdsim_fuzz_checks::redis::resp(data));
