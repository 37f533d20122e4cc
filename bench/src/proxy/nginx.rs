//! nginx as the backend (a static 1 KiB file) and as one
//! reverse-proxy hop in front of it, each a foreground process with its own
//! temporary configuration directory.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;

use super::children::{Child, free_port, loopback};

/// Size of the backend's response body.
pub const BODY_LEN: usize = 1024;

/// A running nginx; stopped and its directory removed when dropped.
pub struct Nginx {
    addr: SocketAddr,
    // Declared before `dir`: the process stops before its directory goes.
    _process: Child,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// The backend: `GET` anything, get 200 with the same static file of
    /// [`BODY_LEN`] bytes (`sendfile`, open-file cache).
    pub async fn backend(program: &Path) -> anyhow::Result<Self> {
        Self::start(
            program,
            "backend",
            "location / {\n\
             \x20           root www;\n\
             \x20           default_type text/plain;\n\
             \x20           try_files /body.txt =404;\n\
             \x20       }",
            "",
        )
        .await
    }

    /// One reverse-proxy hop to `upstream`, with a keep-alive connection pool.
    pub async fn hop(program: &Path, upstream: SocketAddr) -> anyhow::Result<Self> {
        Self::start(
            program,
            "nginx hop",
            "location / {\n\
             \x20           proxy_pass http://backend;\n\
             \x20           proxy_http_version 1.1;\n\
             \x20           proxy_set_header Connection \"\";\n\
             \x20       }",
            &format!("upstream backend {{ server {upstream}; keepalive 64; keepalive_requests 1000000; }}"),
        )
        .await
    }

    /// One reverse-proxy hop to `upstream` for large transfers: bodies stream
    /// both ways through memory (response buffers of 256 KiB, up to 2 MiB read
    /// ahead; no temporary files; the request body passed on as it arrives).
    pub async fn streaming_hop(program: &Path, upstream: SocketAddr) -> anyhow::Result<Self> {
        Self::start(
            program,
            "nginx streaming hop",
            "location / {\n\
             \x20           proxy_pass http://backend;\n\
             \x20           proxy_http_version 1.1;\n\
             \x20           proxy_set_header Connection \"\";\n\
             \x20           proxy_buffering on;\n\
             \x20           proxy_buffer_size 256k;\n\
             \x20           proxy_buffers 8 256k;\n\
             \x20           proxy_busy_buffers_size 512k;\n\
             \x20           proxy_max_temp_file_size 0;\n\
             \x20           proxy_request_buffering off;\n\
             \x20           client_body_buffer_size 256k;\n\
             \x20           client_max_body_size 0;\n\
             \x20       }",
            &format!("upstream backend {{ server {upstream}; keepalive 64; }}"),
        )
        .await
    }

    async fn start(program: &Path, name: &str, location: &str, upstream: &str) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("postern-bench-nginx-").tempdir()?;
        // Workers run as an unprivileged user when the harness is root: let them
        // into the directory (nothing secret in it).
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        let www = dir.path().join("www");
        std::fs::create_dir(&www)?;
        std::fs::set_permissions(&www, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        let body = www.join("body.txt");
        std::fs::write(&body, "x".repeat(BODY_LEN))?;
        std::fs::set_permissions(&body, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
        let port = free_port()?;
        let addr = loopback(port);
        let d = dir.path().display();
        let config = format!(
            "daemon off;\n\
             master_process on;\n\
             worker_processes auto;\n\
             pid {d}/nginx.pid;\n\
             error_log {d}/error.log warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n\
             \x20   access_log off;\n\
             \x20   client_body_temp_path {d}/client_body;\n\
             \x20   proxy_temp_path {d}/proxy;\n\
             \x20   fastcgi_temp_path {d}/fastcgi;\n\
             \x20   uwsgi_temp_path {d}/uwsgi;\n\
             \x20   scgi_temp_path {d}/scgi;\n\
             \x20   keepalive_timeout 60s;\n\
             \x20   keepalive_requests 1000000;\n\
             \x20   sendfile on;\n\
             \x20   open_file_cache max=64;\n\
             \x20   {upstream}\n\
             \x20   server {{\n\
             \x20       listen {addr} backlog=4096;\n\
             \x20       {location}\n\
             \x20   }}\n\
             }}\n"
        );
        let file = dir.path().join("nginx.conf");
        std::fs::write(&file, config).with_context(|| format!("writing {}", file.display()))?;
        let mut command = Command::new(program);
        command.arg("-p").arg(dir.path()).arg("-c").arg(&file);
        // nginx checks the default error log path before reading the config.
        command.arg("-e").arg(dir.path().join("error.log"));
        let mut process = Child::spawn(name, command, &dir.path().join("stderr.log"))?;
        process.wait_for_port(addr, Duration::from_secs(10)).await?;
        Ok(Self {
            addr,
            _process: process,
            _dir: dir,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}
