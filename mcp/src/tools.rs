//! The MCP tools. Each runs the `d` client (`d --json ...`, or `d execOnPeer`
//! with its output streamed and bounded), so there is one implementation of
//! every command, its routing, fan-out and errors: the client's.
//!
//! Answers are JSON objects (MCP `structuredContent`, also sent as text).
//! Lists are wrapped: `{"peers": [...], "total": N, "truncated": bool}`.
//! Errors of `d` itself come back as tool errors (`isError`) with `d`'s
//! `{"error": ..., "hint": ...}`.

use std::time::Duration;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, Implementation, ServerCapabilities, ServerConfig};
use rmcp::{tool, tool_handler, tool_router, ErrorData, ServerHandler};
use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

use crate::answer::{bound_list, bound_text, d_error, exec_result, tool_error};
use crate::args::{
    CpArgs, DoctorArgs, ExecArgs, ExecLogArgs, FanoutArgs, Features, NoArgs, PeerOpt,
};
use crate::run::Runner;

/// Most bytes read from `d --json` (a registry of 10,000 peers is ~3 MB).
const JSON_READ_CAP: usize = 64 * 1024 * 1024;
/// Extra seconds `d` gets beyond the command's own timeout before it is
/// stopped (the client's own fan-out deadline is the timeout + 10 s).
const GRACE_SECS: u64 = 20;
/// How long a query (listPeers, execLog, doctor, ...) may take before `d` is stopped.
const QUERY_LIMIT: Duration = Duration::from_secs(120);

/// The server: the tools and how to run `d`.
#[derive(Clone)]
pub struct DTools {
    runner: Runner,
    /// Bytes of each output stream kept per call (per peer for fan-out:
    /// this divided by the number of peers, at least [`MIN_PER_PEER`]).
    max_output: usize,
    features: Features,
    tool_router: ToolRouter<Self>,
}

/// Smallest per-stream bound of one peer in a fan-out.
pub const MIN_PER_PEER: usize = 2048;

/// `--flag=value`: a value that starts with `-` stays a value.
fn flag(name: &str, value: impl std::fmt::Display) -> String {
    format!("--{name}={value}")
}

#[tool_router]
impl DTools {
    pub fn new(runner: Runner, max_output: usize, features: Features) -> DTools {
        let mut tool_router = Self::tool_router();
        if !features.cp {
            tool_router.remove_route("cp");
        }
        if !features.exec_user {
            if let Some(route) = tool_router.map.get_mut("execOnPeer") {
                let schema = std::sync::Arc::make_mut(&mut route.attr.input_schema);
                if let Some(Value::Object(props)) = schema.get_mut("properties") {
                    props.remove("user");
                }
            }
        }
        DTools {
            runner,
            max_output,
            features,
            tool_router,
        }
    }

    /// `d --json ARGS`: the parsed answer, or a tool error with `d`'s message.
    async fn d_json(
        &self,
        args: Vec<String>,
        ct: &CancellationToken,
    ) -> Result<Value, CallToolResult> {
        self.d_json_within(args, Some(QUERY_LIMIT), ct).await
    }

    /// [`DTools::d_json`], stopping `d` after `limit` (none: `d` ends by itself).
    async fn d_json_within(
        &self,
        args: Vec<String>,
        limit: Option<Duration>,
        ct: &CancellationToken,
    ) -> Result<Value, CallToolResult> {
        let mut all = vec!["--json".to_string()];
        all.extend(args);
        let ran = self
            .runner
            .run(&all, (JSON_READ_CAP, 64 * 1024), limit, ct)
            .await
            .map_err(|e| tool_error(e, None))?;
        if ran.stdout.truncated() {
            return Err(tool_error(
                format!(
                    "d's answer is larger than {} MiB",
                    JSON_READ_CAP / 1024 / 1024
                ),
                Some("narrow the request (a peer, a limit)".into()),
            ));
        }
        let v: Value = serde_json::from_str(&ran.stdout.text()).map_err(|e| {
            let (msg, hint) = d_error(&ran.stderr.last_text())
                .unwrap_or_else(|| (format!("d gave no JSON answer: {e}"), None));
            tool_error(msg, hint)
        })?;
        if ran.status != 0 && v.get("error").is_some() {
            return Err(CallToolResult::structured_error(v));
        }
        Ok(v)
    }

    /// A list answer as `{KEY: [...], total, truncated}`, bounded.
    fn list(&self, key: &str, v: Value) -> CallToolResult {
        let items = match v {
            Value::Array(a) => a,
            other => vec![other],
        };
        let total = items.len();
        let (items, truncated) = bound_list(items, self.max_output * 4);
        let mut m = Map::new();
        m.insert(key.into(), Value::Array(items));
        m.insert("total".into(), total.into());
        m.insert("truncated".into(), truncated.into());
        CallToolResult::structured(Value::Object(m))
    }

    /// An object answer, bounded as text if it is very large.
    fn object(&self, v: Value) -> CallToolResult {
        let text = v.to_string();
        if text.len() <= self.max_output * 4 {
            let v = if v.is_object() {
                v
            } else {
                json!({ "answer": v })
            };
            return CallToolResult::structured(v);
        }
        let (text, _) = bound_text(&text, self.max_output * 4);
        CallToolResult::structured(json!({ "answerText": text, "truncated": true }))
    }

    #[tool(
        name = "listPeers",
        description = "The mesh's peers, from the leader's registry: id, address, role, online, last seen, d version, hostname, WireGuard handshake age. Start here to learn which peer ids exist. Answer: {peers: [...], total, truncated}."
    )]
    async fn list_peers(
        &self,
        _args: Parameters<NoArgs>,
        ct: CancellationToken,
    ) -> Result<CallToolResult, ErrorData> {
        Ok(match self.d_json(vec!["listPeers".into()], &ct).await {
            Ok(v) => self.list("peers", v),
            Err(e) => e,
        })
    }

    #[tool(
        name = "getPeerStatus",
        description = "A daemon's own state: role, id, leader, link to the leader (and why it is down), listen address, uptime, version, WireGuard interface and per-peer handshakes. Of this machine, or of `peer`."
    )]
    async fn get_peer_status(
        &self,
        Parameters(a): Parameters<PeerOpt>,
        ct: CancellationToken,
    ) -> Result<CallToolResult, ErrorData> {
        let args = match a.peer {
            Some(p) => vec![format!("@{p}"), "getPeerStatus".into()],
            None => vec!["getPeerStatus".into()],
        };
        Ok(match self.d_json(args, &ct).await {
            Ok(v) => self.object(v),
            Err(e) => e,
        })
    }

    #[tool(
        name = "execOnPeer",
        description = "Run a shell command on one peer and wait for it. Answer: {peer, exitStatus, timedOut, stdout, stderr, stdoutBytes, stderrBytes, stdoutTruncated, stderrTruncated, durationMs}. exitStatus is the command's status (128+N if a signal N ended it, 124 if its timeout did). Output longer than the bound keeps its first and last halves. stdin is empty; there is no terminal. A failure of d itself (unknown peer, no link) is a tool error with `error` and `hint`."
    )]
    async fn exec_on_peer(
        &self,
        Parameters(a): Parameters<ExecArgs>,
        ct: CancellationToken,
    ) -> Result<CallToolResult, ErrorData> {
        // One plain id: `all` and the target-expression forms (`a,b`, `web*`,
        // `web[1-3]`, `@label`, `a&b`, `failed`) name several.
        if matches!(a.peer.as_str(), "all" | "failed")
            || a.peer
                .contains([',', '*', '?', '[', '&', '!', '(', '@', ':'])
        {
            return Ok(tool_error(
                format!("execOnPeer runs on one peer, not '{}'", a.peer),
                Some("use execOnPeers for several peers".into()),
            ));
        }
        let mut args = vec![
            "execOnPeer".to_string(),
            flag("peer", &a.peer),
            flag("directory", a.directory.as_deref().unwrap_or("")),
            flag("shellCmd", &a.command),
        ];
        if let Some(t) = a.timeout {
            args.push(flag("timeout", t));
        }
        if let Some(u) = &a.user {
            if !self.features.exec_user {
                return Ok(tool_error(
                    "this d has no execOnPeer --user",
                    Some(format!(
                        "run it as root, e.g. with `sudo -iu {u} ...` in the command"
                    )),
                ));
            }
            args.push(flag("user", u));
        }
        let limit = a
            .timeout
            .filter(|&t| t > 0)
            .map(|t| Duration::from_secs(t + GRACE_SECS));
        let ran = match self
            .runner
            .run(&args, (self.max_output, self.max_output), limit, &ct)
            .await
        {
            Ok(r) => r,
            Err(e) => return Ok(tool_error(e, None)),
        };
        Ok(exec_result(&a.peer, &ran))
    }

    #[tool(
        name = "execOnPeers",
        description = "Run a shell command on several peers at once (fan-out) and wait for all. Answer: {results: [{peer, exitCode, code, signal, timedOut, durationMs, stdout, stderr, stdoutTruncated, stderrTruncated, error}], total, truncated, allSucceeded}. Each peer's output is bounded (the bound divided among the peers). A peer that is unreachable or unknown has `error` set; the others still run."
    )]
    async fn exec_on_peers(
        &self,
        Parameters(a): Parameters<FanoutArgs>,
        ct: CancellationToken,
    ) -> Result<CallToolResult, ErrorData> {
        let mut args = vec![
            "execOnPeer".to_string(),
            flag("peer", &a.peers),
            flag("directory", a.directory.as_deref().unwrap_or("")),
            flag("shellCmd", &a.command),
        ];
        if let Some(t) = a.timeout {
            args.push(flag("timeout", t));
        }
        if let Some(p) = a.parallel {
            args.push(flag("parallel", p));
        }
        // d gives a silent peer up at its timeout + 10 s (40 s without one);
        // this guard only matters if d itself hangs.
        let limit = a
            .timeout
            .filter(|&t| t > 0)
            .map(|t| Duration::from_secs(t + GRACE_SECS));
        let v = match self.d_json_within(args, limit, &ct).await {
            Ok(v) => v,
            Err(e) => return Ok(e),
        };
        let mut peers = match v {
            Value::Array(a) => a,
            other => vec![other],
        };
        let per_peer = (self.max_output / peers.len().max(1)).max(MIN_PER_PEER);
        let mut all_ok = true;
        for p in &mut peers {
            let Some(obj) = p.as_object_mut() else {
                continue;
            };
            all_ok &= obj.get("exit_code").and_then(Value::as_i64) == Some(0);
            for stream in ["stdout", "stderr"] {
                let text = obj.get(stream).and_then(Value::as_str).unwrap_or("");
                let (t, cut) = bound_text(text, per_peer);
                obj.insert(stream.into(), t.into());
                obj.insert(format!("{stream}Truncated"), cut.into());
            }
            // camelCase, like the rest of the answers.
            for (from, to) in [
                ("exit_code", "exitCode"),
                ("timed_out", "timedOut"),
                ("duration_ms", "durationMs"),
            ] {
                if let Some(x) = obj.remove(from) {
                    obj.insert(to.into(), x);
                }
            }
        }
        let total = peers.len();
        let (peers, truncated) = bound_list(peers, self.max_output * 4);
        Ok(CallToolResult::structured(json!({
            "results": peers,
            "total": total,
            "truncated": truncated,
            "allSucceeded": all_ok,
        })))
    }

    #[tool(
        name = "execLog",
        description = "The audit log of this machine: jobs run here and jobs asked from here, newest first, with requester, local user, target, directory, command, exit, duration and output size. Answer: {records: [...], total, truncated}."
    )]
    async fn exec_log(
        &self,
        Parameters(a): Parameters<ExecLogArgs>,
        ct: CancellationToken,
    ) -> Result<CallToolResult, ErrorData> {
        let mut args = vec!["execLog".to_string()];
        if let Some(p) = &a.peer {
            args.push(flag("peer", p));
        }
        if let Some(l) = a.limit {
            args.push(flag("limit", l));
        }
        Ok(match self.d_json(args, &ct).await {
            Ok(v) => self.list("records", v),
            Err(e) => e,
        })
    }

    #[tool(
        name = "doctor",
        description = "The troubleshooting checklist, run for you: local daemon, role and id, mesh key, peer port, WireGuard interface, leader link, handshakes, the target's daemon answering, versions in step. One entry per check with ok and, when it failed, the fix. Run it first when a peer cannot be reached."
    )]
    async fn doctor(
        &self,
        Parameters(a): Parameters<DoctorArgs>,
        ct: CancellationToken,
    ) -> Result<CallToolResult, ErrorData> {
        let mut args = vec!["doctor".to_string()];
        if let Some(p) = &a.peer {
            args.push(flag("peer", p));
        }
        Ok(match self.d_json(args, &ct).await {
            Ok(v) => self.list("checks", v),
            // A failed check makes `d doctor` exit 1 with its checklist on stdout.
            Err(e) => e,
        })
    }

    #[tool(
        name = "cp",
        description = "Copy files between this machine and peers, or between peers: a remote path is PEER:PATH. Answer: {exitStatus, stdout, stderr, durationMs} as `d cp` reports it."
    )]
    async fn cp(
        &self,
        Parameters(a): Parameters<CpArgs>,
        ct: CancellationToken,
    ) -> Result<CallToolResult, ErrorData> {
        if a.sources.is_empty() {
            return Ok(tool_error("cp needs at least one source", None));
        }
        let mut args = vec!["cp".to_string()];
        if a.recursive {
            args.push("-r".into());
        }
        if a.preserve {
            args.push("-p".into());
        }
        if a.mkdir {
            args.push("--mkdir".into());
        }
        if let Some(u) = &a.user {
            args.push(flag("user", u));
        }
        args.push("--".into());
        args.extend(a.sources.iter().cloned());
        args.push(a.destination.clone());
        let ran = match self
            .runner
            .run(&args, (self.max_output, self.max_output), None, &ct)
            .await
        {
            Ok(r) => r,
            Err(e) => return Ok(tool_error(e, None)),
        };
        Ok(exec_result("", &ran))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for DTools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("d-mcp", d_proto::version_string()))
            .with_instructions(INSTRUCTIONS)
    }
}

/// Sent to the assistant when it connects (MCP `instructions`).
const INSTRUCTIONS: &str = "d runs commands on the machines (peers) of a WireGuard mesh, through the local d-daemon. \
Call listPeers first to learn the peer ids. execOnPeer runs one command on one peer and returns its exit status, stdout and stderr \
(bounded; check stdoutTruncated); execOnPeers runs it on several. Pass `directory` instead of `cd`; set `timeout` for long commands. \
Commands run as root unless `user` is given: prefer read-only commands, and say what you will change before changing it. \
When a peer cannot be reached, run doctor with that peer. execLog shows what ran where.";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_of_every_tool_is_described() {
        let tools = DTools::new(
            Runner {
                d: "d".into(),
                socket: None,
            },
            1000,
            Features {
                cp: true,
                exec_user: true,
            },
        );
        let list = tools.tool_router.list_all();
        let names: Vec<&str> = list.iter().map(|t| t.name.as_ref()).collect();
        for want in [
            "listPeers",
            "getPeerStatus",
            "execOnPeer",
            "execOnPeers",
            "execLog",
            "doctor",
            "cp",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        for t in &list {
            assert!(
                t.description.as_ref().is_some_and(|d| d.len() > 40),
                "{}",
                t.name
            );
            let props = t.input_schema.get("properties").and_then(Value::as_object);
            for (field, schema) in props.into_iter().flatten() {
                assert!(
                    schema
                        .get("description")
                        .and_then(Value::as_str)
                        .is_some_and(|d| d.len() > 10),
                    "{}.{field} has no description: {schema}",
                    t.name
                );
            }
        }
    }

    #[test]
    fn missing_features_hide_their_tool_and_field() {
        let tools = DTools::new(
            Runner {
                d: "d".into(),
                socket: None,
            },
            1000,
            Features::default(),
        );
        assert!(tools.tool_router.get("cp").is_none());
        let exec = tools.tool_router.get("execOnPeer").unwrap();
        let props = exec.input_schema.get("properties").unwrap();
        assert!(props.get("user").is_none() && props.get("command").is_some());
    }
}
