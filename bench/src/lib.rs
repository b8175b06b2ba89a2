//! sdsim-bench: shared helpers of the benchmark binaries (`bench-mesh`, `bench-http`) and the
//! peer servers they are compared with (`peer-axum`).
#![warn(missing_docs, unreachable_pub)]

pub mod ws_client;

/// Pins the calling thread to `cpu`.
pub fn pin_current(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t with one bit set, for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// The median of `values` (the mean of the middle two for an even count).
pub fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// One line describing the machine: CPUs, model, kernel.
pub fn machine_line() -> String {
    let m = sdsim_loadtest::report::Machine::current();
    format!("{} CPUs, {}, Linux {}", m.nproc, m.cpu_model, m.kernel)
}

#[cfg(test)]
mod tests {
    #[test]
    fn median_odd_even() {
        assert_eq!(super::median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(super::median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
