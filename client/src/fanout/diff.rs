//! `--diff` (ClusterShell's `clush --diff`): the peers' stdout compared. The
//! output most peers printed is the reference; every other distinct output
//! is printed as a unified diff against it (the `similar` crate), under a
//! `--- REFERENCE PEERS (N)` / `+++ PEERS (M)` header. Nothing is printed
//! when every peer printed the same.

use similar::TextDiff;

use super::peer::PeerRun;
use super::Outcome;
use crate::output::{Key, Spool};
use crate::stdio;

/// `new`'s output as a unified diff against the reference's, under the
/// `--- PEERS (N)` / `+++ PEERS (M)` header.
fn unified(old: (&[&str], &[u8]), new: (&[&str], &[u8])) -> String {
    let name = |peers: &[&str]| format!("{} ({})", peers.join(","), peers.len());
    let (a, b) = (
        String::from_utf8_lossy(old.1),
        String::from_utf8_lossy(new.1),
    );
    TextDiff::configure()
        .timeout(MAX_TIME)
        .diff_lines(a.as_ref(), b.as_ref())
        .unified_diff()
        .context_radius(3)
        .missing_newline_hint(true)
        .header(&name(old.0), &name(new.0))
        .to_string()
}

/// Largest stdout `--diff` shows as text (4 MiB): a bigger one is said to
/// differ, with its size, instead of being read into memory. Measured with
/// `similar` on two 15 MB outputs of 2,000,000 lines: 264 MB of client
/// memory and 22 s (a debug build, the review's run); the cost grows with
/// the text, so 4 MiB keeps it near a quarter of that, with [`MAX_TIME`].
pub const MAX_TEXT: u64 = 4 << 20;

/// Most time one diff may take (`similar`'s deadline: past it, the diff
/// found so far is printed, coarser but correct).
const MAX_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// `--diff` for a finished fan-out: the stdout of the peers that exited.
pub(super) fn print(peers: &[String], runs: &[PeerRun]) {
    let outputs: Vec<(&str, &Spool)> = peers
        .iter()
        .zip(runs)
        .filter_map(|(p, r)| match (&r.outcome, &r.stdout) {
            (Outcome::Exit(_), Some(out)) => Some((p.as_str(), out)),
            _ => None,
        })
        .collect();
    each_diff(&outputs, &mut |text| stdio::out(text.as_bytes()));
}

/// The outputs grouped by length and SHA-256 (nothing read back), the most
/// common first (ties: the one seen first); then `f` gets each other group's
/// diff against it, one group in memory at a time, until it returns false.
fn each_diff(outputs: &[(&str, &Spool)], f: &mut dyn FnMut(String) -> bool) {
    let mut groups: Vec<(Vec<&str>, &Spool, Key)> = Vec::new();
    for &(peer, out) in outputs {
        let key = out.key();
        match groups.iter_mut().find(|g| g.2 == key) {
            Some(g) => g.0.push(peer),
            None => groups.push((vec![peer], out, key)),
        }
    }
    // Stable: equal counts keep the order first seen.
    groups.sort_by_key(|g| std::cmp::Reverse(g.0.len()));
    let Some(((ref_peers, ref_out, _), rest)) = groups.split_first() else {
        return;
    };
    let reference = ref_out.to_vec(MAX_TEXT);
    for (peers, out, _) in rest {
        let text = match (&reference, out.to_vec(MAX_TEXT)) {
            (Some(a), Some(b)) => unified((ref_peers, a), (peers, &b)),
            _ => format!(
                "--- {} +++ {}: outputs differ ({} and {} bytes; --diff shows at most {} MiB as text, --outdir keeps them whole)\n",
                ref_peers.join(","),
                peers.join(","),
                ref_out.len(),
                out.len(),
                MAX_TEXT >> 20
            ),
        };
        if !f(text) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::Store;

    /// The diffs of `raw` as `--diff` prints them.
    fn render(raw: &[(&str, &[u8])]) -> String {
        let store = Store::new();
        let spools: Vec<(&str, Spool)> = raw
            .iter()
            .map(|&(p, o)| {
                let mut s = Spool::new(&store);
                s.push(o);
                (p, s)
            })
            .collect();
        let outputs: Vec<(&str, &Spool)> = spools.iter().map(|(p, s)| (*p, s)).collect();
        let mut text = String::new();
        each_diff(&outputs, &mut |t| {
            text.push_str(&t);
            true
        });
        text
    }

    #[test]
    fn the_most_common_output_is_the_reference() {
        let outputs: Vec<(&str, &[u8])> = vec![
            ("vps", b"a\nb\nc\n"),
            ("desktop", b"a\nB\nc\n"),
            ("laptop", b"a\nb\nc\n"),
            ("web1", b"a\nb\nc\n"),
        ];
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
