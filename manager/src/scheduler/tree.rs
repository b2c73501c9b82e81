//! The placement tree of one batch: `spread=` preferences split the eligible nodes into label value
//! groups (one level per preference), each level keeps its children in a min-heap keyed by the
//! service's task count, and the leaves keep their nodes in a min-heap keyed by (tasks of the
//! service, tasks overall, node index). A placement is one walk down the heaps, not a rescan.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use super::constraint::node_value;
use super::filter::NodeInfo;

/// A node that passed the static filters, with its counts when the batch started.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidate {
    pub(crate) node: usize,
    pub(crate) service_tasks: u32,
    pub(crate) tasks: u32,
}

/// One level of the placement tree.
#[derive(Debug)]
pub(crate) enum Branch {
    /// Nodes, best first: fewest tasks of the service, then fewest overall, then lowest id.
    Leaf {
        heap: BinaryHeap<Reverse<(u32, u32, usize)>>,
        /// Nodes ranked after the heap's k best, for a batch of k tasks. They are never needed:
        /// the j-th placement (j <= k) touched at most j - 1 nodes, so an untouched node of the
        /// k best is still in the heap, still fits (nothing changed on it) and outranks them all.
        /// Kept as a fallback should the heap ever run dry.
        reserve: Vec<Reverse<(u32, u32, usize)>>,
    },
    /// Label value groups, best first: fewest tasks of the service, then value order.
    Inner {
        heap: BinaryHeap<Reverse<(u32, usize)>>,
        children: Vec<Branch>,
    },
}

impl Branch {
    /// Builds the tree for `candidates` and a batch of `batch` tasks, splitting on `spread` keys in
    /// order. Nodes lacking a key's label form a group of their own, ordered after the labelled
    /// groups on ties.
    pub(crate) fn build(
        nodes: &[NodeInfo],
        spread: &[String],
        candidates: Vec<Candidate>,
        batch: usize,
    ) -> Self {
        let Some((key, rest)) = spread.split_first() else {
            let mut ranked: Vec<(u32, u32, usize)> = candidates
                .into_iter()
                .map(|c| (c.service_tasks, c.tasks, c.node))
                .collect();
            let mut reserve = Vec::new();
            if batch > 0 && ranked.len() > batch {
                ranked.select_nth_unstable(batch - 1);
                reserve = ranked.split_off(batch).into_iter().map(Reverse).collect();
            }
            return Branch::Leaf {
                heap: ranked.into_iter().map(Reverse).collect(),
                reserve,
            };
        };
        let mut groups: BTreeMap<(bool, Option<&str>), Vec<Candidate>> = BTreeMap::new();
        for c in candidates {
            let value = nodes.get(c.node).and_then(|n| node_value(&n.node, key));
            groups.entry((value.is_none(), value)).or_default().push(c);
        }
        let mut heap = BinaryHeap::with_capacity(groups.len());
        let mut children = Vec::with_capacity(groups.len());
        for (i, members) in groups.into_values().enumerate() {
            let count = members.iter().map(|c| c.service_tasks).sum();
            heap.push(Reverse((count, i)));
            children.push(Branch::build(nodes, rest, members, batch));
        }
        Branch::Inner { heap, children }
    }

    /// Places one task on the best node that still accepts it and returns the node's index.
    /// `try_place(node, service_tasks)` re-checks the filters that placements change and, when the
    /// node still fits, records the task there and returns the node's new (service tasks, tasks)
    /// counts. A node or group that can take nothing more is dropped: within a batch, room only
    /// shrinks.
    pub(crate) fn place(
        &mut self,
        try_place: &mut impl FnMut(usize, u32) -> Option<(u32, u32)>,
    ) -> Option<usize> {
        match self {
            Branch::Leaf { heap, reserve } => loop {
                let Some(Reverse((service_tasks, _, node))) = heap.pop() else {
                    if reserve.is_empty() {
                        return None;
                    }
                    heap.extend(reserve.drain(..));
                    continue;
                };
                if let Some((service_tasks, tasks)) = try_place(node, service_tasks) {
                    heap.push(Reverse((service_tasks, tasks, node)));
                    return Some(node);
                }
            },
            Branch::Inner { heap, children } => {
                while let Some(Reverse((count, i))) = heap.pop() {
                    let placed = children.get_mut(i).and_then(|child| child.place(try_place));
                    if let Some(node) = placed {
                        heap.push(Reverse((count + 1, i)));
                        return Some(node);
                    }
                }
                None
            }
        }
    }
}
