//! The open-file limit of `pg-router serve`: raised from the soft limit to the hard one at
//! start, with a warning when even the hard limit is below what the configuration may open.
#![allow(clippy::unwrap_used)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_pg-router");

/// The soft limit on open files of process `pid`.
fn soft_limit(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

#[test]
fn serve_raises_its_soft_open_file_limit_and_warns_when_the_hard_one_is_short() {
    let dir = std::env::temp_dir().join(format!("pg-router-open-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = dir.join("router.toml");
    // Nothing listens on the shard's port: the limit is set before any backend is reached.
    std::fs::write(
        &config,
        format!(
            "databases = [\"app\"]\n[server]\nlisten = \"127.0.0.1:{port}\"\n\
             [[users]]\nname = \"app\"\npassword = \"pw\"\n\
             [[shards]]\nname = \"s0\"\nhost = \"127.0.0.1\"\nport = 1\n[control]\nmode = \"off\"\n"
        ),
    )
    .unwrap();
    let log = dir.join("router.log");
    // A service manager's usual limits, made small: soft 256, hard 400.
    let mut child = Command::new("sh")
        .args(["-c", "ulimit -Sn 256 && ulimit -Hn 400 && exec \"$0\" serve --config \"$1\""])
        .arg(BIN)
        .arg(&config)
        .env("PG_ROUTER_LOG", "info")
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let started = Instant::now();
    while TcpStream::connect(addr).is_err() {
        let exited = child.try_wait().unwrap().is_some();
        let waited = started.elapsed() > Duration::from_secs(20);
        assert!(!exited && !waited, "not serving: {}", std::fs::read_to_string(&log).unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
    let soft = soft_limit(child.id());
    let _ = child.kill();
    let _ = child.wait();
    let out = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(soft, 400, "the soft limit is raised to the hard one");
    // 1000 clients (the default) and a pool of 20 need more than 400.
    let warning = out.lines().find(|l| l.contains("open-file limit")).unwrap_or_else(|| panic!("{out}"));
    assert!(warning.contains("WARN") && warning.contains("limit=400"), "{warning}");
}
