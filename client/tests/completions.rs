//! Shell completion, driven the way the shells drive it.
//!
//! bash: the generated script is sourced in `bash -c`, COMP_WORDS, COMP_CWORD,
//! COMP_LINE and COMP_POINT are set as readline sets them, the completion
//! function is called with (command, word, previous word), and COMPREPLY is
//! read back. Peer ids come from a fake daemon on a UNIX socket (a thread
//! answering `listPeers` with PeerInfo rows) or, when it cannot answer, from
//! the cache, which lives in a temporary HOME / XDG_CACHE_HOME.
//!
//! zsh and fish (when installed): the scripts must load; fish's
//! `complete -C` completes real command lines, so it is driven too.
//!
//! The checked-in scripts under completions/ must be what `d completions`
//! prints: `scripts/gen-completions.sh` rewrites them.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const SCRIPTS: [(&str, &str); 3] = [("bash", "d.bash"), ("zsh", "_d"), ("fish", "d.fish")];

fn d_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_d"))
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn generated(shell: &str) -> String {
    let out = Command::new(d_bin())
        .args(["completions", shell])
        .output()
        .unwrap();
    assert!(out.status.success(), "d completions {shell}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn lines(s: &str) -> Vec<String> {
    s.lines().map(str::to_string).collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------------------
// A fake daemon

#[derive(Clone, Copy)]
enum Answer {
    /// `{"event":"result","result":[PeerInfo...]}` with these ids.
    Peers(&'static [&'static str]),
    /// What a worker says when its leader is unreachable.
    NoLeader,
    /// Accept, read, never answer (a hung daemon).
    Silent,
}

/// Serves until dropped; the socket file stays (a daemon that died).
struct FakeDaemon {
    path: PathBuf,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for FakeDaemon {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop; if nobody can connect, leave the thread be.
        if UnixStream::connect(&self.path).is_ok() {
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}

fn peer_row(id: &str) -> Value {
    json!({
        "id": id,
        "addr": "198.19.0.2",
        "port": 3600,
        "role": "worker",
        "online": true,
        "last_seen": 1_795_449_228u64,
        "version": "0.1.0 (test)",
        "hostname": id,
        "first_seen": 1_795_000_000u64,
    })
}

impl FakeDaemon {
    fn start(path: PathBuf, answer: Answer) -> FakeDaemon {
        if let Answer::Peers(ids) = answer {
            // The answer must be what the real client decodes.
            let rows: Vec<Value> = ids.iter().map(|id| peer_row(id)).collect();
            serde_json::from_value::<Vec<d_proto::types::PeerInfo>>(Value::Array(rows))
                .expect("fake rows parse as Vec<PeerInfo>");
        }
        let _ = fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, stopped) = (requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            for conn in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let mut line = String::new();
                if BufReader::new(&conn).read_line(&mut line).is_err() {
                    continue;
                }
                count.fetch_add(1, Ordering::SeqCst);
                let req: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                let reply = match answer {
                    _ if req["command"] != "listPeers" => json!({
                        "event": "error", "error": format!("unexpected request {line}"),
                    }),
                    Answer::Peers(ids) => json!({
                        "event": "result",
                        "result": ids.iter().map(|id| peer_row(id)).collect::<Vec<_>>(),
                    }),
                    Answer::NoLeader => json!({
                        "event": "error",
                        "error": "Not connected to leader",
                        "hint": "leader daemon running? WireGuard up? leader address?",
                    }),
                    Answer::Silent => {
                        held.push(conn);
                        continue;
                    }
                };
                let _ = conn.write_all(format!("{reply}\n").as_bytes());
            }
        });
        FakeDaemon {
            path,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

// ---------------------------------------------------------------------------
// An isolated user: HOME, XDG_CACHE_HOME, D_SOCKET, `d` on PATH

struct Env {
    dir: tempfile::TempDir,
    socket: PathBuf,
    scripts: PathBuf,
    budget_ms: String,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("d-compl")
            .tempdir()
            .unwrap();
        let scripts = dir.path().join("scripts");
        fs::create_dir_all(dir.path().join("home")).unwrap();
        fs::create_dir_all(&scripts).unwrap();
        for (shell, file) in SCRIPTS {
            fs::write(scripts.join(file), generated(shell)).unwrap();
        }
        Env {
            socket: dir.path().join("d.sock"),
            dir,
            scripts,
            budget_ms: "3000".into(),
        }
    }

    fn daemon(&self, answer: Answer) -> FakeDaemon {
        FakeDaemon::start(self.socket.clone(), answer)
    }

    fn cache_file(&self) -> PathBuf {
        self.dir.path().join("cache").join("d").join("peers")
    }

    fn script(&self, file: &str) -> PathBuf {
        self.scripts.join(file)
    }

    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let bin_dir = d_bin().parent().unwrap().to_path_buf();
        let path = format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut c = Command::new(program);
        c.env("PATH", path)
            .env("HOME", self.dir.path().join("home"))
            .env("XDG_CACHE_HOME", self.dir.path().join("cache"))
            .env("D_SOCKET", &self.socket)
            // Generous, so a loaded machine does not turn a live answer into
            // a cached one; the hung-daemon case sets the real default.
            .env("D_COMPLETE_TIMEOUT_MS", &self.budget_ms)
            .current_dir(self.dir.path());
        c
    }

    /// Complete `line` (cursor at its end) in bash; COMPREPLY.
    fn bash(&self, line: &str) -> Vec<String> {
        self.bash_with(line, false)
    }

    /// `at_breaks`: `@` back in COMP_WORDBREAKS after loading, as on the
    /// first TAB when bash-completion loads the script lazily.
    fn bash_with(&self, line: &str, at_breaks: bool) -> Vec<String> {
        let r = readline_split(line, if at_breaks { "=@" } else { "=" });
        let out = self
            .command("bash")
            .arg("--norc")
            .arg("-c")
            .arg(BASH_DRIVER)
            .arg("bash")
            .arg(self.script("d.bash"))
            .arg(if at_breaks { "1" } else { "" })
            .arg(line)
            .arg(r.cword.to_string())
            .arg(&r.cur)
            .arg(&r.prev)
            .args(&r.words)
            .output()
            .unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(
            out.status.success(),
            "bash driver failed for {line:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        lines(&stdout)
    }
}

/// Sources the script, sets what readline sets, calls the function bound to
/// `d` as bash does (`func command word previous-word`), prints COMPREPLY.
const BASH_DRIVER: &str = r#"
source "$1" || exit 1
at_breaks=$2 COMP_LINE=$3 COMP_POINT=${#3} COMP_CWORD=$4 cur=$5 prev=$6
shift 6
COMP_WORDS=("$@")
if [[ $COMP_WORDBREAKS == *@* ]]; then echo "COMP_WORDBREAKS still has @" >&2; exit 1; fi
[[ -n $at_breaks ]] && COMP_WORDBREAKS="$COMP_WORDBREAKS@"
func=$(complete -p d | sed -n 's/.*-F \([^ ]*\) .*/\1/p')
"$func" "${COMP_WORDS[0]}" "$cur" "$prev"
for c in "${COMPREPLY[@]}"; do
    printf '%s\n' "$c"
done
"#;

/// What bash hands a completion function for `line`, cursor at the end:
/// words split at blanks and at `breaks` (a break character is a word of its
/// own), the index of the current word, the word readline replaces (`$2`; it
/// keeps a leading `@`, one of bash's special prefixes) and the previous word.
struct Split {
    words: Vec<String>,
    cword: usize,
    cur: String,
    prev: String,
}

fn readline_split(line: &str, breaks: &str) -> Split {
    let mut tokens: Vec<&str> = line.split_whitespace().collect();
    if tokens.is_empty() || line.ends_with(char::is_whitespace) {
        tokens.push("");
    }
    let mut words = Vec::new();
    for tok in &tokens {
        let mut piece = String::new();
        let mut pushed = false;
        for ch in tok.chars() {
            if breaks.contains(ch) {
                if !piece.is_empty() {
                    words.push(std::mem::take(&mut piece));
                }
                words.push(ch.to_string());
                pushed = true;
            } else {
                piece.push(ch);
            }
        }
        if !piece.is_empty() || !pushed {
            words.push(piece);
        }
    }
    let last = tokens.last().unwrap();
    let cur = match last.rfind(|c| breaks.contains(c)) {
        Some(i) if last[i..].starts_with('@') => last[i..].to_string(),
        Some(i) => last[i + 1..].to_string(),
        None => last.to_string(),
    };
    let cword = words.len() - 1;
    let prev = if cword > 0 {
        words[cword - 1].clone()
    } else {
        String::new()
    };
    Split {
        words,
        cword,
        cur,
        prev,
    }
}

#[test]
fn readline_split_matches_bash() {
    // As observed in an interactive bash 5.2 with the default COMP_WORDBREAKS.
    let s = readline_split("x @vp", "=@");
    assert_eq!(
        (s.words, s.cword, s.cur, s.prev),
        (strs(&["x", "@", "vp"]), 2, "@vp".into(), "@".into())
    );
    let s = readline_split("x @", "=@");
    assert_eq!(
        (s.words, s.cword, s.cur, s.prev),
        (strs(&["x", "@"]), 1, "@".into(), "x".into())
    );
    let s = readline_split("x --peer=", "=@");
    assert_eq!(
        (s.words, s.cword, s.cur, s.prev),
        (strs(&["x", "--peer", "="]), 2, "".into(), "--peer".into())
    );
    let s = readline_split("x --peer=vp", "=@");
    assert_eq!(
        (s.words, s.cword, s.cur, s.prev),
        (
            strs(&["x", "--peer", "=", "vp"]),
            3,
            "vp".into(),
            "=".into()
        )
    );
    let s = readline_split("x --peer ", "=");
    assert_eq!(
        (s.words, s.cword, s.cur, s.prev),
        (strs(&["x", "--peer", ""]), 2, "".into(), "--peer".into())
    );
}

// ---------------------------------------------------------------------------
// The tests

#[test]
fn checked_in_scripts_are_current() {
    for (shell, file) in SCRIPTS {
        let path = repo().join("completions").join(file);
        let checked_in = fs::read_to_string(&path).unwrap_or_default();
        assert!(
            checked_in == generated(shell),
            "{} differs from `d completions {shell}`: run scripts/gen-completions.sh",
            path.display()
        );
    }
}

#[test]
fn bash_script_parses_and_documents_the_at_sign() {
    let script = generated("bash");
    assert!(script.contains("COMP_WORDBREAKS=${COMP_WORDBREAKS//@/}"));
    let out = Command::new("bash")
        .arg("-n")
        .arg(Env::new().script("d.bash"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn bash_completes_commands_flags_and_values() {
    let env = Env::new();
    assert_eq!(
        sorted(env.bash("d execOn")),
        strs(&["execOnPeer", "execOnPeerByIp"])
    );
    assert_eq!(
        sorted(env.bash("d getPeer")),
        strs(&["getPeerIdByIp", "getPeerInfo", "getPeerStatus"])
    );
    assert_eq!(env.bash("d --json ping --ver"), strs(&["--verbose"]));
    assert_eq!(env.bash("d execOnPeer --sh"), strs(&["--shellCmd"]));
    let shells = env.bash("d completions ");
    for s in ["bash", "fish", "zsh"] {
        assert!(shells.contains(&s.to_string()), "{shells:?}");
    }
    assert_eq!(env.bash("d completions z"), strs(&["zsh"]));
    assert_eq!(
        env.bash("d setPeerConfig --role "),
        strs(&["leader", "worker"])
    );
    assert_eq!(env.bash("d setPeerConfig --role w"), strs(&["worker"]));
}

#[test]
fn bash_completes_directories_only() {
    let env = Env::new();
    let root = env.dir.path();
    fs::create_dir_all(root.join("sub1")).unwrap();
    fs::create_dir_all(root.join("sub2")).unwrap();
    fs::write(root.join("subfile"), "").unwrap();
    assert_eq!(
        sorted(env.bash("d execOnPeer --directory su")),
        strs(&["sub1", "sub2"])
    );
    assert_eq!(
        sorted(env.bash("d execOnPeer --peer vps --directory=su")),
        strs(&["sub1", "sub2"])
    );
    let all = env.bash("d execOnPeer --directory ");
    assert!(all.contains(&"sub1".to_string()), "{all:?}");
    assert!(!all.contains(&"subfile".to_string()), "{all:?}");
}

#[test]
fn bash_completes_live_peer_ids() {
    let env = Env::new();
    let daemon = env.daemon(Answer::Peers(&["vps", "desktop", "laptop"]));
    assert_eq!(
        env.bash("d execOnPeer --peer "),
        strs(&["desktop", "laptop", "vps"])
    );
    assert_eq!(env.bash("d execOnPeer --peer l"), strs(&["laptop"]));
    assert_eq!(
        env.bash("d execOnPeer --directory /tmp --peer=d"),
        strs(&["desktop"])
    );
    assert_eq!(env.bash("d getPeerInfo --peer v"), strs(&["vps"]));
    // A fan-out list: the ids not yet in it, after it.
    assert_eq!(env.bash("d execOnPeer --peer vps,l"), strs(&["vps,laptop"]));
    assert_eq!(
        env.bash("d execOnPeer --peer=vps,laptop,"),
        strs(&["vps,laptop,desktop"])
    );
    assert_eq!(
        env.bash("d --json deletePeer --peer x"),
        Vec::<String>::new()
    );
    assert!(daemon.requests() >= 5, "the daemon was asked");

    // A successful answer is remembered, privately.
    let cache = env.cache_file();
    assert_eq!(
        fs::read_to_string(&cache).unwrap(),
        "desktop\nlaptop\nvps\n"
    );
    assert_eq!(
        fs::metadata(&cache).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // `--socket` on the command line wins over D_SOCKET.
    let other = FakeDaemon::start(env.dir.path().join("other.sock"), Answer::Peers(&["alpha"]));
    let line = format!("d --socket {} doctor --peer ", other.path.display());
    assert_eq!(env.bash(&line), strs(&["alpha"]));
    assert_eq!(other.requests(), 1);
}

#[test]
fn bash_completes_at_peer() {
    let env = Env::new();
    let _daemon = env.daemon(Answer::Peers(&["vps", "desktop", "laptop"]));
    let all = strs(&["@all", "@desktop", "@laptop", "@vps"]);
    assert_eq!(env.bash("d @"), all);
    assert_eq!(env.bash("d @v"), strs(&["@vps"]));
    assert_eq!(env.bash("d @vps,"), strs(&["@vps,desktop", "@vps,laptop"]));
    assert_eq!(
        env.bash("d --json --socket /nonexistent @l"),
        strs(&["@laptop"])
    );
    // With `@` still a word break (the first TAB of a lazily loaded script).
    assert_eq!(env.bash_with("d @", true), all);
    assert_eq!(env.bash_with("d @v", true), strs(&["@vps"]));
    // Only the first word is a peer.
    let after = env.bash("d ping @");
    assert!(!after.iter().any(|c| c.starts_with('@')), "{after:?}");
}

#[test]
fn bash_answers_from_the_cache_when_the_daemon_cannot() {
    let mut env = Env::new();
    // Nothing known yet and nobody to ask: no candidates (not file names).
    assert_eq!(env.bash("d execOnPeer --peer "), Vec::<String>::new());

    {
        let _daemon = env.daemon(Answer::Peers(&["vps", "desktop"]));
        assert_eq!(env.bash("d execOnPeer --peer "), strs(&["desktop", "vps"]));
    }
    let want = strs(&["desktop", "vps"]);

    // 1. The daemon is gone (its socket file remains, nobody listens).
    assert_eq!(env.bash("d execOnPeer --peer "), want);
    fs::remove_file(&env.socket).unwrap();
    // 2. No socket at all.
    assert_eq!(env.bash("d execOnPeer --peer "), want);
    assert_eq!(env.bash("d @d"), strs(&["@desktop"]));
    // 3. A worker whose leader is unreachable answers with an error.
    {
        let daemon = env.daemon(Answer::NoLeader);
        assert_eq!(env.bash("d getPeerInfo --peer "), want);
        assert_eq!(daemon.requests(), 1);
    }
    // 4. A hung daemon: the budget (the default: 150 ms) runs out, then the
    // cache answers.
    env.budget_ms = "150".into();
    let daemon = env.daemon(Answer::Silent);
    let started = Instant::now();
    assert_eq!(env.bash("d execOnPeer --peer "), want);
    let took = started.elapsed();
    assert_eq!(daemon.requests(), 1);
    assert!(took < Duration::from_secs(2), "took {took:?}");
    println!("--peer completion with a hung daemon: {took:?} (bash included)");
}

#[test]
fn list_peers_fills_the_cache() {
    let env = Env::new();
    {
        let _daemon = env.daemon(Answer::Peers(&["vps", "laptop"]));
        let out = env.command(d_bin()).arg("listPeers").output().unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            fs::read_to_string(env.cache_file()).unwrap(),
            "laptop\nvps\n"
        );
    }
    fs::remove_file(&env.socket).unwrap();
    assert_eq!(env.bash("d deletePeer --peer "), strs(&["laptop", "vps"]));
    {
        let _daemon = env.daemon(Answer::Peers(&["x1"]));
        let out = env
            .command(d_bin())
            .args(["--json", "listPeers"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(fs::read_to_string(env.cache_file()).unwrap(), "x1\n");
    }
}

/// Printed, not asserted: the time of one `--peer` completion in bash (the
/// function, the `d __complete-peers` process and the daemon round trip).
#[test]
fn peer_completion_latency() {
    let env = Env::new();
    let daemon = env.daemon(Answer::Peers(&["vps", "desktop", "laptop"]));
    let script = r#"
source "$1"
COMP_LINE="d execOnPeer --peer " COMP_POINT=20 COMP_WORDS=(d execOnPeer --peer "") COMP_CWORD=3
for i in $(seq 20); do
    t0=$EPOCHREALTIME
    _d_complete d "" --peer
    t1=$EPOCHREALTIME
    echo "$(( (${t1/./} - ${t0/./}) )) ${#COMPREPLY[@]}"
done
"#;
    let measure = |what: &str| {
        let out = env
            .command("bash")
            .args(["--norc", "-c", script, "bash"])
            .arg(env.script("d.bash"))
            .output()
            .unwrap();
        let mut micros: Vec<u64> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                let mut f = l.split(' ');
                let us = f.next().unwrap().parse::<u64>().unwrap();
                assert_eq!(f.next(), Some("3"), "three ids");
                us
            })
            .collect();
        assert_eq!(micros.len(), 20, "{out:?}");
        micros.sort();
        println!(
            "--peer completion, {what}: median {:.2} ms, min {:.2} ms, max {:.2} ms (20 runs)",
            micros[10] as f64 / 1e3,
            micros[0] as f64 / 1e3,
            micros[19] as f64 / 1e3
        );
    };
    measure("live daemon");
    assert!(daemon.requests() >= 20);
    drop(daemon);
    fs::remove_file(&env.socket).unwrap();
    measure("daemon down, from the cache");
}

#[test]
fn zsh_script_loads() {
    if !have("zsh") {
        eprintln!("zsh not installed: skipped");
        return;
    }
    let env = Env::new();
    let out = env
        .command("zsh")
        .arg("-n")
        .arg(env.script("_d"))
        .output()
        .unwrap();
    assert!(out.status.success(), "zsh -n: {out:?}");
    // compinit finds it by its first line and binds it to `d`.
    let load = format!(
        "fpath=({} $fpath); autoload -Uz compinit && compinit -u -D && print -r -- $_comps[d]",
        env.scripts.display()
    );
    let out = env
        .command("zsh")
        .args(["-f", "-c", &load])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "_d", "{out:?}");
}

#[test]
fn fish_completes() {
    if !have("fish") {
        eprintln!("fish not installed: skipped");
        return;
    }
    let env = Env::new();
    let out = env
        .command("fish")
        .arg("-n")
        .arg(env.script("d.fish"))
        .output()
        .unwrap();
    assert!(out.status.success(), "fish -n: {out:?}");
    let complete = |line: &str| {
        let cmd = format!(
            "source {}; complete -C'{line}'",
            env.script("d.fish").display()
        );
        let out = env
            .command("fish")
            .args(["--no-config", "-c", &cmd])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        // `candidate<TAB>description`
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.split('\t').next().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        sorted(complete("d execOn")),
        strs(&["execOnPeer", "execOnPeerByIp"])
    );
    assert_eq!(
        complete("d setPeerConfig --role "),
        strs(&["leader", "worker"])
    );
    {
        let _daemon = env.daemon(Answer::Peers(&["vps", "laptop"]));
        assert_eq!(
            sorted(complete("d execOnPeer --peer ")),
            strs(&["laptop", "vps"])
        );
        assert_eq!(sorted(complete("d @")), strs(&["@all", "@laptop", "@vps"]));
    }
    fs::remove_file(&env.socket).unwrap();
    assert_eq!(
        sorted(complete("d getPeerInfo --peer ")),
        strs(&["laptop", "vps"])
    );
}
