//! What each command asks of the local daemon ([`Command::request`]) and
//! how it fails (exit 255 for the exec family). Part of `cli`, in its own
//! file so that the definitions stay readable.

use super::*;

impl Command {
    /// Exec commands exit 255 on errors of `d` itself (as ssh does), the others 1.
    pub fn is_exec(&self) -> bool {
        matches!(
            self,
            Command::ExecOnPeer { .. }
                | Command::ExecOnPeerByIp { .. }
                | Command::RemotePull { .. }
                | Command::RemoteBd { .. }
                | Command::RemoteDeployDaemon { .. }
                | Command::Jobs {
                    action: Some(JobsAction::Rerun { .. }),
                    ..
                }
                | Command::Rsh { .. }
                | Command::Cp(..)
        )
    }

    /// The request sent to the daemon for this command; `None` for the ones
    /// `d` answers itself (`completions`).
    pub fn request(&self) -> Option<Request> {
        Some(match self {
            Command::Ping => Request::Ping {},
            Command::GetPeerStatus => Request::GetPeerStatus {},
            Command::SetPeerConfig {
                role,
                id,
                leader,
                labels,
                force,
                ..
            } => Request::SetPeerConfig {
                role: role.clone(),
                id: id.clone(),
                leader: leader.clone(),
                mesh_key: None,
                labels: labels.as_deref().map(fleet::split_labels),
                force: *force,
            },
            Command::RegisterWorker { leader, .. } => Request::RegisterWorker {
                leader: leader.clone(),
                mesh_key: None,
            },
            Command::ListPeers => Request::ListPeers {},
            Command::Invite { list: true, .. } => Request::ListInvites {},
            Command::Invite {
                revoke: Some(token),
                ..
            } => Request::RevokeInvite {
                token: token.clone(),
            },
            Command::Invite {
                id,
                ttl,
                replace,
                leader,
                count,
                ..
            } => Request::Invite {
                id: id.clone(),
                ttl: Some(*ttl),
                replace: *replace,
                // `--leader` alone: a token for a new leader; with
                // addresses: the addresses a worker's token names.
                leaders: leader.clone().unwrap_or_default(),
                as_leader: leader.as_ref().is_some_and(|l| l.is_empty()),
                count: (*count != 1).then_some(*count),
            },
            Command::Revoke { peer } => Request::Revoke { peer: peer.clone() },
            Command::RotateKey => Request::RotateKey {},
            Command::RetireMeshKey => Request::RetireMeshKey {},
            Command::Join { token, id } => Request::Join {
                token: token.clone(),
                id: id.clone(),
            },
            Command::GetPeerInfo { peer } => Request::GetPeerInfo { peer: peer.clone() },
            Command::DeletePeer { peer } => Request::DeletePeer { peer: peer.clone() },
            Command::GetPeerIdByIp { ip } => Request::GetPeerIdByIp { ip: ip.clone() },
            Command::DbSanityCheck => Request::DbSanityCheck {},
            Command::Doctor { peer } => Request::Doctor { peer: peer.clone() },
            Command::ExecLog { peer, limit } => Request::ExecLog {
                peer: peer.clone(),
                limit: Some(*limit),
            },
            Command::ExecOnPeer {
                peer,
                directory,
                shell_cmd,
                timeout,
                job,
                ..
            } => Request::ExecOnPeer {
                peer: peer.clone(),
                directory: directory.clone(),
                shell_cmd: shell_cmd.clone(),
                timeout: *timeout,
                raw_output: false,
                opts: job.opts(),
            },
            Command::ExecOnPeerByIp {
                ip,
                directory,
                shell_cmd,
                timeout,
                job,
            } => Request::ExecOnPeerByIp {
                ip: ip.clone(),
                directory: directory.clone(),
                shell_cmd: shell_cmd.clone(),
                timeout: *timeout,
                raw_output: false,
                opts: job.opts(),
            },
            Command::Completions { .. }
            | Command::Mcp { .. }
            | Command::Targets { .. }
            | Command::Jobs { .. }
            | Command::Cp(..)
            | Command::Rsh { .. } => return None,
            // Run per peer by `ops::run`.
            Command::RemotePull { .. }
            | Command::RemoteBd { .. }
            | Command::RemoteDeployDaemon { .. } => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn try_parse(args: &[&str]) -> Result<Cli, clap::Error> {
        let m = Cli::command().try_get_matches_from(args)?;
        Cli::from_arg_matches(&m)
    }

    #[test]
    fn definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_before_or_after() {
        let a = try_parse(&["d", "--json", "--socket", "/x.sock", "ping"]).unwrap();
        let b = try_parse(&["d", "ping", "--socket", "/x.sock", "--json"]).unwrap();
        for c in [a, b] {
            assert!(c.json);
            assert_eq!(c.socket, PathBuf::from("/x.sock"));
            assert_eq!(c.command.request(), Some(Request::Ping {}));
        }
    }

    #[test]
    fn camel_case_names_and_flags() {
        let c = try_parse(&[
            "d",
            "execOnPeer",
            "--peer",
            "vps",
            "--directory",
            "/opt",
            "--shellCmd",
            "git pull",
            "--timeout",
            "5",
        ])
        .unwrap();
        assert!(c.command.is_exec());
        assert_eq!(
            c.command.request(),
            Some(Request::ExecOnPeer {
                peer: "vps".into(),
                directory: "/opt".into(),
                shell_cmd: "git pull".into(),
                timeout: Some(5),
                raw_output: false,
                opts: Default::default(),
            })
        );
        let c = try_parse(&["d", "execOnPeerByIp", "10.0.0.1", "/opt", "pwd"]).unwrap();
        assert_eq!(
            c.command.request(),
            Some(Request::ExecOnPeerByIp {
                ip: "10.0.0.1".into(),
                directory: "/opt".into(),
                shell_cmd: "pwd".into(),
                timeout: None,
                raw_output: false,
                opts: Default::default(),
            })
        );
        let c = try_parse(&[
            "d",
            "execOnPeer",
            "--peer",
            "vps",
            "--directory",
            "",
            "--shellCmd",
            "id",
            "-n",
            "-u",
            "app",
            "--env",
            "A=1=2",
            "--env",
            "B=",
        ])
        .unwrap();
        let Command::ExecOnPeer { job, .. } = &c.command else {
            panic!("{c:?}")
        };
        assert!(job.no_stdin);
        assert_eq!(job.opts().user.as_deref(), Some("app"));
        assert_eq!(
            job.opts().env,
            vec![("A".into(), "1=2".into()), ("B".into(), String::new())]
        );
        assert!(try_parse(&[
            "d",
            "execOnPeer",
            "--peer",
            "vps",
            "--directory",
            "",
            "--shellCmd",
            "id",
            "--env",
            "=x",
        ])
        .is_err());
        let c = try_parse(&["d", "setPeerConfig", "--role", "boss"]).unwrap();
        assert_eq!(
            c.command.request(),
            Some(Request::SetPeerConfig {
                role: Some("boss".into()),
                id: None,
                leader: None,
                mesh_key: None,
                labels: None,
                force: false,
            })
        );
        let c = try_parse(&["d", "setPeerConfig", "--labels", "web, prod"]).unwrap();
        let Some(Request::SetPeerConfig { labels, .. }) = c.command.request() else {
            panic!()
        };
        assert_eq!(labels, Some(vec!["web".to_string(), "prod".to_string()]));
        let c = try_parse(&["d", "setPeerConfig", "--labels", ""]).unwrap();
        let Some(Request::SetPeerConfig { labels, .. }) = c.command.request() else {
            panic!()
        };
        assert_eq!(labels, Some(vec![]));
        for bad in ["all", "web,web", "a b", "-x"] {
            assert!(
                try_parse(&["d", "setPeerConfig", "--labels", bad]).is_err(),
                "{bad}"
            );
        }
        for name in [
            "getPeerStatus",
            "listPeers",
            "dbSanityCheck",
            "registerWorker",
        ] {
            assert!(try_parse(&["d", name]).is_ok(), "{name}");
        }
    }

    #[test]
    fn bad_peer_id_is_a_usage_error() {
        let e = try_parse(&["d", "getPeerInfo", "--peer", "a;b"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }
}
