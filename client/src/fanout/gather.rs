//! `--gather`: each distinct output once, under the peers that printed it
//! (dshbak -c).

use crate::stdio;

/// What `--gather` puts above each distinct output (dshbak's separator).
const RULE: &str = "----------------";

/// Peers whose (stdout, stderr) are identical, in the order first seen;
/// peers that printed nothing are left out (the summary names them).
pub fn groups<'a>(
    outputs: &'a [(&'a str, &'a [u8], &'a [u8])],
) -> Vec<(Vec<&'a str>, &'a [u8], &'a [u8])> {
    let mut groups: Vec<(Vec<&str>, &[u8], &[u8])> = Vec::new();
    for &(peer, out, err) in outputs {
        if out.is_empty() && err.is_empty() {
            continue;
        }
        match groups.iter_mut().find(|g| g.1 == out && g.2 == err) {
            Some(g) => g.0.push(peer),
            None => groups.push((vec![peer], out, err)),
        }
    }
    groups
}

/// `----------------\nvps,desktop\n----------------\n`
pub fn header(peers: &[&str]) -> String {
    format!("{RULE}\n{}\n{RULE}\n", peers.join(","))
}

/// Print the `--gather` groups: the header and stdout on stdout, stderr on
/// stderr, each ending with a newline.
pub fn print_groups(outputs: &[(&str, &[u8], &[u8])]) {
    for (peers, out, err) in groups(outputs) {
        let mut o = header(&peers).into_bytes();
        o.extend_from_slice(out);
        if !out.is_empty() && !out.ends_with(b"\n") {
            o.push(b'\n');
        }
        stdio::out(&o);
        if !err.is_empty() {
            let mut e = err.to_vec();
            if !e.ends_with(b"\n") {
                e.push(b'\n');
            }
            stdio::err(&e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_groups_identical_output() {
        let outputs: Vec<(&str, &[u8], &[u8])> = vec![
            ("vps", b"hi\n", b""),
            ("desktop", b"other\n", b""),
            ("laptop", b"hi\n", b""),
            ("silent", b"", b""),
            ("errs", b"hi\n", b"oops\n"),
        ];
        let g = groups(&outputs);
        assert_eq!(g.len(), 3);
        assert_eq!(g[0].0, vec!["vps", "laptop"]);
        assert_eq!(g[1].0, vec!["desktop"]);
        assert_eq!((g[2].0.clone(), g[2].2), (vec!["errs"], &b"oops\n"[..]));
        assert_eq!(
            header(&g[0].0),
            "----------------\nvps,laptop\n----------------\n"
        );
    }
}
