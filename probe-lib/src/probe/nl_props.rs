//! Property tests of the namespace thread's netlink reader ([`scan_datagram`]): the answers
//! come from the kernel side of a pod's namespace, which the pod shapes (its routes, its
//! links). Never a panic, every payload a slice of the datagram, the message cap held, and a
//! well-formed answer read exactly.

use proptest::prelude::*;

use super::*;
use crate::util::props::{cases, mutate, mutation};

const SEQ: u32 = 7;

/// One netlink message: header (length, type, flags, sequence, port) and payload.
fn message(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let len = 16 + payload.len();
    let mut m = Vec::with_capacity(len.next_multiple_of(4));
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(payload);
    m.resize(len.next_multiple_of(4), 0);
    m
}

/// The (type, payload) of each message handed out.
type Seen = Vec<(u16, Vec<u8>)>;

/// Feed `data` to the scanner; the payloads it handed out and how it ended.
fn scan(data: &[u8], stop_after: usize) -> (Seen, Option<io::Result<()>>) {
    let mut seen = Vec::new();
    let mut count = 0;
    let end = scan_datagram(data, SEQ, &mut count, &mut |t, p| {
        seen.push((t, p.to_vec()));
        if seen.len() >= stop_after {
            Flow::Stop
        } else {
            Flow::Continue
        }
    });
    assert!(count <= MAX_MESSAGES + 1);
    (seen, end)
}

fn answer() -> impl Strategy<Value = Vec<(u16, u32, Vec<u8>)>> {
    proptest::collection::vec(
        (
            16..100u16,
            prop_oneof![3 => Just(SEQ), 1 => any::<u32>()],
            proptest::collection::vec(any::<u8>(), 0..40),
        ),
        0..12,
    )
}

proptest! {
    #![proptest_config(cases(512))]

    /// A multipart answer (with stale answers of other requests between its messages) ends
    /// with DONE: exactly our messages are handed out, in order.
    #[test]
    fn props_a_well_formed_answer_is_read_exactly(msgs in answer(), done in any::<bool>()) {
        let mut data = Vec::new();
        for (t, seq, p) in &msgs {
            data.extend(message(*t, NLM_F_MULTIPART, *seq, p));
        }
        if done {
            data.extend(message(NLMSG_DONE, NLM_F_MULTIPART, SEQ, &[0; 4]));
        }
        let (seen, end) = scan(&data, usize::MAX);
        let want: Vec<(u16, Vec<u8>)> = msgs
            .iter()
            .filter(|(_, s, _)| *s == SEQ)
            .map(|(t, _, p)| (*t, p.clone()))
            .collect();
        prop_assert_eq!(seen, want);
        prop_assert_eq!(end.is_some(), done);
        if let Some(end) = end {
            prop_assert!(end.is_ok());
        }
    }

    /// Corrupted answers and plain garbage: no panic, payloads only from inside the
    /// datagram, and an end or a request for more, never a loop.
    #[test]
    fn props_corrupt_answers_never_panic(
        msgs in answer(),
        muts in proptest::collection::vec(mutation(), 1..6),
        garbage in proptest::collection::vec(any::<u8>(), 0..200),
        stop_after in 1..20usize,
    ) {
        let mut data = Vec::new();
        for (t, seq, p) in &msgs {
            data.extend(message(*t, NLM_F_MULTIPART, *seq, p));
        }
        data.extend(message(NLMSG_ERROR, 0, SEQ, &[0xff; 4]));
        let data = mutate(data, &muts);
        for d in [&data, &garbage] {
            let (seen, _) = scan(d, stop_after);
            let total: usize = seen.iter().map(|(_, p)| p.len() + 16).sum();
            prop_assert!(total <= d.len());
            prop_assert!(seen.len() <= stop_after);
        }
    }
}

/// Found by `props_corrupt_answers_never_panic`: an `NLMSG_ERROR` with code `i32::MIN`
/// overflowed the negation (a panic in debug builds); now it is an error like any other.
#[test]
fn error_code_i32_min_is_an_error_not_an_overflow() {
    let data = message(NLMSG_ERROR, 0, SEQ, &i32::MIN.to_ne_bytes());
    let (seen, end) = scan(&data, usize::MAX);
    assert!(seen.is_empty());
    assert!(end.unwrap().is_err());
}

/// The cap counts across datagrams: the message after [`MAX_MESSAGES`] ends the answer.
#[test]
fn message_cap_holds_across_datagrams() {
    let one = message(RTM_NEWROUTE, NLM_F_MULTIPART, SEQ, &[0; 12]);
    let mut count = MAX_MESSAGES - 1;
    let mut f = |_: u16, _: &[u8]| Flow::Continue;
    assert!(scan_datagram(&one, SEQ, &mut count, &mut f).is_none());
    let err = scan_datagram(&one, SEQ, &mut count, &mut f)
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
}
