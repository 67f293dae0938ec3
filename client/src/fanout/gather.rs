//! `--gather`: each distinct output once, under the peers that printed it
//! (dshbak -c).

use std::io::Write;

use crate::output::Spool;
use crate::stdio::{self, Stream};

/// What `--gather` puts above each distinct output (dshbak's separator).
const RULE: &str = "----------------";

/// Peers whose (stdout, stderr) are identical (by length and SHA-256,
/// without reading them back), in the order first seen; peers that printed
/// nothing are left out (the summary names them).
pub fn groups<'a>(
    outputs: &'a [(&'a str, &'a Spool, &'a Spool)],
) -> Vec<(Vec<&'a str>, &'a Spool, &'a Spool)> {
    let mut groups: Vec<(Vec<&str>, &Spool, &Spool, _)> = Vec::new();
    for &(peer, out, err) in outputs {
        if out.is_empty() && err.is_empty() {
            continue;
        }
        let k = (out.key(), err.key());
        match groups.iter_mut().find(|g| g.3 == k) {
            Some(g) => g.0.push(peer),
            None => groups.push((vec![peer], out, err, k)),
        }
    }
    groups.into_iter().map(|(p, o, e, _)| (p, o, e)).collect()
}

/// `----------------\nvps,desktop\n----------------\n`
pub fn header(peers: &[&str]) -> String {
    format!("{RULE}\n{}\n{RULE}\n", peers.join(","))
}

/// Print the `--gather` groups: the header and stdout on stdout, stderr on
/// stderr, each ending with a newline; the outputs are streamed from their
/// spools, never read whole into memory.
pub fn print_groups(outputs: &[(&str, &Spool, &Spool)]) {
    for (peers, out, err) in groups(outputs) {
        stdio::with(Stream::Out, |w| {
            w.write_all(header(&peers).as_bytes())?;
            write_ended(out, w)
        });
        if !err.is_empty() {
            stdio::with(Stream::Err, |w| write_ended(err, w));
        }
    }
}

/// The spool's bytes, and a newline if they do not end with one.
fn write_ended(s: &Spool, w: &mut dyn Write) -> std::io::Result<()> {
    s.write_to(w)?;
    if !s.is_empty() && s.last() != Some(b'\n') {
        w.write_all(b"\n")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spools holding `raw`'s bytes.
    pub(crate) fn spools<'a>(raw: &[(&'a str, &[u8], &[u8])]) -> Vec<(&'a str, Spool, Spool)> {
        let store = crate::output::Store::new();
        raw.iter()
            .map(|&(p, o, e)| {
                let (mut so, mut se) = (Spool::new(&store), Spool::new(&store));
                so.push(o);
                se.push(e);
                (p, so, se)
            })
            .collect()
    }

    #[test]
    fn gather_groups_identical_output() {
        let raw: Vec<(&str, &[u8], &[u8])> = vec![
            ("vps", b"hi\n", b""),
            ("desktop", b"other\n", b""),
            ("laptop", b"hi\n", b""),
            ("silent", b"", b""),
            ("errs", b"hi\n", b"oops\n"),
        ];
        let spools = spools(&raw);
        let outputs: Vec<(&str, &Spool, &Spool)> =
            spools.iter().map(|(p, o, e)| (*p, o, e)).collect();
        let g = groups(&outputs);
        assert_eq!(g.len(), 3);
        assert_eq!(g[0].0, vec!["vps", "laptop"]);
        assert_eq!(g[1].0, vec!["desktop"]);
        assert_eq!(g[2].0, vec!["errs"]);
        assert_eq!(g[2].2.to_vec(100).unwrap(), b"oops\n");
        assert_eq!(
            header(&g[0].0),
            "----------------\nvps,laptop\n----------------\n"
        );
    }
}
