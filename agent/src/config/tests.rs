//! The command line's unit tests: flags, values and their one-line errors.

use super::*;

#[test]
fn durations() {
    assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
    assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
    assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
    for bad in [
        "",
        "s",
        "10x",
        "-1s",
        "1e400s",
        "ten",
        "0s",
        "0.1ms",
        "25h",
        "1e15",
        "99999999999999s",
    ] {
        assert!(parse_duration(bad).is_err(), "{bad}");
    }
    assert_eq!(parse_duration("1ms"), Ok(Duration::from_millis(1)));
    // Go/Kubernetes style: parts in a row.
    assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
    assert_eq!(parse_duration("1h2m3s"), Ok(Duration::from_secs(3723)));
    assert_eq!(parse_duration("1s500ms"), Ok(Duration::from_millis(1500)));
    for bad in ["1m30", "1m-30s", "m30s", "1m 30s", "1m30x"] {
        assert!(parse_duration(bad).is_err(), "{bad}");
    }
    assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
    // Every duration flag goes through the bound.
    for flag in [
        "--wiring-grace",
        "--kube-unhealthy-threshold",
        "--resync-interval",
        "--kube-watch-timeout",
    ] {
        let r = Args::try_parse_from(["podnet-agent", flag, "100000h"]);
        assert!(r.is_err(), "{flag} accepted 100000h");
    }
    assert!(resync_interval("100ms").is_err());
}

#[test]
fn probe_timeout_must_fit_the_interval() {
    let parse = |extra: &[&str]| {
        let mut argv = vec!["podnet-agent"];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv).unwrap().check_probes()
    };
    assert!(parse(&[]).is_ok());
    assert!(parse(&["--probe-timeout", "10s"]).is_ok());
    let err = parse(&["--probe-timeout", "10s", "--probe-interval", "5s"]).unwrap_err();
    assert_eq!(
        err,
        "--probe-timeout (10s) must not exceed --probe-interval (5s)"
    );
    // Without probes the timeout means nothing.
    assert!(
        parse(&[
            "--probe-timeout",
            "10s",
            "--probe-interval",
            "5s",
            "--no-probes"
        ])
        .is_ok()
    );
    assert_eq!(humantime(Duration::from_millis(250)), "250ms");
}

/// A log filter with blanks before a multi-byte character is read (here: target `Ό`, any
/// level), not a panic inside tracing-subscriber; blanks around directives are dropped.
#[test]
fn log_filters_with_blanks_and_non_ascii() {
    assert_eq!(log_filter("\tΌ=").as_deref(), Ok("Ό="));
    assert_eq!(log_filter("info, Ό=").as_deref(), Ok("info,Ό="));
    let a = Args::try_parse_from(["podnet-agent", "--log-level=\tΌ="]).unwrap();
    assert_eq!(a.log_level, "Ό=");
    assert_eq!(
        log_filter(" info , podnet=debug ,").as_deref(),
        Ok("info,podnet=debug")
    );
}

#[test]
fn condition_and_event_flags() {
    let a = Args::try_parse_from(["podnet-agent"]).unwrap();
    assert!(!a.no_conditions && !a.no_events);
    assert_eq!(a.condition_heartbeat, Duration::from_secs(300));
    assert_eq!((a.events_burst, a.events_per_minute), (25, 6));
    let a = Args::try_parse_from([
        "podnet-agent",
        "--no-conditions",
        "--no-events",
        "--condition-heartbeat",
        "2s",
        "--events-per-minute",
        "0",
    ])
    .unwrap();
    assert!(a.no_conditions && a.no_events);
    assert_eq!(a.condition_heartbeat, Duration::from_secs(2));
    for bad in [
        &["--condition-heartbeat", "500ms"][..],
        &["--condition-heartbeat", "25h"],
        &["--events-burst", "0"],
        &["--events-per-minute", "601"],
    ] {
        let mut argv = vec!["podnet-agent"];
        argv.extend_from_slice(bad);
        assert!(Args::try_parse_from(argv).is_err(), "{bad:?}");
    }
}

#[test]
fn prefixes() {
    assert!(interface_prefix("cali").is_ok());
    assert!(interface_prefix("eni").is_ok());
    assert!(interface_prefix("").is_err());
    assert!(interface_prefix("a/b").is_err());
    assert!(interface_prefix("fifteen-chars-x").is_err());
}

#[test]
fn defaults() {
    let a = Args::try_parse_from(["podnet-agent"]).unwrap();
    assert_eq!(a.listen.port(), 9710);
    assert_eq!(a.interface_prefix, None);
    assert_eq!(a.cni, Cni::Calico);
    assert_eq!(a.pod_source, PodSourceArg::Auto);
    assert_eq!(a.wiring_grace, Duration::from_secs(30));
    assert_eq!(a.resync_interval, Duration::from_secs(60));
    assert_eq!(a.log_format, LogFormat::Text);
    assert_eq!(a.probe_interval, Duration::from_secs(10));
    assert_eq!(a.probe_timeout, Duration::from_secs(1));
    assert_eq!(a.probe_failures, 2);
    assert!(a.probes.is_empty() && !a.no_probes);
    assert_eq!(
        a.status_listen,
        StatusListen::On(SocketAddr::from(([127, 0, 0, 1], 9711)))
    );
    assert!(!a.secure_metrics && a.tls_cert_file.is_none());
    assert_eq!(a.http_max_connections, 512);
    assert_eq!(a.max_pod_series, 2000);
    assert_eq!(a.test_fault, None);
}

#[test]
fn http_flags() {
    assert_eq!(
        listen_addr("2001:db8::10:9710"),
        Ok("[2001:db8::10]:9710".parse().unwrap())
    );
    assert_eq!(
        listen_addr("192.0.2.10:9710"),
        Ok("192.0.2.10:9710".parse().unwrap())
    );
    for bad in [
        ":9710",
        "192.0.2.10",
        "2001:db8::10",
        "host:9710",
        "192.0.2.10:x",
    ] {
        assert!(listen_addr(bad).is_err(), "{bad}");
    }
    assert_eq!(status_listen("off"), Ok(StatusListen::Off));
    assert!(status_listen("[::1]:9711").is_ok());
    assert!(status_listen("0.0.0.0:9711").is_err());
    assert!(status_listen("192.0.2.1:9711").is_err());
    assert!(http_timeout("50ms").is_err() && http_timeout("1h").is_err());
    let only_cert = Args::try_parse_from(["podnet-agent", "--tls-cert-file", "/c.pem"]);
    assert!(only_cert.is_err());
    let a = Args::try_parse_from(["podnet-agent", "--http-max-connections", "2"]);
    assert!(a.is_err());
}

#[test]
fn probes_repeat_and_split() {
    let a = Args::try_parse_from([
        "podnet-agent",
        "--probe",
        "icmp:198.51.100.1",
        "--probe",
        "web=tcp:198.51.100.1:443,tcp:[2001:db8::1]:80",
    ])
    .unwrap();
    let names: Vec<&str> = a.probes.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["icmp:198.51.100.1", "web", "tcp:[2001:db8::1]:80"]);
}
