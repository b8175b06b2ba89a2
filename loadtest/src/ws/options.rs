//! The options of a WebSocket run as people write them (`sdsim-loadtest ws` flags, or a
//! scenario's `[target] protocol = "ws"`), and their defaults, turned into a [`WsLoad`].

use super::{channel_names, parse_sources, resolve_url, Publish, WsLoad};
use anyhow::{bail, Context};
use std::time::Duration;

/// The channel connections subscribe to when none is named.
pub const DEFAULT_CHANNEL: &str = "simulation:events:loadtest";

/// A WebSocket run as written.
#[derive(Debug, Clone)]
pub struct WsOptions {
    /// `ws://host:port/path`.
    pub url: String,
    /// Connections in total.
    pub connections: usize,
    /// New connections per second at most.
    pub connect_rate: f64,
    /// Limit on connect + upgrade + subscribe.
    pub connect_timeout: Duration,
    /// The measured hold.
    pub duration: Duration,
    /// Unmeasured time between the last connection opening and the hold.
    pub warmup: Duration,
    /// The channel, or the base name of `channels` channels.
    pub channel: String,
    /// Spread the connections over `channel-0 .. channel-{K-1}`.
    pub channels: Option<usize>,
    /// Bearer token of the upgrade (`{i}`: the connection number).
    pub token: Option<String>,
    /// Events per second the generator publishes.
    pub publish_rate: Option<f64>,
    /// `http://host:port/api/publish`; default: the WebSocket server's.
    pub publish_url: Option<String>,
    /// Token of the publish requests; default: `token`.
    pub publish_token: Option<String>,
    /// Publishing connections.
    pub publish_connections: usize,
    /// Application pings per second over all connections.
    pub send_rate: Option<f64>,
    /// CPUs of the generator's threads, within the affinity mask; empty: all of the mask.
    pub cpus: Vec<usize>,
    /// Source addresses, e.g. `127.0.0.1-127.0.0.50`.
    pub sources: Option<String>,
    /// Interval of the progress line and the series.
    pub interval: Duration,
}

impl Default for WsOptions {
    fn default() -> Self {
        WsOptions {
            url: String::new(),
            connections: 100,
            connect_rate: 1000.0,
            connect_timeout: Duration::from_secs(10),
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            channel: DEFAULT_CHANNEL.into(),
            channels: None,
            token: None,
            publish_rate: None,
            publish_url: None,
            publish_token: None,
            publish_connections: 4,
            send_rate: None,
            cpus: Vec::new(),
            sources: None,
            interval: Duration::from_secs(1),
        }
    }
}

impl WsOptions {
    /// The run these options describe, checked.
    pub fn build(&self) -> anyhow::Result<WsLoad> {
        let (addr, host, path) = resolve_url(&self.url, "ws")?;
        if self.channels == Some(0) {
            bail!("--channels must be at least 1");
        }
        let publish = match self.publish_rate {
            None => None,
            Some(rate) => {
                let url = self
                    .publish_url
                    .clone()
                    .unwrap_or_else(|| format!("http://{host}/api/publish"));
                let (addr, host, path) = resolve_url(&url, "http").context("--publish-url")?;
                Some(Publish {
                    addr,
                    host,
                    path,
                    token: self.publish_token.clone().or_else(|| self.token.clone()),
                    rate,
                    connections: self.publish_connections,
                    data_size: None,
                })
            }
        };
        let sources = match &self.sources {
            Some(text) => parse_sources(text).context("--sources")?,
            None => Vec::new(),
        };
        let load = WsLoad {
            addr,
            host,
            path,
            connections: self.connections,
            connect_rate: self.connect_rate,
            connect_timeout: self.connect_timeout,
            warmup: self.warmup,
            duration: self.duration,
            drain: Duration::from_secs(5),
            channels: channel_names(&self.channel, self.channels),
            token: self.token.clone(),
            publish,
            ping_rate: self.send_rate,
            cpus: crate::cpus::resolve(&self.cpus, "cpus")?,
            sources,
            interval: self.interval,
            read_buffer: super::DEFAULT_READ_BUFFER,
        };
        load.check()?;
        Ok(load)
    }

    /// The parameters recorded in the JSON report.
    pub fn parameters(&self) -> Vec<(&'static str, String)> {
        let opt = |v: Option<f64>| v.map_or("none".into(), |r| r.to_string());
        vec![
            ("url", self.url.clone()),
            ("connections", self.connections.to_string()),
            ("connect_rate", self.connect_rate.to_string()),
            ("duration", format!("{:?}", self.duration)),
            ("warmup", format!("{:?}", self.warmup)),
            ("channel", self.channel.clone()),
            ("channels", self.channels.unwrap_or(1).to_string()),
            ("publish_rate", opt(self.publish_rate)),
            ("send_rate", opt(self.send_rate)),
            ("cpus", format!("{:?}", self.cpus)),
            (
                "sources",
                self.sources.clone().unwrap_or_else(|| "kernel".into()),
            ),
        ]
    }
}
