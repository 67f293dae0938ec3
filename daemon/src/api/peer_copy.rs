//! Peer-to-peer copies (`d cp A:/x B:/y`, protocol
//! [`d_proto::PROTOCOL_PEER_COPY`]): the files flow A -> B over A's own
//! session with B (or its leader's relay when A cannot reach B), never
//! through the client.
//!
//! - The requester's daemon ([`sign`]) asks A for a [`FilesOp::SendTo`]
//!   job carrying its signed claim over the receive job B is to run
//!   ([`receive_spec`]: made the same way on both daemons, so A cannot
//!   change what B runs; B checks the claim and records the requester).
//! - A ([`start`]) starts that receive job on B first, then its own file
//!   helper in send mode, and feeds the helper's output to B's input under
//!   the input credit window (at most [`d_proto::INPUT_WINDOW`] bytes in
//!   flight, whatever the pace of either end). B's summary line and both
//!   ends' messages come back to the requester as the job's output; the
//!   job's status is the larger of the two ends'.

use std::sync::Arc;

use d_proto::types::{ErrorBody, ErrorKind, ExecSpec, FilesOp, SendTo, Stream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::job::{self, files_label, Source};
use super::Daemon;
use crate::base::credit::{CreditQueue, Credits};
use crate::jobs::JobEvent;
use crate::mesh::route::{self, Route};
use crate::transport::peer_copy_refused;

/// The receive job a [`FilesOp::SendTo`] asks of its `to` peer, for
/// `requester` (a peer id), its local `user`, run as `run_as` there:
/// `(to, spec)`, or `None` for any other operation. Both the requester's
/// daemon (which signs it) and the sending peer (which starts it) make it
/// here, from the same fields.
pub fn receive_spec(
    op: &FilesOp,
    requester: &str,
    user: Option<String>,
    run_as: Option<String>,
) -> Option<(String, ExecSpec)> {
    let FilesOp::SendTo(st) = op else {
        return None;
    };
    let SendTo {
        to,
        dest,
        many,
        opts,
        ..
    } = &**st;
    let files = FilesOp::Receive {
        dest: dest.clone(),
        many: *many,
        opts: opts.clone(),
    };
    let spec = ExecSpec {
        timeout_secs: 0,
        requester: requester.to_string(),
        user,
        stdin: true,
        run_as,
        ..ExecSpec::new(String::new(), files_label(&files))
    };
    Some((
        to.clone(),
        ExecSpec {
            files: Some(files),
            ..spec
        },
    ))
}

/// On the requester's daemon: sign the receive job of a peer-to-peer copy
/// in `spec` (any other job is left as it is).
pub fn sign(daemon: &Daemon, spec: &mut ExecSpec) -> Result<(), ErrorBody> {
    let Some(op) = &spec.files else {
        return Ok(());
    };
    let Some((to, recv)) = receive_spec(op, &daemon.me(), spec.user.clone(), spec.run_as.clone())
    else {
        return Ok(());
    };
    d_proto::validate_peer_id(&to).map_err(ErrorBody::invalid)?;
    let signed = crate::mesh::claims::sign(&daemon.mesh, &recv, &to)?;
    if let Some(FilesOp::SendTo(st)) = &mut spec.files {
        st.claim = Some(signed);
    }
    Ok(())
}

/// Start a job of any kind: a copy to another peer ([`start`]: its two
/// halves are plain jobs) or anything [`job::start`] runs.
pub fn start_any(
    daemon: &Arc<Daemon>,
    spec: ExecSpec,
    cancel: CancellationToken,
    input: Option<Arc<CreditQueue>>,
) -> mpsc::Receiver<JobEvent> {
    if matches!(spec.files, Some(FilesOp::SendTo(_))) {
        start(daemon, spec, cancel, input)
    } else {
        job::start(daemon, spec, cancel, input)
    }
}

/// On the sending peer: run the [`FilesOp::SendTo`] job `spec` (see the
/// module's header). Its input is the sending helper's (what `to` holds,
/// [`SendTo::have`], protocol 13); without `have` it reads none.
pub fn start(
    daemon: &Arc<Daemon>,
    spec: ExecSpec,
    cancel: CancellationToken,
    input: Option<Arc<CreditQueue>>,
) -> mpsc::Receiver<JobEvent> {
    let have = matches!(&spec.files, Some(FilesOp::SendTo(st)) if st.have);
    let input = match input {
        Some(q) if !have => {
            q.close();
            None
        }
        other => other,
    };
    let (tx, rx) = mpsc::channel(4);
    let d = daemon.clone();
    daemon.tasks().tracker.spawn(async move {
        // However it ends, nothing more is read of the input.
        let kept = input.clone();
        let last = match run(&d, spec, &tx, cancel, input).await {
            Ok(ev) => ev,
            Err(e) => JobEvent::Failed(e),
        };
        if let Some(q) = kept {
            q.close();
        }
        let _ = tx.send(last).await;
    });
    rx
}

async fn run(
    daemon: &Arc<Daemon>,
    spec: ExecSpec,
    tx: &mpsc::Sender<JobEvent>,
    cancel: CancellationToken,
    input: Option<Arc<CreditQueue>>,
) -> Result<JobEvent, ErrorBody> {
    let me = daemon.me();
    let Some(FilesOp::SendTo(st)) = spec.files.clone() else {
        return Err(ErrorBody::invalid("not a peer-to-peer copy"));
    };
    let SendTo {
        sources,
        opts,
        claim,
        have,
        ..
    } = *st;

    let Some((to, mut recv)) = spec
        .files
        .as_ref()
        .and_then(|op| receive_spec(op, &spec.requester, spec.user.clone(), spec.run_as.clone()))
    else {
        return Err(ErrorBody::invalid("not a peer-to-peer copy"));
    };
    let Some(claim) = claim else {
        return Err(ErrorBody::new(
            ErrorKind::Refused,
            format!("the copy from {me} to {to} carries no signed claim of its requester"),
        ));
    };
    recv.claim = Some(claim);
    let fail = |e: ErrorBody| ErrorBody {
        error: format!("copying from {me} to {to}: {}", e.error),
        ..e
    };
    // The receiving end first: if it cannot start, nothing is read here.
    let q = CreditQueue::new(d_proto::INPUT_WINDOW as usize);
    let dest_cancel = cancel.child_token();
    let mut dest = match route::route_job(&daemon.mesh, &to, false)
        .await
        .map_err(fail)?
    {
        Route::Local => Source::Local(
            job::start(daemon, recv, dest_cancel.clone(), Some(q.clone())),
            dest_cancel.clone(),
        ),
        Route::Remote(s, _) => {
            if s.terms.protocol < d_proto::PROTOCOL_PEER_COPY {
                return Err(peer_copy_refused(&to, &s.peer.version, s.terms.protocol));
            }
            let mut j = s.start_job(recv).await.map_err(fail)?;
            if let Some(sink) = j.input.take() {
                daemon.tasks().tracker.spawn(sink.forward(q.clone()));
            }
            Source::Remote(j)
        }
        Route::Relay(s, leader) => {
            // The leader must pass the claim on unchanged (protocol 10).
            if s.terms.protocol < d_proto::PROTOCOL_PEER_COPY {
                let e = peer_copy_refused(&leader, &s.peer.version, s.terms.protocol);
                return Err(ErrorBody {
                    error: format!("{} (it would relay to {to})", e.error),
                    ..e
                });
            }
            recv.relay_to = Some(to.clone());
            let mut j = s.start_job(recv).await.map_err(fail)?;
            if let Some(sink) = j.input.take() {
                daemon.tasks().tracker.spawn(sink.forward(q.clone()));
            }
            Source::Remote(j)
        }
    };
    // What the receiving end uses of the stream is credited back here.
    let credits = Credits::new(d_proto::INPUT_WINDOW as usize);
    {
        let (q, credits) = (q.clone(), credits.clone());
        daemon.tasks().tracker.spawn(async move {
            while let Some(n) = q.credit().await {
                credits.grant(n);
            }
            credits.close();
        });
    }
    let send_spec = ExecSpec {
        files: Some(FilesOp::Send {
            sources,
            opts,
            have: have && input.is_some(),
        }),
        stdin: have && input.is_some(),
        claim: None,
        relay_to: None,
        ..spec
    };
    let send_cancel = cancel.child_token();
    let mut src = job::start(daemon, send_spec, send_cancel.clone(), input);
    let mut src_open = true;
    let mut sent: Result<Option<d_proto::types::ExitInfo>, ErrorBody> = Ok(None);
    let received = loop {
        tokio::select! {
            ev = src.recv(), if src_open => match ev {
                Some(JobEvent::Output(Stream::Stdout, chunk)) => {
                    for piece in chunk.data.chunks(d_proto::INPUT_CHUNK) {
                        // false: the receiving end is gone (its end comes next).
                        if !credits.take(piece.len()).await || q.push(piece).is_err() {
                            break;
                        }
                    }
                }
                Some(JobEvent::Output(Stream::Stderr, chunk)) => {
                    if tx.send(JobEvent::Output(Stream::Stderr, chunk)).await.is_err() {
                        break Err(ErrorBody::new(ErrorKind::Other, "the requester went away"));
                    }
                }
                Some(JobEvent::Exit(e)) => {
                    sent = Ok(Some(e));
                    src_open = false;
                    q.end();
                }
                Some(JobEvent::Failed(e)) => {
                    sent = Err(e);
                    src_open = false;
                    // Nothing (more) comes: the receiver drops the partial file.
                    dest.cancel().await;
                }
                None => {
                    src_open = false;
                    q.end();
                }
            },
            ev = dest.next() => match ev {
                Some(JobEvent::Output(stream, chunk)) => {
                    let n = chunk.data.len();
                    if tx.send(JobEvent::Output(stream, chunk)).await.is_err() {
                        break Err(ErrorBody::new(ErrorKind::Other, "the requester went away"));
                    }
                    dest.consumed(n).await;
                }
                Some(JobEvent::Exit(e)) => break Ok(e),
                Some(JobEvent::Failed(e)) => break Err(fail(e)),
                None => break Err(fail(ErrorBody::new(ErrorKind::Other, "the receiving job ended without a status"))),
            },
            _ = cancel.cancelled() => {
                dest.cancel().await;
                send_cancel.cancel();
                return Ok(JobEvent::Failed(ErrorBody::new(ErrorKind::Other, "cancelled")));
            }
        }
    };
    q.close();
    if src_open {
        // The receiving end is done first. Failed: stop the source here.
        // Succeeded (it read the archive's end marker before the source's
        // exit came: a source that could not read a file still writes the
        // end): the source's own status still counts, so wait for it.
        let receiver_ok = matches!(&received, Ok(e) if e.status() == 0);
        if !receiver_ok {
            send_cancel.cancel();
        }
        while let Some(ev) = src.recv().await {
            match ev {
                JobEvent::Output(Stream::Stderr, chunk) => {
                    let _ = tx.send(JobEvent::Output(Stream::Stderr, chunk)).await;
                }
                JobEvent::Exit(e) if receiver_ok => sent = Ok(Some(e)),
                JobEvent::Failed(e) if receiver_ok => sent = Err(e),
                _ => {}
            }
        }
    }
    match (sent, received) {
        (_, Err(e)) => Ok(JobEvent::Failed(e)),
        (Err(e), Ok(_)) => Ok(JobEvent::Failed(ErrorBody {
            error: format!("on {me} (the source): {}", e.error),
            ..e
        })),
        (Ok(s), Ok(mut r)) => {
            // The larger status of the two ends (1: some file not copied).
            if let Some(s) = s {
                if r.status() == 0 && s.status() != 0 {
                    r.code = Some(s.status().clamp(1, 2));
                    r.signal = None;
                }
            }
            Ok(JobEvent::Exit(r))
        }
    }
}
