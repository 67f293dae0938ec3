//! `--diff` (ClusterShell's `clush --diff`): the peers' stdout compared. The
//! output most peers printed is the reference; every other distinct output
//! is printed as a unified diff against it (the `similar` crate), under a
//! `--- REFERENCE PEERS (N)` / `+++ PEERS (M)` header. Nothing is printed
//! when every peer printed the same.

use similar::TextDiff;

/// Distinct stdout outputs with the peers that printed them, the most
/// common first (ties: the one seen first).
pub fn groups<'a>(outputs: &[(&'a str, &'a [u8])]) -> Vec<(Vec<&'a str>, &'a [u8])> {
    let mut groups: Vec<(Vec<&str>, &[u8])> = Vec::new();
    for &(peer, out) in outputs {
        match groups.iter_mut().find(|g| g.1 == out) {
            Some(g) => g.0.push(peer),
            None => groups.push((vec![peer], out)),
        }
    }
    // Stable: equal counts keep the order first seen.
    groups.sort_by_key(|g| std::cmp::Reverse(g.0.len()));
    groups
}

/// The diffs of every output against the most common one (text: outputs
/// that are not UTF-8 are compared after a lossy conversion).
pub fn render(outputs: &[(&str, &[u8])]) -> String {
    let groups = groups(outputs);
    let Some((reference, rest)) = groups.split_first() else {
        return String::new();
    };
    let name = |peers: &[&str]| format!("{} ({})", peers.join(","), peers.len());
    let old = String::from_utf8_lossy(reference.1);
    let mut text = String::new();
    for (peers, out) in rest {
        let new = String::from_utf8_lossy(out);
        let diff = TextDiff::from_lines(old.as_ref(), new.as_ref());
        text.push_str(
            &diff
                .unified_diff()
                .context_radius(3)
                .missing_newline_hint(true)
                .header(&name(&reference.0), &name(peers))
                .to_string(),
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_common_output_is_the_reference() {
        let outputs: Vec<(&str, &[u8])> = vec![
            ("vps", b"a\nb\nc\n"),
            ("desktop", b"a\nB\nc\n"),
            ("laptop", b"a\nb\nc\n"),
            ("web1", b"a\nb\nc\n"),
        ];
        let g = groups(&outputs);
        assert_eq!(g[0].0, ["vps", "laptop", "web1"]);
        assert_eq!(g[1].0, ["desktop"]);
        assert_eq!(
            render(&outputs),
            "--- vps,laptop,web1 (3)\n+++ desktop (1)\n@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n"
        );
    }

    #[test]
    fn the_same_everywhere_prints_nothing() {
        let outputs: Vec<(&str, &[u8])> = vec![("vps", b"x\n"), ("desktop", b"x\n")];
        assert_eq!(render(&outputs), "");
        assert_eq!(render(&[]), "");
    }
}
