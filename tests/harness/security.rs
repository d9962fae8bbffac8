//! The local server as a hostile web page, a slow client and a crash would meet it: through
//! the real `pgharness serve`, over real sockets.

use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use pgharness::platform::process::is_postgres;

use crate::helpers::{
    PATIENCE, Serve, kill_hard, pgharness_with_file_limit, postmaster_pid, wait_until,
};

/// An HTTP answer read off the socket.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn has_header(&self, line: &str) -> bool {
        self.head
            .lines()
            .any(|header| header.eq_ignore_ascii_case(line))
    }
}

/// `POST /users` of `username` (at example.com).
fn post_user(serve: &Serve, username: &str) -> Answer {
    let body = format!(r#"{{"username": "{username}", "email": "{username}@example.com"}}"#);
    send(
        serve,
        "POST",
        "/users",
        &[("content-type", "application/json")],
        &body,
    )
}

/// `host:port` of a serve.
fn address(serve: &Serve) -> String {
    serve.api.trim_start_matches("http://").to_owned()
}

/// Sends `method path` with `headers` and `body` on a fresh connection and reads the answer.
fn send(serve: &Serve, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    let address = address(serve);
    let mut stream = TcpStream::connect(&address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nconnection: close\r\n");
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        let _ = write!(request, "host: {address}\r\n");
    }
    for (name, value) in headers {
        let _ = write!(request, "{name}: {value}\r\n");
    }
    let _ = write!(request, "content-length: {}\r\n\r\n{body}", body.len());
    stream.write_all(request.as_bytes()).unwrap();
    read_answer(&mut stream)
}

/// `send` with the admin token `serve` printed, as the UI's link or a trusted tool gives it.
fn send_admin(serve: &Serve, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let bearer = format!("Bearer {}", serve.admin_token.as_deref().unwrap());
    let mut headers = headers.to_vec();
    headers.push(("authorization", &bearer));
    send(serve, method, path, &headers, "")
}

fn read_answer(stream: &mut TcpStream) -> Answer {
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Answer {
        status: head
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0),
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

fn serve_with(variables: &[(&str, &str)]) -> (tempfile::TempDir, Serve) {
    let workdir = pgharness::platform::files::scratch_dir().unwrap();
    let home = workdir.path().join("data");
    let serve = Serve::start_with(workdir.path(), &home, variables);
    (workdir, serve)
}

#[test]
fn a_method_a_route_lacks_is_answered_405_with_its_detail_over_a_real_connection() {
    let (_workdir, serve) = serve_with(&[]);
    for method in ["TRACE", "PUT"] {
        let answer = send(&serve, method, "/users/1", &[], "");
        assert_eq!(answer.status, 405, "{method}: {}", answer.head);
        assert_eq!(
            answer.body, r#"{"detail":"Method Not Allowed"}"#,
            "{method}"
        );
    }
}

#[test]
fn a_request_under_another_host_name_is_421_and_reveals_nothing() {
    let (_workdir, serve) = serve_with(&[]);
    // DNS rebinding: a page of evil.example whose name now resolves to 127.0.0.1.
    let rebound = send(
        &serve,
        "POST",
        "/api/connection/reveal",
        &[("host", "evil.example:8000")],
        "",
    );
    assert_eq!(rebound.status, 421, "{}", rebound.body);
    assert!(!rebound.body.contains("postgresql://"), "{}", rebound.body);
    assert!(
        rebound.body.contains("PGHARNESS_ALLOWED_HOSTS"),
        "{}",
        rebound.body
    );
    let listing = send(&serve, "GET", "/users", &[("host", "evil.example")], "");
    assert_eq!(listing.status, 421);

    // This machine's own names still work.
    let port = address(&serve).rsplit(':').next().unwrap().to_owned();
    for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}")] {
        let own = send_admin(&serve, "POST", "/api/connection/reveal", &[("host", &host)]);
        assert_eq!(own.status, 200, "{host}: {}", own.body);
        assert!(own.body.contains("postgresql://"));
    }
}

#[test]
fn a_name_in_pgharness_allowed_hosts_is_served() {
    let (_workdir, serve) = serve_with(&[("PGHARNESS_ALLOWED_HOSTS", "dev.example.test")]);
    let answer = send(
        &serve,
        "GET",
        "/health",
        &[("host", "dev.example.test")],
        "",
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
}

#[test]
fn a_cross_site_request_changes_nothing_and_no_cors_header_is_sent() {
    let (_workdir, serve) = serve_with(&[]);
    let stop = |headers: &[(&str, &str)], body: &str| {
        send(&serve, "POST", "/api/database/stop", headers, body)
    };
    // A form or no-cors fetch from another site.
    let forged = stop(
        &[
            ("origin", "http://evil.example"),
            ("content-type", "text/plain"),
        ],
        "x",
    );
    assert_eq!(forged.status, 403, "{}", forged.body);
    assert!(forged.body.contains("cross-site"), "{}", forged.body);
    // A browser that sends Sec-Fetch-Site but no Origin.
    assert_eq!(stop(&[("sec-fetch-site", "cross-site")], "").status, 403);
    // A page with an opaque origin (sandboxed frame, file://).
    assert_eq!(stop(&[("origin", "null")], "").status, 403);
    // A body a cross-site form could send, even without Origin.
    let form = stop(
        &[("content-type", "application/x-www-form-urlencoded")],
        "a=b",
    );
    assert_eq!(form.status, 415, "{}", form.body);
    let health = send(&serve, "GET", "/health", &[], "");
    assert_eq!(
        health.status, 200,
        "the database was stopped: {}",
        health.body
    );

    // The UI's own requests: same origin, JSON.
    let origin = serve.api.clone();
    let created = send(
        &serve,
        "POST",
        "/users",
        &[
            ("origin", &origin),
            ("sec-fetch-site", "same-origin"),
            ("content-type", "application/json"),
        ],
        r#"{"username": "same_site", "email": "same@example.com"}"#,
    );
    assert_eq!(created.status, 201, "{}", created.body);

    // No CORS: a preflight gets no permission.
    let preflight = send(
        &serve,
        "OPTIONS",
        "/api/database/stop",
        &[
            ("origin", "http://evil.example"),
            ("access-control-request-method", "POST"),
        ],
        "",
    );
    assert!(
        !preflight
            .head
            .to_ascii_lowercase()
            .contains("access-control-allow"),
        "{}",
        preflight.head
    );
    assert!(forged.has_header("x-content-type-options: nosniff"));
}

#[test]
fn beyond_loopback_the_admin_routes_are_closed_without_a_token() {
    let (_workdir, serve) = serve_with(&[("APP_HOST", "0.0.0.0")]);
    assert!(
        serve.startup.contains("beyond this machine") && serve.startup.contains("disabled"),
        "{}",
        serve.startup
    );
    let reveal = send(&serve, "POST", "/api/connection/reveal", &[], "");
    assert_eq!(reveal.status, 403, "{}", reveal.body);
    assert!(
        reveal.body.contains("PGHARNESS_ADMIN_TOKEN"),
        "{}",
        reveal.body
    );
    assert!(!reveal.body.contains("postgresql://"));
    assert_eq!(
        send(&serve, "POST", "/api/database/stop", &[], "").status,
        403
    );
    // The users API stays open, as in the guide's service; so does a LAN address (an IP
    // literal cannot be rebound).
    let users = send(&serve, "GET", "/users", &[("host", "192.0.2.10:8000")], "");
    assert_eq!(users.status, 200, "{}", users.body);
}

#[test]
fn beyond_loopback_the_admin_routes_need_the_bearer_token() {
    let token = "correct-horse-battery-staple-42";
    let (_workdir, serve) =
        serve_with(&[("APP_HOST", "0.0.0.0"), ("PGHARNESS_ADMIN_TOKEN", token)]);
    assert!(serve.startup.contains("Bearer"), "{}", serve.startup);
    let reveal = |authorization: Option<&str>| {
        let headers: Vec<(&str, &str)> = authorization
            .map(|value| ("authorization", value))
            .into_iter()
            .collect();
        send(&serve, "POST", "/api/connection/reveal", &headers, "")
    };
    let missing = reveal(None);
    assert_eq!(missing.status, 401);
    assert!(
        missing.has_header("www-authenticate: Bearer"),
        "{}",
        missing.head
    );
    assert_eq!(
        reveal(Some("Bearer wrong-token-of-enough-length")).status,
        401
    );
    let granted = reveal(Some(&format!("Bearer {token}")));
    assert_eq!(granted.status, 200, "{}", granted.body);
    assert!(granted.body.contains("postgresql://"));
}

#[test]
fn slow_clients_hold_no_database_connection_and_get_408() {
    let (_workdir, serve) = serve_with(&[
        ("DATABASE_POOL_SIZE", "1"),
        ("DATABASE_MAX_OVERFLOW", "0"),
        ("DATABASE_POOL_TIMEOUT", "2"),
    ]);
    // More slow writers than the pool has connections: each promises a body, sends `{`.
    let slow: Vec<TcpStream> = (0..5)
        .map(|_| {
            let mut stream = TcpStream::connect(address(&serve)).unwrap();
            write!(
                stream,
                "POST /users HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n\
                 content-length: 1000\r\n\r\n{{",
                address(&serve)
            )
            .unwrap();
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let listing = send(&serve, "GET", "/users", &[], "");
    assert_eq!(listing.status, 200, "{}", listing.body);
    assert!(started.elapsed() < Duration::from_secs(2));

    for mut stream in slow {
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let answer = read_answer(&mut stream);
        assert_eq!(answer.status, 408, "{}", answer.head);
        assert!(answer.body.contains("did not arrive"), "{}", answer.body);
    }
}

#[test]
fn a_client_that_never_finishes_its_headers_or_idles_is_disconnected() {
    let (_workdir, serve) = serve_with(&[]);
    let mut unfinished = TcpStream::connect(address(&serve)).unwrap();
    unfinished
        .write_all(b"GET /health HTTP/1.1\r\nhost: 127")
        .unwrap();
    // A kept-alive connection that sends nothing after its first answer.
    let mut idle = TcpStream::connect(address(&serve)).unwrap();
    write!(
        idle,
        "GET /health/live HTTP/1.1\r\nhost: {}\r\n\r\n",
        address(&serve)
    )
    .unwrap();
    let started = Instant::now();
    for stream in [&mut unfinished, &mut idle] {
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        // Reads what answer there is, until the server closes the connection.
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).unwrap();
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_secs(20),
        "closed after {waited:?}"
    );
}

#[test]
fn connections_that_never_send_a_byte_are_answered_408_and_closed_without_starving_the_server() {
    let workdir = pgharness::platform::files::scratch_dir().unwrap();
    let home = workdir.path().join("data");
    // 600 descriptors: 128 kept for the server itself, so fewer client slots than silent sockets.
    let serve = Serve::spawn(pgharness_with_file_limit(workdir.path(), 600), &home, &[]);
    let opened = Instant::now();
    let mut silent: Vec<TcpStream> = (0..480)
        .map(|_| TcpStream::connect(address(&serve)).unwrap())
        .collect();
    // Meanwhile a client still gets an answer at once, not a hang: 503 while every slot is held.
    let meanwhile = send(&serve, "GET", "/health/live", &[], "");
    assert!(
        [200, 503].contains(&meanwhile.status),
        "{}\n{}",
        meanwhile.head,
        meanwhile.body
    );
    let ceiling = opened + Duration::from_secs(30);
    let mut timed_out = 0;
    for stream in &mut silent {
        let left = ceiling.saturating_duration_since(Instant::now());
        stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        // Ends at the server's close; a read timeout here means the socket was kept open.
        let answer = read_answer(stream);
        if answer.status == 408 {
            assert!(answer.body.contains(r#""detail":"#), "{}", answer.body);
            timed_out += 1;
        }
    }
    // The few over the cap were refused with 503 at once; every other one timed out.
    assert!(timed_out >= 400, "{timed_out} connections answered 408");
    assert_eq!(send(&serve, "GET", "/health/live", &[], "").status, 200);
}

#[test]
fn with_few_file_descriptors_excess_connections_get_503_and_the_server_recovers() {
    let workdir = pgharness::platform::files::scratch_dir().unwrap();
    let home = workdir.path().join("data");
    // 300 descriptors: 128 kept for the server itself, so 172 client connections at once.
    let serve = Serve::spawn(pgharness_with_file_limit(workdir.path(), 300), &home, &[]);
    let mut held: Vec<TcpStream> = (0..250)
        .map(|_| TcpStream::connect(address(&serve)).unwrap())
        .collect();
    for stream in &held {
        stream.set_nonblocking(true).unwrap();
    }
    // The answers to the connections over the limit come as the server accepts them: read until
    // at least the fewest expected have come, then once more for any still on their way.
    let mut answered = vec![false; held.len()];
    let mut read_answers = || {
        for (stream, answered) in held.iter_mut().zip(answered.iter_mut()) {
            let mut buffer = [0; 512];
            if !*answered
                && let Ok(read) = stream.read(&mut buffer)
                && String::from_utf8_lossy(&buffer[..read]).starts_with("HTTP/1.1 503")
            {
                *answered = true;
            }
        }
        answered.iter().filter(|answered| **answered).count()
    };
    let deadline = Instant::now() + PATIENCE;
    while read_answers() < 60 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let refused = read_answers();
    assert!(
        (60..=90).contains(&refused),
        "{refused} connections refused"
    );
    drop(held);
    // The server frees each slot once it reads that client's close: shortly, not at once.
    wait_until(
        "health to answer 200 once the held connections are closed",
        || send(&serve, "GET", "/health", &[], "").status == 200,
    );
}

#[test]
fn a_killed_postmaster_is_restarted_on_the_same_data_without_restarting_the_api() {
    let (_workdir, serve) = serve_with(&[]);
    let created = post_user(&serve, "survivor");
    assert_eq!(created.status, 201, "{}", created.body);
    let postmaster = postmaster_pid(&serve.home).unwrap();

    kill_hard(postmaster);
    // Right after the kill, backends that have not noticed yet may still answer: wait for
    // the supervisor's new postmaster, then for health.
    wait_until("a new postmaster", || {
        postmaster_pid(&serve.home).is_some_and(|pid| pid != postmaster && is_postgres(pid))
    });
    assert!(!is_postgres(postmaster));
    wait_until("the database to be healthy again", || {
        send(&serve, "GET", "/health", &[], "").status == 200
    });
    let listing = send(&serve, "GET", "/users?q=survivor", &[], "");
    assert!(
        listing.body.contains("survivor@example.com"),
        "{}",
        listing.body
    );
    let state = send_admin(&serve, "POST", "/api/database/start", &[]);
    assert_eq!(state.status, 200);
    assert!(
        state.body.contains(r#""status":"running""#),
        "{}",
        state.body
    );
    // The Health screen's timeline tells what happened.
    wait_until("the crash on the timeline", || {
        let events = send(&serve, "GET", "/api/health/events", &[], "").body;
        events.contains(r#""kind":"server_crashed""#)
            && events.contains(r#""kind":"server_recovered""#)
    });
}

#[test]
fn a_server_that_does_not_come_back_is_reported_without_naming_its_files() {
    let (_workdir, serve) = serve_with(&[]);
    let postmaster = postmaster_pid(&serve.home).unwrap();
    // Without its configuration file the server cannot start again.
    let config = serve.home.join("pgdata/postgresql.conf");
    std::fs::rename(&config, config.with_extension("moved")).unwrap();
    kill_hard(postmaster);
    // After the supervisor's 15 s of retries.
    wait_until("health to report the failed restart", || {
        send(&serve, "GET", "/health", &[], "")
            .body
            .contains("does not start again")
    });
    let health = send(&serve, "GET", "/health", &[], "");
    assert_eq!(health.status, 503);
    wait_until("the crash on the timeline", || {
        send(&serve, "GET", "/api/health/events", &[], "")
            .body
            .contains(r#""kind":"server_crashed""#)
    });
    let events = send(&serve, "GET", "/api/health/events", &[], "");
    let home = serve.home.display().to_string();
    for answer in [&health, &events] {
        assert!(
            !answer.body.contains(&home) && !answer.body.contains("postgresql.log"),
            "{}",
            answer.body
        );
    }
    std::fs::rename(config.with_extension("moved"), &config).unwrap();
}

#[test]
fn start_after_a_crash_starts_the_server_and_says_so() {
    let (_workdir, serve) = serve_with(&[]);
    let postmaster = postmaster_pid(&serve.home).unwrap();
    kill_hard(postmaster);
    wait_until("the killed postmaster to be gone", || {
        !is_postgres(postmaster)
    });
    // Whether the supervisor or this request gets there first, the answer is the truth.
    let state = send_admin(&serve, "POST", "/api/database/start", &[]);
    assert_eq!(state.status, 200, "{}", state.body);
    assert!(
        state.body.contains(r#""status":"running""#),
        "{}",
        state.body
    );
    // Health's own check gives the database 2 s, which the first connections to a server
    // recovering from a crash can exceed on a busy machine.
    wait_until("health to be 200 after the start", || {
        send(&serve, "GET", "/health", &[], "").status == 200
    });
    // Stop and restart answer for the real server, not a stale flag.
    let stopped = send_admin(&serve, "POST", "/api/database/stop", &[]);
    assert!(
        stopped.body.contains(r#""status":"stopped""#),
        "{}",
        stopped.body
    );
    let restarted = send_admin(&serve, "POST", "/api/database/restart", &[]);
    assert!(
        restarted.body.contains(r#""status":"running""#),
        "{}",
        restarted.body
    );
}

#[test]
fn while_a_crashed_server_cannot_start_again_health_says_why_and_it_recovers_later() {
    let (_workdir, serve) = serve_with(&[]);
    let settings = serve.home.join("pgdata/postgresql.auto.conf");
    let good = std::fs::read_to_string(&settings).unwrap();
    let postmaster = postmaster_pid(&serve.home).unwrap();
    kill_hard(postmaster);
    // Break its configuration before the supervisor can start it again.
    std::fs::write(&settings, format!("{good}\nthis is not a setting\n")).unwrap();
    wait_until("health to name the crash", || {
        let health = send(&serve, "GET", "/health", &[], "");
        health.status == 503 && health.body.contains("exited unexpectedly")
    });
    let health = send(&serve, "GET", "/health", &[], "");
    assert!(health.has_header("retry-after: 1"), "{}", health.head);
    // Repaired, it comes back by itself.
    std::fs::write(&settings, good).unwrap();
    wait_until("the database to be back", || {
        send(&serve, "GET", "/health", &[], "").status == 200
    });
    assert_ne!(postmaster_pid(&serve.home), Some(postmaster));
}

/// Every route that reveals a credential or changes the server.
const ADMIN_ROUTES: [(&str, &str); 14] = [
    ("POST", "/api/connection/reveal"),
    ("POST", "/api/database/stop"),
    ("POST", "/api/database/start"),
    ("POST", "/api/database/restart"),
    ("POST", "/api/database/reset"),
    ("POST", "/api/database/fixtures/users"),
    ("GET", "/api/database/snapshots"),
    ("POST", "/api/database/snapshots"),
    ("POST", "/api/database/snapshots/kept/restore"),
    ("DELETE", "/api/database/snapshots/kept"),
    ("POST", "/api/queries/slow/reset"),
    ("GET", "/api/queries/slow?include_internal=true"),
    ("GET", "/api/database/overview?include_internal=true"),
    ("POST", "/api/queries/explain"),
];

#[test]
fn on_loopback_the_admin_routes_need_the_token_of_the_printed_link() {
    let (_workdir, serve) = serve_with(&[]);
    let token = serve.admin_token.clone().unwrap();
    assert!(token.len() >= 32, "{token}");
    for (method, path) in ADMIN_ROUTES {
        let refused = send(&serve, method, path, &[], "");
        assert_eq!(refused.status, 401, "{method} {path}: {}", refused.body);
        assert!(refused.body.contains("pgharness url"), "{}", refused.body);
        assert!(!refused.body.contains("postgresql://"));
    }
    let health = send(&serve, "GET", "/health", &[], "");
    assert_eq!(
        health.status, 200,
        "the database was stopped: {}",
        health.body
    );
    // The users API stays open on loopback.
    assert_eq!(send(&serve, "GET", "/users", &[], "").status, 200);
    let access = send(&serve, "GET", "/api/access", &[], "");
    assert!(access.body.contains(r#""admin":false"#), "{}", access.body);

    // A wrong token in the link sets nothing.
    let wrong = send(
        &serve,
        "GET",
        "/?token=not-the-token-of-this-server",
        &[],
        "",
    );
    assert_eq!(wrong.status, 303);
    assert!(!wrong.head.to_ascii_lowercase().contains("set-cookie"));
    // The printed link: the token becomes a cookie scripts cannot read and other sites do not
    // send, and leaves the address bar.
    let link = send(&serve, "GET", &format!("/?token={token}"), &[], "");
    assert_eq!(link.status, 303, "{}", link.head);
    assert!(link.has_header("location: /"), "{}", link.head);
    let set_cookie = link
        .head
        .lines()
        .find_map(|line| {
            line.split_once(':')
                .filter(|(name, _)| name.eq_ignore_ascii_case("set-cookie"))
                .map(|(_, value)| value.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no cookie set: {}", link.head));
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(set_cookie.contains("SameSite=Strict"), "{set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap();
    let revealed = send(
        &serve,
        "POST",
        "/api/connection/reveal",
        &[("cookie", cookie)],
        "",
    );
    assert_eq!(revealed.status, 200, "{}", revealed.body);
    assert!(revealed.body.contains("postgresql://"));
    let access = send(&serve, "GET", "/api/access", &[("cookie", cookie)], "");
    assert!(access.body.contains(r#""admin":true"#), "{}", access.body);

    // Kept beside the data, for the owner only, and the same at the next start.
    let token_file = serve.home.join("admin-token");
    let mode = std::fs::metadata(&token_file).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    assert_eq!(std::fs::read_to_string(&token_file).unwrap().trim(), token);
}

/// The Host, Origin and Content-Type checks treat a value they cannot read as the unsafe one.
#[test]
fn unreadable_or_disguised_headers_are_refused_not_waved_through() {
    let (_workdir, serve) = serve_with(&[]);
    let port = address(&serve).rsplit(':').next().unwrap().to_owned();
    let disguised = format!("127.0.0.1:{port}@evil.example");
    for host in [disguised.as_str(), "127.0.0.1:notaport", "127.0.0.1\u{e9}"] {
        let answer = send(&serve, "GET", "/users", &[("host", host)], "");
        // hyper itself may refuse a byte it cannot take (400); never served.
        assert!(
            matches!(answer.status, 400 | 421),
            "{host}: {}",
            answer.head
        );
    }
    let stop =
        |headers: &[(&str, &str)]| send_admin(&serve, "POST", "/api/database/stop", headers).status;
    assert_eq!(stop(&[("content-type", "application/json\u{e9}")]), 415);
    assert_eq!(stop(&[("origin", "http://127.0.0.1\u{e9}")]), 403);
    let health = send(&serve, "GET", "/health", &[], "");
    assert_eq!(
        health.status, 200,
        "the database was stopped: {}",
        health.body
    );
}

/// Another Unix account reaches 127.0.0.1 as easily as the developer: it gets neither the
/// connection string nor the token.
#[test]
fn another_account_on_this_machine_gets_nothing_from_the_admin_routes() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: creating a second account needs root");
        return;
    }
    let account = "pgharness-other";
    if uzers::get_user_by_name(account).is_none() {
        let created = std::process::Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                account,
            ])
            .status()
            .unwrap();
        assert!(created.success() || uzers::get_user_by_name(account).is_some());
    }
    let other = uzers::get_user_by_name(account).unwrap();
    let (_workdir, serve) = serve_with(&[]);
    let as_other = |program: &str, args: &[&str]| {
        use std::os::unix::process::CommandExt as _;
        std::process::Command::new(program)
            .args(args)
            .uid(other.uid())
            .gid(other.primary_group_id())
            .output()
            .unwrap()
    };
    let url = format!("{}/api/connection/reveal", serve.api);
    let reveal = as_other(
        "curl",
        &[
            "-s",
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "-d",
            "{}",
            "-w",
            "\n%{http_code}",
            &url,
        ],
    );
    let answer = String::from_utf8_lossy(&reveal.stdout);
    assert!(answer.ends_with("\n401"), "{answer}");
    assert!(!answer.contains("postgresql://"), "{answer}");
    let token_file = serve.home.join("admin-token");
    let read = as_other("cat", &[token_file.to_str().unwrap()]);
    assert!(
        !read.status.success(),
        "another account read the admin token"
    );
}

/// Writes on a full disk: 503 naming the disk, not 500; `/health` degraded (200), the timeline
/// tells; once there is room again, writes work and health is back.
#[test]
fn a_full_disk_answers_503_naming_it_and_health_turns_degraded_until_a_write_succeeds() {
    let workdir = pgharness::platform::files::scratch_dir().unwrap();
    let disk = workdir.path().join("disk");
    std::fs::create_dir(&disk).unwrap();
    // A small disk of its own (tmpfs): needs the right to mount.
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256m", "tmpfs"])
        .arg(&disk)
        .output()
        .unwrap();
    if !mounted.status.success() {
        println!(
            "skipped: cannot mount a tmpfs here: {}",
            String::from_utf8_lossy(&mounted.stderr).trim()
        );
        return;
    }
    let unmount = UnmountOnDrop(disk.clone());
    let serve = Serve::start(workdir.path(), &disk.join("data"));
    fill(&disk.join("filler"));

    let refused = post_user(&serve, "spaceless");
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(refused.has_header("retry-after: 1"), "{}", refused.head);
    assert!(
        refused
            .body
            .contains("the disk holding the database's data directory is full"),
        "{}",
        refused.body
    );
    let health = send(&serve, "GET", "/health", &[], "");
    assert_eq!(health.status, 200, "{}", health.body);
    assert!(
        health.body.contains(r#""status":"degraded""#),
        "{}",
        health.body
    );
    assert!(health.body.contains("disk"), "{}", health.body);
    let events = send(&serve, "GET", "/api/health/events", &[], "");
    assert!(
        events.body.contains(r#""kind":"disk_full""#),
        "{}",
        events.body
    );

    std::fs::remove_file(disk.join("filler")).unwrap();
    let created = post_user(&serve, "roomy");
    assert_eq!(created.status, 201, "{}", created.body);
    // The write that succeeded cleared it (whatever health's own 2 s check finds meanwhile).
    let health = send(&serve, "GET", "/health", &[], "");
    assert!(!health.body.contains("degraded"), "{}", health.body);
    drop(serve);
    drop(unmount);
}

/// Writes zeros to `path` until its file system has no space left.
fn fill(path: &std::path::Path) {
    let mut file = std::fs::File::create(path).unwrap();
    for chunk in [1 << 20, 4096] {
        let zeros = vec![0_u8; chunk];
        while file.write_all(&zeros).is_ok() {}
    }
    let _ = file.sync_all();
}

/// Unmounts a file system when dropped, after the server on it has stopped.
struct UnmountOnDrop(std::path::PathBuf);

impl Drop for UnmountOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}
