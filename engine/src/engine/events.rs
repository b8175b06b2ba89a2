//! The pending events, earliest first: a 4-ary min-heap on one `u128` key per event.
//!
//! The key is the event's time bits (high 64) and its scheduling sequence number (low 64):
//! simulated times are never negative, so their IEEE bits order like the numbers, and one
//! integer comparison orders by (time, scheduling order). Sequence numbers never repeat, so
//! keys are unique and any correct priority queue pops the same events in the same order:
//! the shape of the heap cannot change a run.
//!
//! Why not `std::collections::BinaryHeap`: its entries carried the 24-byte payload next to
//! the 16-byte key (48 bytes with padding) and every level of a sift moved them. Here keys and
//! payloads sit in two parallel vectors, a node's four children's keys fill one cache line,
//! the child with the smallest key is picked without branches, and the tree is half as deep.

use super::EventKind;

/// Children per node.
const ARITY: usize = 4;

/// Events waiting for their time, by key. Real keys are below `u128::MAX`: the high half is
/// the bits of a non-negative time, never all ones.
pub(super) struct EventQueue {
    /// The heap's keys, then `ARITY` padding keys of `u128::MAX`: every node's children fill
    /// a whole group of four, so the smallest is found the same way (and without branches)
    /// on the last level as on the others; a padding key never wins against a real one.
    keys: Vec<u128>,
    kinds: Vec<EventKind>,
}

impl Default for EventQueue {
    fn default() -> EventQueue {
        EventQueue {
            keys: vec![u128::MAX; ARITY],
            kinds: Vec::new(),
        }
    }
}

impl EventQueue {
    /// Adds `kind`, due at `key`.
    pub(super) fn push(&mut self, key: u128, kind: EventKind) {
        let mut hole = self.kinds.len();
        self.keys.push(u128::MAX);
        self.kinds.push(kind);
        while hole > 0 {
            let parent = (hole - 1) / ARITY;
            if self.keys[parent] <= key {
                break;
            }
            self.keys[hole] = self.keys[parent];
            self.kinds[hole] = self.kinds[parent];
            hole = parent;
        }
        self.keys[hole] = key;
        self.kinds[hole] = kind;
    }

    /// The key of the earliest event.
    #[inline]
    pub(super) fn first_key(&self) -> Option<u128> {
        (!self.kinds.is_empty()).then(|| self.keys[0])
    }

    /// Removes and returns the earliest event.
    pub(super) fn pop(&mut self) -> Option<EventKind> {
        let last_kind = self.kinds.pop()?;
        let n = self.kinds.len();
        let last_key = std::mem::replace(&mut self.keys[n], u128::MAX);
        self.keys.pop();
        if n == 0 {
            return Some(last_kind);
        }
        let first = self.kinds[0];
        // Floyd's variant: move the hole at the root down to a leaf along the smallest
        // children, then sift the last entry up from there. The last entry usually belongs
        // near the bottom (new events lie in the future), so this saves the comparison with
        // it at every level on the way down.
        let mut hole = 0;
        loop {
            let child = ARITY * hole + 1;
            if child >= n {
                break;
            }
            let k = &self.keys[child..child + ARITY];
            let (a, b) = (usize::from(k[1] < k[0]), 2 + usize::from(k[3] < k[2]));
            let best = child + if k[b] < k[a] { b } else { a };
            self.keys[hole] = self.keys[best];
            self.kinds[hole] = self.kinds[best];
            hole = best;
        }
        while hole > 0 {
            let parent = (hole - 1) / ARITY;
            if self.keys[parent] <= last_key {
                break;
            }
            self.keys[hole] = self.keys[parent];
            self.kinds[hole] = self.kinds[parent];
            hole = parent;
        }
        self.keys[hole] = last_key;
        self.kinds[hole] = last_kind;
        Some(first)
    }
}

#[cfg(test)]
mod tests {
    use super::super::dist::Rng;
    use super::*;
    use std::collections::BTreeMap;

    fn tag(kind: EventKind) -> u32 {
        match kind {
            EventKind::UserWakes { source } => source,
            _ => u32::MAX,
        }
    }

    /// Interleaved pushes and pops, with many equal times (ties broken by the sequence part
    /// of the key), pop exactly in key order, as an ordered map of the same keys does.
    #[test]
    fn pops_in_key_order_through_interleaved_pushes() {
        let mut rng = Rng::new(3);
        let mut queue = EventQueue::default();
        let mut reference = BTreeMap::new();
        for seq in 0..20_000u32 {
            if rng.uniform() < 0.55 {
                // Few distinct times, so equal times are common.
                let time = (rng.uniform() * 64.0).floor();
                let key = (u128::from(f64::to_bits(time)) << 64) | u128::from(seq);
                queue.push(key, EventKind::UserWakes { source: seq });
                reference.insert(key, seq);
            } else {
                assert_eq!(queue.first_key(), reference.keys().next().copied());
                let expected = reference.pop_first().map(|(_, seq)| seq);
                assert_eq!(queue.pop().map(tag), expected);
            }
        }
        while let Some((_, seq)) = reference.pop_first() {
            assert_eq!(queue.pop().map(tag), Some(seq));
        }
        assert!(queue.pop().is_none() && queue.first_key().is_none());
    }
}
