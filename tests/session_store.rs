//! handoff over a session store that fails (a shared store can; the in-memory one
//! cannot): the call goes on without what it could not read.

mod common;

use common::scenarios::media::establish_media;
use common::scenarios::transfer::{
    expect_notify, expect_target_invite, refer, stamp_via_webhook, TransferRig, SIGNING_SECRET,
};
use common::scenarios::{bye_from_caller, count};
use common::{bounded, config_text, TestUa, Transport, CALLER_E164};
use handoff::server::Server;
use handoff::session::{
    ContactDetails, PatchOutcome, Session, SessionCounts, SessionId, SessionPatch, SessionStore,
    SessionTable, StampOutcome, StoreError, StoreFuture,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The in-memory table, except that reads fail while `reads_fail` is set.
struct FlakyReads {
    table: SessionTable,
    reads_fail: AtomicBool,
}

impl SessionStore for FlakyReads {
    fn create<'a>(&'a self, s: Session) -> StoreFuture<'a, ()> {
        SessionStore::create(&self.table, s)
    }
    fn get<'a>(&'a self, id: &'a SessionId) -> StoreFuture<'a, Option<Session>> {
        if self.reads_fail.load(Ordering::SeqCst) {
            let e = StoreError::Unavailable("test: reads are down".into());
            return Box::pin(std::future::ready(Err(e)));
        }
        SessionStore::get(&self.table, id)
    }
    fn live_by_phone<'a>(&'a self, phone: &'a str) -> StoreFuture<'a, Vec<Session>> {
        SessionStore::live_by_phone(&self.table, phone)
    }
    fn mark_answered<'a>(&'a self, id: &'a SessionId, at: SystemTime) -> StoreFuture<'a, ()> {
        SessionStore::mark_answered(&self.table, id, at)
    }
    fn mark_ended<'a>(&'a self, id: &'a SessionId, at: SystemTime) -> StoreFuture<'a, ()> {
        SessionStore::mark_ended(&self.table, id, at)
    }
    fn stamp_ticket<'a>(
        &'a self,
        org: &'a str,
        phone: &'a str,
        ticket: u64,
    ) -> StoreFuture<'a, StampOutcome> {
        SessionStore::stamp_ticket(&self.table, org, phone, ticket)
    }
    fn attach_contact<'a>(
        &'a self,
        id: &'a SessionId,
        contact_id: String,
        details: ContactDetails,
    ) -> StoreFuture<'a, Option<String>> {
        self.table.attach_contact(id, contact_id, details)
    }
    fn patch<'a>(&'a self, id: &'a SessionId, p: SessionPatch) -> StoreFuture<'a, PatchOutcome> {
        self.table.patch(id, p)
    }
    fn sweep(&self) -> StoreFuture<'_, usize> {
        SessionStore::sweep(&self.table)
    }
    fn counts(&self) -> StoreFuture<'_, SessionCounts> {
        self.table.counts()
    }
}

/// A transfer rig (AI agent, carrier, "Zendesk") whose handoff runs over `store`.
async fn rig_over(store: Arc<dyn SessionStore>) -> TransferRig {
    let t = Transport::Udp;
    let zendesk = TestUa::agent(t).await;
    let target = format!("sip:support@127.0.0.1:{}", zendesk.local_addr().port());
    let extra = format!(
        "transfer.destination = [{{ name = \"zendesk\", uri = \"{target}\" }}]\n\
         http.signing_keys = [{{ kid = \"k1\", secret = \"{SIGNING_SECRET}\", issuer = \"t\" }}]\n"
    );
    let agent = TestUa::agent(t).await;
    let text = config_text(t, agent.local_addr().port(), &extra);
    let settings = handoff::config::Config::parse(&text, "test").expect("test config");
    let server = Server::start_with_session_store(settings, store)
        .await
        .expect("handoff starts");
    TransferRig::around(server, agent, zendesk, target, t).await
}

/// The ticket was stamped, but the store cannot be read at REFER time: the transfer
/// INVITE still goes out, with the call's own identity and no ticket header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_read_at_refer_sends_the_invite_without_ticket() {
    bounded(Duration::from_secs(30), async {
        let store = Arc::new(FlakyReads {
            table: SessionTable::new(100, Duration::from_secs(5)),
            reads_fail: AtomicBool::new(false),
        });
        let mut tr = rig_over(store.clone()).await;
        let mut m = establish_media(&mut tr.rig).await;
        stamp_via_webhook(&tr.rig, 90210).await;
        store.reads_fail.store(true, Ordering::SeqCst);
        let target = format!("<{}>", tr.target);
        let refer_msg = refer(&mut tr, &mut m, &target, 202).await;
        expect_notify(&mut tr, &m, &refer_msg).await;
        let inv = expect_target_invite(&mut tr).await;
        assert_eq!(
            inv.msg.header("X-OPENCX-SESSION-ID"),
            Some(m.call.session_id.as_str())
        );
        assert_eq!(inv.msg.header("X-OPENCX-AGENT-ID"), Some("agent-test"));
        assert_eq!(inv.msg.header("X-OPENCX-ZENDESK-TICKET-ID"), None);
        assert!(
            inv.msg
                .header("From")
                .is_some_and(|f| f.contains(CALLER_E164)),
            "From is still the caller"
        );
        tr.zendesk.respond(&inv, 486, &[], None).await;
        let (frag, _) = expect_notify(&mut tr, &m, &refer_msg).await;
        assert_eq!(frag, "SIP/2.0 486 Busy Here\r\n");
        assert_eq!(count(&tr.rig.server, |x| &x.transfers_failed_total), 1);
        store.reads_fail.store(false, Ordering::SeqCst);
        bye_from_caller(&mut tr.rig, &mut m.call).await;
    })
    .await;
}
