//! Forwarding as an operator meets it, through the binary: a `kill -9` in
//! the middle of forwarding loses nothing, bad `[forward.NAME]` settings
//! stop start-up naming the key, and nothing shown holds a password or a
//! signing secret.

use crate::forward_support::*;
use crate::helpers::*;

fn env_of(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = secret_env("sqlite://unused.db").into_iter().collect();
    env.extend(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    env
}

/// Over a routing key's 255 bytes before any field is filled in.
const LONG_KEY: &str = concat!(
    "imggo.results.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.{event}"
);

#[test]
fn bad_destinations_stop_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[
                ("IMGGO__FORWARD__X__KIND", "pigeon"),
                ("IMGGO__FORWARD__X__URL", "http://127.0.0.1:1/"),
            ],
            "forward.x.kind",
        ),
        (
            &[
                ("IMGGO__FORWARD__X__KIND", "rabbitmq"),
                (
                    "IMGGO__FORWARD__X__URL",
                    "http://guest:hunter2@127.0.0.1:5672/",
                ),
                ("IMGGO__FORWARD__X__ROUTING_KEY", "imggo"),
            ],
            "forward.x.url",
        ),
        (
            &[
                ("IMGGO__FORWARD__X__KIND", "redis"),
                ("IMGGO__FORWARD__X__URL", "not a url with hunter2"),
                ("IMGGO__FORWARD__X__STREAM", "imggo"),
            ],
            "forward.x.url",
        ),
        (
            &[
                ("IMGGO__FORWARD__X__KIND", "http"),
                ("IMGGO__FORWARD__X__URL", "https://hooks.example/in"),
            ],
            "forward.x.secret",
        ),
        (
            &[
                ("IMGGO__FORWARD__X__KIND", "http"),
                ("IMGGO__FORWARD__X__URL", "https://hooks.example/in"),
                ("IMGGO__FORWARD__X__SECRET", "hunter2-not-whsec"),
            ],
            "forward.x.secret",
        ),
        (
            &[
                ("IMGGO__FORWARD__X__KIND", "nats"),
                ("IMGGO__FORWARD__X__URL", "nats://127.0.0.1:4222"),
                ("IMGGO__FORWARD__X__SUBJECT", "imggo.{job_id}"),
            ],
            "forward.x.subject",
        ),
        (
            &[
                ("IMGGO__FORWARD__X__KIND", "nats"),
                ("IMGGO__FORWARD__X__URL", "nats://127.0.0.1:4222"),
                ("IMGGO__FORWARD__X__SUBJECT", "imggo results.{event}"),
            ],
            "forward.x.subject",
        ),
        (
            &[
                ("IMGGO__FORWARD__X__KIND", "nats"),
                ("IMGGO__FORWARD__X__URL", "nats://127.0.0.1:4222"),
                ("IMGGO__FORWARD__X__SUBJECT", "imggo..{event}"),
            ],
            "forward.x.subject",
        ),
        (
            &[
                ("IMGGO__FORWARD__X__KIND", "nats"),
                ("IMGGO__FORWARD__X__URL", "nats://127.0.0.1:4222"),
                ("IMGGO__FORWARD__X__SUBJECT", "imggo.{event}.>"),
            ],
            "forward.x.subject",
        ),
        (
            &[
                ("IMGGO__FORWARD__X__KIND", "rabbitmq"),
                ("IMGGO__FORWARD__X__URL", "amqp://127.0.0.1:5672/%2f"),
                ("IMGGO__FORWARD__X__ROUTING_KEY", LONG_KEY),
            ],
            "forward.x.routing_key",
        ),
        (
            &[
                ("IMGGO__FORWARD__X__KIND", "nats"),
                ("IMGGO__FORWARD__X__URL", "nats://127.0.0.1:4222"),
                ("IMGGO__FORWARD__X__SUBJECT", "imggo"),
                ("IMGGO__FORWARD__X__STREAM", "imggo"),
            ],
            "forward.x.stream",
        ),
        (
            &[
                ("IMGGO__FORWARD__X__KIND", "http"),
                ("IMGGO__FORWARD__X__URL", "https://hooks.example/in"),
                ("IMGGO__FORWARD__X__SECRET", &whsec(KEY_NEW)),
                ("IMGGO__FORWARD__X__COLOUR", "red"),
            ],
            "forward.x.colour",
        ),
    ];
    for (pairs, key) in cases {
        for command_name in ["check-config", "serve"] {
            let out = run(command(dir.path(), &env_of(pairs)), &[command_name]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{command_name} {pairs:?} started");
            assert!(stderr.contains(key), "{command_name} {pairs:?}: {stderr}");
            assert!(!stderr.contains("hunter2"), "{stderr}");
        }
    }
}

#[test]
fn check_config_shows_destinations_without_credentials_or_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let secret = whsec(KEY_NEW);
    let env = env_of(&[
        ("IMGGO__FORWARD__MQ__KIND", "rabbitmq"),
        (
            "IMGGO__FORWARD__MQ__URL",
            "amqp://guest:hunter2@127.0.0.1:5672/%2f?auth_mechanism=plain",
        ),
        ("IMGGO__FORWARD__MQ__EXCHANGE", ""),
        ("IMGGO__FORWARD__MQ__ROUTING_KEY", "imggo.{event}"),
        ("IMGGO__FORWARD__HOOK__KIND", "http"),
        (
            "IMGGO__FORWARD__HOOK__URL",
            "https://user:hunter2@hooks.example/in/t0ken-in-the-path?token=hunter2",
        ),
        ("IMGGO__FORWARD__HOOK__SECRET", &secret),
    ]);
    let out = run_ok(command(dir.path(), &env), &["check-config"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("amqp://127.0.0.1:5672/%2f"), "{text}");
    // An http URL shows no path: hook URLs often carry their token there.
    assert!(text.contains("url = \"https://hooks.example\""), "{text}");
    assert!(text.contains("routing_key = \"imggo.{event}\""), "{text}");
    for hidden in ["hunter2", "guest", &secret[6..], "auth_mechanism", "t0ken"] {
        assert!(!text.contains(hidden), "`{hidden}` shown:\n{text}");
    }
}

#[tokio::test]
async fn kill_9_in_the_middle_of_forwarding_loses_nothing() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let dest = Destination::start().await;
    // Slow enough that the kill lands in the middle.
    dest.delay(std::time::Duration::from_millis(40));
    let (port, admin) = (free_port(), free_port());
    let mut env = serve_env(&db, port, admin);
    env.extend(http_destination("crash", &dest.url()));
    let mut server = Server::start(command(dir.path(), &env));
    server.wait_for("listening");
    const N: usize = 40;
    let client = reqwest::Client::new();
    for _ in 0..N {
        let body = prod_body(&new_job_id());
        let sig = prod_signature(&body);
        let url = format!("http://127.0.0.1:{port}/webhooks/imggo");
        let res = post_from(&client, &url, body, Some(&sig)).await;
        assert_eq!(res.status(), 200);
    }
    dest.until_accepted(5).await;
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    let before = dest.accepted().len();
    assert!(
        before < N,
        "everything went before the kill: the test proves nothing"
    );
    let mut server = Server::start(command(dir.path(), &env));
    server.wait_for("listening");
    let got = dest.until_accepted(N).await;
    assert_eq!(got.len(), N);
    assert_eq!(dest.bad_signatures(), 0);
    // Each id is an event the feed holds; the first copies came in feed order.
    let ids: Vec<i64> = got.iter().map(|r| r.id.parse().unwrap()).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), N);
    let _ = server.terminate();
}

/// Two replicas on one database: one forwards, the other stands by; when
/// the one forwarding is killed, the other takes over within 15 s and
/// nothing is lost.
#[tokio::test]
async fn a_standby_replica_takes_over_within_15_s() {
    let db = TestDb::new().await;
    let dest = Destination::start().await;
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let ports = [(free_port(), free_port()), (free_port(), free_port())];
    let env = |i: usize| {
        let mut env = serve_env(&db, ports[i].0, ports[i].1);
        env.extend(http_destination("shared", &dest.url()));
        env
    };
    let mut first = Server::start(command(dirs[0].path(), &env(0)));
    first.wait_for("this replica forwards the destination");
    let mut second = Server::start(command(dirs[1].path(), &env(1)));
    second.wait_for("listening");
    let client = reqwest::Client::new();
    let deliver = |port: u16| {
        let client = client.clone();
        async move {
            let body = prod_body(&new_job_id());
            let sig = prod_signature(&body);
            let url = format!("http://127.0.0.1:{port}/webhooks/imggo");
            assert_eq!(
                post_from(&client, &url, body, Some(&sig)).await.status(),
                200
            );
        }
    };
    for i in 0..10 {
        deliver(ports[i % 2].0).await;
    }
    dest.until_accepted(10).await;
    assert_eq!(dest.requests().len(), 10, "both replicas forwarded");
    first.child.kill().unwrap(); // SIGKILL: no goodbye, the lock goes with the session
    first.child.wait().unwrap();
    let killed = std::time::Instant::now();
    for _ in 0..10 {
        deliver(ports[1].0).await;
    }
    dest.until_accepted(20).await;
    let takeover = killed.elapsed();
    assert!(
        takeover < std::time::Duration::from_secs(15),
        "took {takeover:?}"
    );
    second.wait_for("this replica forwards the destination");
    assert_eq!(dest.bad_signatures(), 0);
    let _ = second.terminate();
}

/// The nice value and name of each of `pid`'s threads (Linux `/proc`).
fn threads_of(pid: u32) -> Vec<(String, i32)> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let path = task.unwrap().path();
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(path.join("comm")),
            std::fs::read_to_string(path.join("stat")),
        ) else {
            continue; // the thread ended meanwhile
        };
        // After the name's closing parenthesis: state is field 3, nice 19.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let nice: i32 = after.split(' ').nth(19 - 3).unwrap().parse().unwrap();
        threads.push((comm.trim().to_owned(), nice));
    }
    threads
}

/// On Postgres the relays run on threads of their own at a lower CPU
/// priority than the webhook route's, and still forward.
#[tokio::test]
async fn relays_run_on_their_own_threads_below_the_routes_priority() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let dest = Destination::start().await;
    let (port, admin) = (free_port(), free_port());
    let mut env = serve_env(&db, port, admin);
    env.extend(http_destination("niced", &dest.url()));
    let mut server = Server::start(command(dir.path(), &env));
    server.wait_for("listening");
    let body = prod_body(&new_job_id());
    let sig = prod_signature(&body);
    let url = format!("http://127.0.0.1:{port}/webhooks/imggo");
    let res = post_from(&reqwest::Client::new(), &url, body, Some(&sig)).await;
    assert_eq!(res.status(), 200);
    assert_eq!(dest.until_accepted(1).await.len(), 1);
    // The nice value the server started with: this test's own.
    let own = std::fs::read_to_string("/proc/self/stat").unwrap();
    let base: i32 = own[own.rfind(')').unwrap() + 2..]
        .split(' ')
        .nth(19 - 3)
        .unwrap()
        .parse()
        .unwrap();
    let threads = threads_of(server.child.id());
    let relays: Vec<i32> = threads
        .iter()
        .filter(|(name, _)| name == imggo_receiver::forward::RELAY_THREAD)
        .map(|(_, nice)| *nice)
        .collect();
    assert!(!relays.is_empty(), "no relay thread among {threads:?}");
    assert!(
        relays
            .iter()
            .all(|n| *n == (base + imggo_receiver::forward::RELAY_NICE).min(19)),
        "relay threads at {relays:?}, the server at {base}"
    );
    // The route's threads keep the priority the process started with.
    let others: Vec<&(String, i32)> = threads
        .iter()
        .filter(|(name, _)| name != imggo_receiver::forward::RELAY_THREAD)
        .collect();
    assert!(!others.is_empty());
    assert!(others.iter().all(|(_, n)| *n == base), "{others:?}");
    let _ = server.terminate();
}
