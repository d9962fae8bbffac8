//! A counting TCP proxy, shared by the tests and the API benchmark (`#[path]`).

/// A TCP proxy in front of `target` that counts what clients send: each read of a client's
/// bytes is one flush of the client, so one round trip to the server.
pub struct CountingProxy {
    pub port: u16,
    client_flushes: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl CountingProxy {
    pub async fn start(target: std::net::SocketAddr) -> Self {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let client_flushes = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = std::sync::Arc::clone(&client_flushes);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = tokio::net::TcpStream::connect(target).await.unwrap();
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let counter = std::sync::Arc::clone(&counter);
                tokio::spawn(async move {
                    let mut buffer = vec![0; 64 * 1024];
                    while let Ok(read) = client_read.read(&mut buffer).await {
                        if read == 0 || server_write.write_all(&buffer[..read]).await.is_err() {
                            break;
                        }
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                });
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                });
            }
        });
        Self {
            port,
            client_flushes,
        }
    }

    pub fn client_flushes(&self) -> u64 {
        self.client_flushes
            .load(std::sync::atomic::Ordering::SeqCst)
    }
}
