//! Which node should run an agent: its preferred node when that node is live, otherwise the live node with
//! the highest rendezvous hash. Every node computes the same answer from the same live set, and removing a
//! node moves only that node's agents.

use std::collections::BTreeSet;

/// The node that should own `agent` among `live` nodes; None if no node is live.
pub fn place<'n>(agent: &str, preferred: Option<&str>, live: &'n BTreeSet<String>) -> Option<&'n str> {
    if let Some(p) = preferred
        && let Some(n) = live.get(p)
    {
        return Some(n.as_str());
    }
    live.iter().max_by_key(|node| score(agent, node)).map(String::as_str)
}

/// FNV-1a over `agent \0 node`: stable across processes and versions (unlike `DefaultHasher`).
fn score(agent: &str, node: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in agent.bytes().chain([0u8]).chain(node.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // A final mix so that similar names spread well.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn preferred_node_wins_only_when_live() {
        let live = nodes(&["a", "b", "c"]);
        assert_eq!(place("x", Some("b"), &live), Some("b"));
        let other = place("x", Some("zz"), &live);
        assert_eq!(other, place("x", None, &live));
        assert_eq!(place("x", None, &BTreeSet::new()), None);
    }

    #[test]
    fn agents_spread_and_only_a_dead_nodes_agents_move() {
        let live = nodes(&["n1", "n2", "n3"]);
        let agents: Vec<String> = (0..60).map(|i| format!("agent-{i}")).collect();
        let before: Vec<&str> = agents.iter().map(|a| place(a, None, &live).unwrap_or_default()).collect();
        for n in ["n1", "n2", "n3"] {
            let count = before.iter().filter(|p| **p == n).count();
            assert!(count >= 8, "node {n} got only {count} of 60 agents");
        }
        let after_live = nodes(&["n1", "n3"]);
        for (a, was) in agents.iter().zip(&before) {
            let now = place(a, None, &after_live).unwrap_or_default();
            if *was != "n2" {
                assert_eq!(now, *was, "{a} moved although its node is alive");
            } else {
                assert_ne!(now, "n2");
            }
        }
    }
}
