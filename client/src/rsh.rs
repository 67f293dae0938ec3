//! `d rsh`: the argument shape other programs give ssh, so that rsync
//! (`rsync -e 'd rsh'`) and git (`GIT_SSH_COMMAND='d rsh'`) use d as their
//! transport: `[options] [user@]host [command...]`, options as ssh's
//! getopt reads them (`-l user`, `-p port`, `-o opt`, bundled `-nT`, values
//! attached `-p22` or apart).
//!
//! What applies is honoured: `-l`/`user@` run the command as that user
//! (`--user`), `-n` gives it /dev/null, `-o SendEnv=NAME` passes NAME from
//! our environment (`--env`: how git asks for protocol v2), `-G` prints
//! the destination (git runs `ssh -G` to learn that it may pass `-p` and
//! `-o`). What does not apply to d is ignored (ports, keys, ciphers, config
//! files, verbosity, `-T`); `-t`/`-tt` and no command run on a terminal
//! as with ssh (`d -t`); what d cannot do is refused, saying so
//! (forwarding `-L -R -D -W -w -f -N`).
//! The command words are joined with spaces, as ssh joins them, for the
//! user's login shell on the target; stdin and stdout are the job's, byte
//! for byte, and `d rsh` exits with the command's status (255 for errors of
//! d itself, as ssh).

use d_proto::control::{ExecOpts, Request};
use d_proto::types::ErrorBody;

/// ssh options without a value that d ignores.
const IGNORED_FLAGS: &str = "1246AaCgKkqsTVvXxYy";
/// ssh options with a value that d ignores.
const IGNORED_VALUES: &str = "BbcEeFIiJmOPpQS";
/// ssh options d cannot honour, and why.
fn refused(flag: char) -> Option<&'static str> {
    Some(match flag {
        'L' | 'R' | 'D' | 'W' | 'w' => "d does not forward ports or tunnels",
        'f' => "d rsh does not go to the background (-f)",
        'N' => "d rsh runs a command; -N (no command) does not apply",
        'M' => "d has no connection sharing to master (-M)",
        _ => return None,
    })
}

/// What a `d rsh` line asks for.
#[derive(Debug, PartialEq, Eq)]
pub struct Rsh {
    pub peer: String,
    pub user: Option<String>,
    /// The command line for the remote shell.
    pub command: String,
    pub no_stdin: bool,
    /// Variables asked for with `-o SendEnv=NAME`.
    pub send_env: Vec<String>,
    /// `-G`: print the destination, run nothing.
    pub print_config: bool,
    /// `-t` given this many times (a terminal: `-t` if stdin is one, `-tt` anyway).
    pub tty: u8,
}

fn usage(msg: impl Into<String>) -> ErrorBody {
    ErrorBody::invalid(msg).hint("d rsh [-l USER] [-p PORT] [-o OPT]... [USER@]PEER COMMAND...")
}

/// Read ssh's arguments (without `d rsh`).
pub fn parse(args: &[String]) -> Result<Rsh, ErrorBody> {
    let mut r = Rsh {
        peer: String::new(),
        user: None,
        command: String::new(),
        no_stdin: false,
        send_env: Vec::new(),
        print_config: false,
        tty: 0,
    };
    let mut i = 0;
    while let Some(a) = args.get(i) {
        if a == "--" {
            i += 1;
            break;
        }
        let Some(flags) = a.strip_prefix('-').filter(|f| !f.is_empty()) else {
            break;
        };
        for (at, c) in flags.char_indices() {
            if IGNORED_VALUES.contains(c) || "lo".contains(c) {
                // The value: the rest of this word, or the next word.
                let rest = &flags[at + c.len_utf8()..];
                let value = if rest.is_empty() {
                    i += 1;
                    args.get(i)
                        .cloned()
                        .ok_or_else(|| usage(format!("-{c} needs a value")))?
                } else {
                    rest.to_string()
                };
                match c {
                    'l' => r.user = Some(value),
                    'o' => option(&mut r, &value)?,
                    _ => {}
                }
                break;
            }
            match c {
                'n' => r.no_stdin = true,
                't' => r.tty = r.tty.saturating_add(1),
                'G' => r.print_config = true,
                c if IGNORED_FLAGS.contains(c) => {}
                c => match refused(c) {
                    Some(why) => return Err(ErrorBody::invalid(format!("d rsh: {why}"))),
                    None => return Err(usage(format!("d rsh: unknown option -{c}"))),
                },
            }
        }
        i += 1;
    }
    let host = args.get(i).ok_or_else(|| usage("d rsh needs a peer"))?;
    match host.rsplit_once('@') {
        Some((u, h)) => {
            r.user = Some(u.to_string());
            r.peer = h.to_string();
        }
        None => r.peer = host.clone(),
    }
    d_proto::validate_peer_id(&r.peer).map_err(|e| usage(format!("d rsh: {e}")))?;
    if r.user.as_deref() == Some("") {
        return Err(usage("d rsh: empty user name"));
    }
    r.command = args[i + 1..].join(" ");
    if r.command.is_empty() {
        // No command: the login shell, on a terminal (as `ssh host`).
        r.tty = r.tty.max(1);
    }
    Ok(r)
}

/// One `-o` option: `SendEnv` is honoured, the rest ignored (`-o
/// BatchMode=yes`, `-o ServerAliveInterval=5` mean nothing to d).
fn option(r: &mut Rsh, opt: &str) -> Result<(), ErrorBody> {
    let (k, v) = opt
        .split_once('=')
        .or_else(|| opt.split_once(' '))
        .unwrap_or((opt, ""));
    if k.trim().eq_ignore_ascii_case("SendEnv") {
        r.send_env.extend(v.split_whitespace().map(str::to_string));
    }
    Ok(())
}

impl Rsh {
    /// The exec request: no time limit (a transfer takes what it takes),
    /// the peer's default directory (the user's home), our stdin if it is a
    /// pipe, file or socket.
    pub fn request(&self) -> Request {
        let env = self
            .send_env
            .iter()
            .filter(|n| !n.contains(['*', '?']))
            .filter_map(|n| std::env::var(n).ok().map(|v| (n.clone(), v)))
            .collect();
        Request::ExecOnPeer {
            peer: self.peer.clone(),
            directory: String::new(),
            shell_cmd: self.command.clone(),
            timeout: Some(0),
            raw_output: false,
            opts: ExecOpts {
                stdin: crate::input::wanted(self.no_stdin),
                user: self.user.clone(),
                env,
                ..ExecOpts::default()
            },
        }
    }

    /// What `-G` prints (ssh prints its whole configuration; programs that
    /// run `ssh -G` look only at whether it succeeds).
    pub fn config_text(&self) -> String {
        format!(
            "hostname {}\nuser {}\nport {}\n",
            self.peer,
            self.user.as_deref().unwrap_or("-"),
            d_proto::DEFAULT_PORT
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Rsh, ErrorBody> {
        parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn rsync_and_git_shapes() {
        // rsync -e 'd rsh' dir/ desktop:/srv/dir/
        let r = p(&[
            "desktop",
            "rsync",
            "--server",
            "-logDtpre.iLsfxCIvu",
            ".",
            "/srv/dir/",
        ])
        .unwrap();
        assert_eq!(r.peer, "desktop");
        assert_eq!(r.command, "rsync --server -logDtpre.iLsfxCIvu . /srv/dir/");
        // rsync with a user and a port: -l app -p 2222
        let r = p(&["-l", "app", "-p", "2222", "desktop", "rsync", "--server"]).unwrap();
        assert_eq!(
            (r.user.as_deref(), r.peer.as_str()),
            (Some("app"), "desktop")
        );
        // git: -o SendEnv=GIT_PROTOCOL, user@host, one quoted command word.
        let r = p(&[
            "-o",
            "SendEnv=GIT_PROTOCOL",
            "git@desktop",
            "git-upload-pack '/srv/r.git'",
        ])
        .unwrap();
        assert_eq!(r.user.as_deref(), Some("git"));
        assert_eq!(r.send_env, ["GIT_PROTOCOL"]);
        assert_eq!(r.command, "git-upload-pack '/srv/r.git'");
        // git's probe.
        assert!(p(&["-G", "desktop"]).unwrap().print_config);
        // Bundled and attached forms.
        let r = p(&[
            "-nTx",
            "-p22",
            "-lroot",
            "-oBatchMode=yes",
            "-4",
            "desktop",
            "true",
        ])
        .unwrap();
        assert!(r.no_stdin);
        assert_eq!(r.user.as_deref(), Some("root"));
        assert_eq!(r.command, "true");
        let r = p(&["--", "desktop", "-x"]).unwrap();
        assert_eq!(r.command, "-x");
    }

    #[test]
    fn terminals_as_ssh() {
        assert_eq!(p(&["-t", "desktop", "top"]).unwrap().tty, 1);
        assert_eq!(p(&["-tt", "desktop", "top"]).unwrap().tty, 2);
        assert_eq!(p(&["desktop", "top"]).unwrap().tty, 0);
        let r = p(&["desktop"]).unwrap();
        assert_eq!((r.tty, r.command.as_str()), (1, ""));
    }

    #[test]
    fn what_d_cannot_do_is_refused() {
        for (args, want) in [
            (&["-L", "80:localhost:80", "desktop", "x"][..], "forward"),
            (&[][..], "needs a peer"),
            (&["-Z", "desktop", "x"][..], "unknown option -Z"),
            (&["-p"][..], "-p needs a value"),
            (&["bad/peer", "x"][..], "d rsh"),
            (&["@desktop", "x"][..], "empty user"),
        ] {
            let e = p(args).unwrap_err();
            assert!(e.error.contains(want), "{args:?}: {}", e.error);
        }
    }
}
