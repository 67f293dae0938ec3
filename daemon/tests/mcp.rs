//! `d mcp` end to end: the MCP SDK's own client (rmcp) spawns `d mcp` (which
//! becomes d-mcp) against a real mesh of test daemons on loopback, lists the
//! tools and calls them. Prints one MCP exec round trip as a `MEASURE` line.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use common::{client_bin, Mesh};
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use rmcp::ServiceExt;
use serde_json::{json, Value};

/// d-mcp of this build, beside `d` (built here if `cargo test` has not).
fn mcp_bin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let path = client_bin().with_file_name("d-mcp");
            let status = Command::new(env!("CARGO"))
                .args(["build", "-q", "-p", "d-mcp"])
                .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
                .status()
                .expect("run cargo build -p d-mcp");
            assert!(status.success(), "cannot build d-mcp");
            path
        })
        .clone()
}

type Client = RunningService<RoleClient, ()>;

/// The SDK's client on `d --socket SOCKET mcp EXTRA...`.
async fn connect(socket: &std::path::Path, extra: &[&str]) -> Client {
    let cmd = tokio::process::Command::new(client_bin()).configure(|c| {
        c.arg("--socket").arg(socket).arg("mcp").args(extra);
    });
    let transport = TokioChildProcess::new(cmd).expect("spawn d mcp");
    ().serve(transport)
        .await
        .expect("MCP initialize with d mcp")
}

async fn call(client: &Client, tool: &str, args: Value) -> CallToolResult {
    let Value::Object(args) = args else {
        panic!("arguments must be an object")
    };
    client
        .call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(args))
        .await
        .unwrap_or_else(|e| panic!("call {tool}: {e}"))
}

fn structured(r: &CallToolResult) -> &Value {
    r.structured_content.as_ref().expect("structured content")
}

#[test]
fn an_assistant_drives_a_mesh_through_d_mcp() {
    assert!(mcp_bin().exists());
    let mesh = Mesh::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = connect(&mesh.laptop.socket(), &[]).await;
        let info = client.peer_info().expect("server info");
        assert_eq!(info.server_info.as_ref().map(|s| s.name.as_str()), Some("d-mcp"));
        assert!(info.instructions.as_deref().unwrap_or("").contains("listPeers"));

        // The tools, each with a schema whose every field is described.
        let tools = client.list_all_tools().await.expect("tools/list");
        let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
        names.sort();
        // `cp` since this d has `d cp`; `user` since d has `execOnPeer --user`.
        assert_eq!(
            names,
            ["cp", "doctor", "execLog", "execOnPeer", "execOnPeers", "getPeerStatus", "listPeers"]
        );
        let exec = tools.iter().find(|t| t.name == "execOnPeer").unwrap();
        let props = exec.input_schema["properties"].as_object().unwrap();
        for f in ["peer", "directory", "command", "timeout", "user"] {
            assert!(props[f]["description"].is_string(), "{f}: {props:?}");
        }
        assert_eq!(exec.input_schema["required"], json!(["peer", "command"]));

        // cp: a file pushed to a peer, byte for byte.
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("from mcp");
        std::fs::write(&src, b"copied by an assistant\n").unwrap();
        let to = dir.path().join("sub/copy");
        let r = call(
            &client,
            "cp",
            json!({"sources": [common::path_str(&src)], "destination": format!("desktop:{}", common::path_str(&to)),
                   "mkdir": true}),
        )
        .await;
        assert_eq!(structured(&r)["exitStatus"], 0, "{r:?}");
        assert_eq!(std::fs::read(&to).unwrap(), b"copied by an assistant\n");

        // listPeers: the registry, asked of the leader through laptop.
        let r = call(&client, "listPeers", json!({})).await;
        let v = structured(&r);
        assert_eq!(v["total"], 3, "{v}");
        let mut ids: Vec<&str> = v["peers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap())
            .collect();
        ids.sort();
        assert_eq!(ids, ["desktop", "laptop", "vps"]);

        // execOnPeer on another peer: streams apart, status, duration.
        let r = call(
            &client,
            "execOnPeer",
            json!({"peer": "desktop", "directory": "/tmp",
                   "command": "pwd; echo to-stderr >&2; exit 3"}),
        )
        .await;
        assert_ne!(r.is_error, Some(true), "{r:?}");
        let v = structured(&r);
        assert_eq!(v["exitStatus"], 3, "{v}");
        assert_eq!(v["stdout"], "/tmp\n");
        assert_eq!(v["stderr"], "to-stderr\n");
        assert_eq!(v["stdoutTruncated"], false);
        assert_eq!(v["timedOut"], false);
        assert!(v["durationMs"].as_u64().is_some(), "{v}");
        // The text content carries the same answer for clients without structured content.
        let text = r.content[0].as_text().expect("text content").text.clone();
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), *v);

        // A timeout ends the command: 124, timedOut.
        let r = call(
            &client,
            "execOnPeer",
            json!({"peer": "vps", "command": "sleep 30", "timeout": 1}),
        )
        .await;
        let v = structured(&r);
        assert_eq!(v["exitStatus"], 124, "{v}");
        assert_eq!(v["timedOut"], true, "{v}");

        // d's own error: a tool error with d's message and hint.
        let r = call(
            &client,
            "execOnPeer",
            json!({"peer": "nosuch", "command": "true"}),
        )
        .await;
        assert_eq!(r.is_error, Some(true), "{r:?}");
        let v = structured(&r);
        assert_eq!(v["error"], "Peer not found: nosuch", "{v}");
        assert!(v["hint"].as_str().unwrap().contains("d invite"), "{v}");
        let r = call(
            &client,
            "execOnPeer",
            json!({"peer": "vps,desktop", "command": "true"}),
        )
        .await;
        assert_eq!(r.is_error, Some(true));
        assert!(structured(&r)["hint"].as_str().unwrap().contains("execOnPeers"));

        // Fan-out.
        let r = call(
            &client,
            "execOnPeers",
            json!({"peers": "all", "directory": "/", "command": "echo hi from $(hostname)-ish; exit 0"}),
        )
        .await;
        let v = structured(&r);
        assert_eq!(v["total"], 3, "{v}");
        assert_eq!(v["allSucceeded"], true, "{v}");
        for p in v["results"].as_array().unwrap() {
            assert_eq!(p["exitCode"], 0, "{p}");
            assert!(p["stdout"].as_str().unwrap().starts_with("hi from"), "{p}");
        }

        // execLog, getPeerStatus (here and of another peer), doctor.
        let r = call(&client, "execLog", json!({"limit": 3})).await;
        let v = structured(&r);
        assert_eq!(v["records"].as_array().unwrap().len(), 3, "{v}");
        let r = call(&client, "getPeerStatus", json!({})).await;
        assert_eq!(structured(&r)["id"], "laptop");
        let r = call(&client, "getPeerStatus", json!({"peer": "vps"})).await;
        assert_eq!(structured(&r)["role"], "leader", "{r:?}");
        let r = call(&client, "doctor", json!({"peer": "desktop"})).await;
        let v = structured(&r);
        assert!(v["checks"].as_array().unwrap().len() > 3, "{v}");

        // Bad arguments are refused, not run.
        let r = call(
            &client,
            "execOnPeer",
            json!({"peer": "vps", "command": "touch /tmp/d-mcp-ran", "sudo": true}),
        )
        .await;
        assert_eq!(r.is_error, Some(true), "unknown field accepted: {r:?}");
        let text = &r.content[0].as_text().expect("text").text;
        assert!(text.contains("unknown field `sudo`"), "{text}");

        // Cancelling a call (the client gives up) ends the remote command.
        let marker = mesh.vps.dir.path().join("cancelled-job.pid");
        let cmd = format!("echo $$ > {}; exec sleep 60", marker.display());
        let gave_up = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            call(&client, "execOnPeer", json!({"peer": "vps", "command": cmd})),
        )
        .await;
        assert!(gave_up.is_err(), "the call should still be running");
        let pid: u32 = std::fs::read_to_string(&marker)
            .expect("the job started")
            .trim()
            .parse()
            .unwrap();
        common::wait_for(
            std::time::Duration::from_secs(15),
            "the cancelled job's process to end",
            || !common::alive(pid),
        );

        // One exec round trip: the assistant's call to d-mcp, d, the daemon
        // on laptop, desktop's daemon running `true`, and back.
        let mut times = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            let r = call(
                &client,
                "execOnPeer",
                json!({"peer": "desktop", "directory": "/", "command": "true"}),
            )
            .await;
            times.push(t.elapsed());
            assert_eq!(structured(&r)["exitStatus"], 0);
        }
        times.sort();
        eprintln!(
            "MEASURE MCP execOnPeer round trip (laptop -> desktop, `true`, debug build): median {:.1} ms, min {:.1} ms over 20",
            times[10].as_secs_f64() * 1000.0,
            times[0].as_secs_f64() * 1000.0
        );
        client.cancel().await.expect("close the session");

        // Bounded output: 100,000 bytes come back as the first and last 2 KiB.
        let client = connect(&mesh.laptop.socket(), &["--maxOutput", "4096"]).await;
        let r = call(
            &client,
            "execOnPeer",
            json!({"peer": "vps", "command": "head -c 100000 /dev/zero | tr '\\0' x; echo END"}),
        )
        .await;
        let v = structured(&r);
        assert_eq!(v["stdoutBytes"], 100_004, "{v}");
        assert_eq!(v["stdoutTruncated"], true);
        let out = v["stdout"].as_str().unwrap();
        assert!(out.len() < 4200, "{}", out.len());
        assert!(out.ends_with("xxEND\n") && out.contains("bytes left out by d-mcp"));
        client.cancel().await.expect("close the session");
    });
}
