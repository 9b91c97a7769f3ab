//! Which call owns a Call-ID. The dispatcher routes every message by its Call-ID to
//! the owning call's inbox; a call is registered under the caller's Call-ID when it
//! is spawned and under the Call-ID of each leg it places, and forgotten when it ends.

use super::inbox::InboxSender;
use super::CallEvent;
use dashmap::DashMap;

/// A call's inbox: everything for its Call-IDs, in order.
pub(super) type Inbox = InboxSender<CallEvent>;

/// Call-ID (of any leg) to the inbox of the call that owns it.
#[derive(Default)]
pub(super) struct CallRegistry {
    inboxes: DashMap<String, Inbox>,
}

impl CallRegistry {
    /// Register a new call under the Call-ID of the request that starts it. When a call
    /// already has that Call-ID (two datagrams of one INVITE racing on two threads), it
    /// is left as it is and its inbox is returned instead.
    pub(super) fn claim(&self, call_id: String, inbox: &Inbox) -> Result<(), Inbox> {
        match self.inboxes.entry(call_id) {
            dashmap::Entry::Occupied(e) => Err(e.get().clone()),
            dashmap::Entry::Vacant(v) => {
                v.insert(inbox.clone());
                Ok(())
            }
        }
    }

    /// A call routes one more Call-ID (a leg it placed) to its inbox.
    pub(super) fn add(&self, call_id: String, inbox: Inbox) {
        self.inboxes.insert(call_id, inbox);
    }

    /// The inbox of the call that owns `call_id`.
    pub(super) fn inbox(&self, call_id: &str) -> Option<Inbox> {
        self.inboxes.get(call_id).map(|e| e.value().clone())
    }

    /// A call is gone: its Call-IDs route nowhere.
    pub(super) fn remove(&self, call_ids: &[&str]) {
        for id in call_ids {
            self.inboxes.remove(*id);
        }
    }

    /// Offer every call the event `make` builds (dropped for a call whose inbox is
    /// full or closed). A call with several Call-IDs gets it once per Call-ID.
    pub(super) fn offer_all(&self, make: impl Fn() -> CallEvent) {
        for entry in self.inboxes.iter() {
            let _ = entry.value().try_send(make());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_id_is_claimed_once_and_forgotten_with_its_call() {
        let reg = CallRegistry::default();
        let (first, mut first_rx) = super::super::inbox::inbox(4);
        let (second, _second_rx) = super::super::inbox::inbox(4);
        assert!(reg.claim("a".into(), &first).is_ok());
        // The racing second INVITE gets the first call's inbox, not a call of its own.
        let owner = reg.claim("a".into(), &second).expect_err("already claimed");
        assert!(owner.same_channel(&first));
        reg.add("b".into(), first.clone());
        assert!(reg.inbox("b").is_some_and(|i| i.same_channel(&first)));
        reg.offer_all(|| CallEvent::Shutdown);
        assert!(matches!(first_rx.try_recv(), Some(CallEvent::Shutdown)));
        reg.remove(&["a", "b"]);
        assert!(reg.inbox("a").is_none() && reg.inbox("b").is_none());
        assert!(reg.claim("a".into(), &second).is_ok());
    }
}
