//! Batched receive: one `recvmmsg(2)` takes every datagram queued on a
//! socket (up to `BATCH`), where `recv_from` needs one call per datagram and
//! one more to learn the queue is empty. The buffers are per worker thread,
//! not per call: a relay uses them only inside one synchronous step.

use std::cell::RefCell;
use std::io;
use std::mem::{size_of, zeroed};
use std::net::SocketAddr;
use std::os::fd::RawFd;

use socket2::SockAddr;

/// Datagrams taken from one socket per call.
pub(crate) const BATCH: usize = 32;
/// Above any RTP packet on a 1500-byte MTU. A datagram that fills the buffer
/// may have been truncated by the kernel.
pub(crate) const BUF_LEN: usize = 2048;

pub(crate) struct RecvBatch {
    bufs: Vec<[u8; BUF_LEN]>,
    names: Vec<libc::sockaddr_storage>,
    lens: [usize; BATCH],
    name_lens: [libc::socklen_t; BATCH],
    truncated: [bool; BATCH],
    count: usize,
}

/// One datagram of the last `recv`, in its whole writable buffer.
pub(crate) struct DatagramMut<'a> {
    /// The buffer; the datagram is its first `len` bytes.
    pub(crate) buf: &'a mut [u8; BUF_LEN],
    pub(crate) len: usize,
    pub(crate) source: Option<SocketAddr>,
    pub(crate) truncated: bool,
}

thread_local! {
    static BATCH_BUFFERS: RefCell<RecvBatch> = RefCell::new(RecvBatch::new());
}

/// Runs `f` with this thread's receive batch.
pub(crate) fn with_batch<R>(f: impl FnOnce(&mut RecvBatch) -> R) -> R {
    BATCH_BUFFERS.with(|b| f(&mut b.borrow_mut()))
}

impl RecvBatch {
    fn new() -> Self {
        // SAFETY: sockaddr_storage is plain data; all zeros is valid.
        let name: libc::sockaddr_storage = unsafe { zeroed() };
        RecvBatch {
            bufs: vec![[0; BUF_LEN]; BATCH],
            names: vec![name; BATCH],
            lens: [0; BATCH],
            name_lens: [0; BATCH],
            truncated: [false; BATCH],
            count: 0,
        }
    }

    /// Receive what is queued on `fd` without blocking: the number of
    /// datagrams (fewer than `BATCH` means the queue was found empty), or
    /// `WouldBlock` when there was none.
    pub(crate) fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.count = 0;
        // SAFETY: plain data, zero-initialised; every pointer set below
        // points into self, which outlives the call.
        let mut iov: [libc::iovec; BATCH] = unsafe { zeroed() };
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for i in 0..BATCH {
            iov[i].iov_base = self.bufs[i].as_mut_ptr().cast();
            iov[i].iov_len = BUF_LEN;
            let h = &mut msgs[i].msg_hdr;
            h.msg_iov = &mut iov[i];
            h.msg_iovlen = 1;
            h.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        }
        // SAFETY: as above; MSG_DONTWAIT returns what is queued, at once.
        let rc = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = rc as usize;
        for (i, m) in msgs.iter().enumerate().take(n) {
            self.lens[i] = m.msg_len as usize;
            self.name_lens[i] = m.msg_hdr.msg_namelen;
            self.truncated[i] =
                m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 || m.msg_len as usize >= BUF_LEN;
        }
        self.count = n;
        Ok(n)
    }

    /// Datagram `i` with its whole buffer, writable: SRTP decrypts in
    /// place and grows a packet by its tag into the room after it.
    pub(crate) fn get_mut(&mut self, i: usize) -> DatagramMut<'_> {
        // SAFETY: the kernel filled names[i] with an address of name_lens[i] bytes.
        let source = unsafe { SockAddr::new(self.names[i], self.name_lens[i]) }.as_socket();
        DatagramMut {
            buf: &mut self.bufs[i],
            len: self.lens[i],
            source,
            truncated: self.truncated[i],
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.count
    }
}
