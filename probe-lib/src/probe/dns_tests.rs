use std::net::{Ipv4Addr, Ipv6Addr};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::*;

const ID: u16 = 0x5a17;

fn q() -> DnsQuestion {
    DnsQuestion::default()
}

/// A response to `q()` with this code and answers.
fn reply(id: u16, code: ResponseCode, answers: Vec<RData>) -> Message {
    let name = Name::from_ascii("kubernetes.default.svc.cluster.local.").unwrap();
    let mut m = Message::new(id, MessageType::Response, OpCode::Query);
    m.metadata.response_code = code;
    m.add_query(Query::query(name.clone(), RecordType::A));
    for data in answers {
        m.answers.push(Record::from_rdata(name.clone(), 30, data));
    }
    m
}

fn classify_msg(m: &Message) -> Reply {
    classify(&m.to_vec().unwrap(), ID, &q(), RecordType::A)
}

#[test]
fn names() {
    assert_eq!(q().name(), "kubernetes.default.svc.cluster.local.");
    assert_eq!(
        DnsQuestion::default_for("example.org.").unwrap().name(),
        "kubernetes.default.svc.example.org."
    );
    for bad in ["", ".", "a..b", &"x".repeat(300)] {
        assert!(DnsQuestion::new(bad, vec![]).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn the_query_asks_one_recursive_question() {
    let wire = encode_query(ID, &q(), RecordType::AAAA);
    let m = Message::from_vec(&wire).unwrap();
    assert_eq!(m.metadata.id, ID);
    assert_eq!(m.metadata.message_type, MessageType::Query);
    assert!(m.metadata.recursion_desired);
    assert_eq!(m.queries.len(), 1);
    assert_eq!(m.queries[0].query_type(), RecordType::AAAA);
    assert_eq!(m.queries[0].name().to_ascii(), q().name());
}

#[test]
fn answers_are_classified() {
    let a = RData::A(A(Ipv4Addr::new(10, 96, 0, 1)));
    assert_eq!(
        classify_msg(&reply(ID, ResponseCode::NoError, vec![a.clone()])),
        Reply::Done(ProbeResult::Ok, None)
    );
    let code = |c| match classify_msg(&reply(ID, c, vec![])) {
        Reply::Done(r, _) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(code(ResponseCode::ServFail), ProbeResult::Servfail);
    assert_eq!(code(ResponseCode::NXDomain), ProbeResult::Nxdomain);
    assert_eq!(code(ResponseCode::Refused), ProbeResult::DnsRefused);
    assert_eq!(code(ResponseCode::FormErr), ProbeResult::Error);
    // NOERROR without an address (NODATA), or with only a CNAME or an AAAA for an A query.
    assert_eq!(code(ResponseCode::NoError), ProbeResult::WrongAnswer);
    let cname = RData::CNAME(CNAME(Name::from_ascii("elsewhere.").unwrap()));
    let aaaa = RData::AAAA(AAAA(Ipv6Addr::LOCALHOST));
    let Reply::Done(r, detail) = classify_msg(&reply(ID, ResponseCode::NoError, vec![cname, aaaa]))
    else {
        panic!()
    };
    assert_eq!(r, ProbeResult::WrongAnswer);
    assert!(detail.unwrap().contains("no A record"));
}

#[test]
fn an_unexpected_address_is_a_wrong_answer() {
    let want = DnsQuestion::new(
        "kubernetes.default.svc.cluster.local",
        vec!["10.96.0.1".parse().unwrap()],
    )
    .unwrap();
    let m = |ip| reply(ID, ResponseCode::NoError, vec![RData::A(A(ip))]);
    let run = |m: Message| classify(&m.to_vec().unwrap(), ID, &want, RecordType::A);
    assert_eq!(
        run(m(Ipv4Addr::new(10, 96, 0, 1))),
        Reply::Done(ProbeResult::Ok, None)
    );
    let Reply::Done(r, Some(detail)) = run(m(Ipv4Addr::new(6, 6, 6, 6))) else {
        panic!()
    };
    assert_eq!(r, ProbeResult::WrongAnswer);
    assert!(detail.contains("6.6.6.6"), "{detail}");
}

#[test]
fn answers_to_another_query_are_strays() {
    let a = || vec![RData::A(A(Ipv4Addr::new(10, 96, 0, 1)))];
    // Another ID.
    assert_eq!(
        classify_msg(&reply(ID ^ 1, ResponseCode::NoError, a())),
        Reply::Stray
    );
    // Our ID, another name.
    let mut other = reply(ID, ResponseCode::NoError, a());
    other.queries[0] = Query::query(Name::from_ascii("evil.example.").unwrap(), RecordType::A);
    assert_eq!(classify_msg(&other), Reply::Stray);
    // Our ID, another type; two questions; no question; a query rather than a response.
    let mut other = reply(ID, ResponseCode::NoError, a());
    other.queries[0] = Query::query(other.queries[0].name().clone(), RecordType::AAAA);
    assert_eq!(classify_msg(&other), Reply::Stray);
    let mut two = reply(ID, ResponseCode::NoError, a());
    two.queries.push(two.queries[0].clone());
    assert_eq!(classify_msg(&two), Reply::Stray);
    let mut none = reply(ID, ResponseCode::NoError, a());
    none.queries.clear();
    assert_eq!(classify_msg(&none), Reply::Stray);
    let mut query = reply(ID, ResponseCode::NoError, a());
    query.metadata.message_type = MessageType::Query;
    assert_eq!(classify_msg(&query), Reply::Stray);
    // The name matches case-insensitively.
    let mut upper = reply(ID, ResponseCode::NoError, a());
    upper.queries[0] = Query::query(
        Name::from_ascii("KUBERNETES.default.SVC.cluster.local.").unwrap(),
        RecordType::A,
    );
    assert_eq!(classify_msg(&upper), Reply::Done(ProbeResult::Ok, None));
}

#[test]
fn truncated_answers_go_to_tcp() {
    let mut m = reply(ID, ResponseCode::NoError, vec![]);
    m.metadata.truncation = true;
    assert_eq!(classify_msg(&m), Reply::Truncated);
}

#[test]
fn hostile_bytes_never_panic() {
    let good = reply(
        ID,
        ResponseCode::NoError,
        vec![RData::A(A(Ipv4Addr::new(10, 96, 0, 1)))],
    )
    .to_vec()
    .unwrap();
    // Every prefix, and every single-byte corruption: no panic; undecodable with our ID is an
    // error, anything else undecodable a stray.
    for n in 0..good.len() {
        let _ = classify(&good[..n], ID, &q(), RecordType::A);
        for v in [0u8, 0xff, 0xc0] {
            let mut bad = good.clone();
            bad[n] = v;
            let _ = classify(&bad, ID, &q(), RecordType::A);
        }
    }
    assert_eq!(
        classify(&good[..good.len() - 1], ID, &q(), RecordType::A),
        Reply::Done(ProbeResult::Error, Some("undecodable answer".into()))
    );
    assert_eq!(classify(&[0x12], ID, &q(), RecordType::A), Reply::Stray);
    // A compression pointer to itself.
    let mut looped = good[..12].to_vec();
    looped[5] = 1;
    looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    assert!(matches!(
        classify(&looped, ID, &q(), RecordType::A),
        Reply::Done(ProbeResult::Error, _) | Reply::Stray
    ));
}
