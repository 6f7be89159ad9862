//! A small WebSocket client that prints every frame it receives, one per line: for trying the
//! gateway out (`switchyard client`) and for the README's walkthrough.

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connecting to {url}: {source}")]
    Connect {
        url: String,
        source: tokio_tungstenite::tungstenite::Error,
    },
    #[error("reading from the gateway: {0}")]
    Read(tokio_tungstenite::tungstenite::Error),
    #[error("writing output: {0}")]
    Output(std::io::Error),
}

/// How the connection ended: the close code the server sent, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    pub code: Option<u16>,
    pub reason: String,
}

/// Connects to `url` and writes each text frame to `out` as one line until the server closes.
pub async fn listen(url: &str, mut out: impl AsyncWrite + Unpin) -> Result<Closed, ClientError> {
    let (mut socket, _response) =
        tokio_tungstenite::connect_async(url)
            .await
            .map_err(|source| ClientError::Connect {
                url: url.to_owned(),
                source,
            })?;
    while let Some(message) = socket.next().await {
        match message.map_err(ClientError::Read)? {
            Message::Text(text) => {
                out.write_all(text.as_bytes())
                    .await
                    .map_err(ClientError::Output)?;
                out.write_all(b"\n").await.map_err(ClientError::Output)?;
                out.flush().await.map_err(ClientError::Output)?;
            }
            Message::Close(frame) => {
                let _ = socket.close(None).await;
                return Ok(Closed {
                    code: frame.as_ref().map(|f| u16::from(f.code)),
                    reason: frame.map(|f| f.reason.to_string()).unwrap_or_default(),
                });
            }
            Message::Ping(_) | Message::Pong(_) | Message::Binary(_) | Message::Frame(_) => {}
        }
    }
    let _ = socket.send(Message::Close(None)).await;
    Ok(Closed {
        code: None,
        reason: String::new(),
    })
}
