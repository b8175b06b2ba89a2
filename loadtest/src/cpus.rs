//! Which CPUs the generator's threads run on: by default one thread per CPU of the affinity
//! mask the process was started with (`taskset -c 1 sdsim-loadtest …` runs one thread, on CPU
//! 1), and a `--cpus` list (or a scenario's `load.cpus`) only within that mask, so the load
//! never lands on the CPUs kept for the server.

/// The CPUs of this process's affinity mask, ascending (the shards' rule too).
pub fn allowed() -> Vec<usize> {
    sdsim_core::shard::affinity_cpus()
}

/// The CPUs to run on, one thread each: `requested` (from `key`) when given, each within
/// `mask`, otherwise every CPU of `mask`.
pub fn choose(requested: &[usize], mask: &[usize], key: &str) -> Result<Vec<usize>, String> {
    if requested.is_empty() {
        return Ok(mask.to_vec());
    }
    if let Some(outside) = requested.iter().find(|cpu| !mask.contains(cpu)) {
        return Err(format!(
            "{key}: CPU {outside} is outside the CPUs this process may use {mask:?} (its \
             affinity mask, e.g. from taskset); leave {key} out to use all of them"
        ));
    }
    // A CPU named twice runs two threads (each with a descriptor table of its own).
    Ok(requested.to_vec())
}

/// [`choose`] within this process's own mask.
pub fn resolve(requested: &[usize], key: &str) -> anyhow::Result<Vec<usize>> {
    choose(requested, &allowed(), key).map_err(|e| anyhow::anyhow!(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mask_decides_unless_a_list_within_it_is_given() {
        assert_eq!(choose(&[], &[1], "--cpus"), Ok(vec![1]));
        assert_eq!(choose(&[], &[0, 1, 3], "--cpus"), Ok(vec![0, 1, 3]));
        assert_eq!(choose(&[3, 1], &[0, 1, 3], "--cpus"), Ok(vec![3, 1]));
        let outside = choose(&[0], &[1], "--cpus").unwrap_err();
        assert!(outside.starts_with("--cpus: CPU 0 is outside"), "{outside}");
        assert!(outside.contains("[1]"), "{outside}");
        assert_eq!(choose(&[1, 1], &[0, 1], "load.cpus"), Ok(vec![1, 1]));
    }

    #[test]
    fn this_process_may_use_at_least_one_cpu() {
        assert!(!allowed().is_empty());
    }
}
