//! `grpc.health.v1.Health`: Check answers a service's status (NOT_FOUND for one this server
//! does not know); Watch sends the status now and every change after. `""` is the server as a
//! whole. When the server drains, every service reports NOT_SERVING.

use super::pb::health::health_check_response::ServingStatus;
use super::pb::health::{HealthCheckRequest, HealthCheckResponse};
use super::server::{Call, Services, Stream};
use super::status::{Code, Status};
use sdsim_core::shutdown::Phase;
use std::collections::HashMap;
use std::rc::Rc;
use tokio::sync::watch;

/// The statuses this shard reports (shared by its connections).
pub struct Health {
    statuses: watch::Sender<HashMap<String, ServingStatus>>,
    phase: watch::Receiver<Phase>,
}

impl Health {
    /// Reports `services` (and `""`) as SERVING while the server accepts.
    pub fn new(services: &[&str], phase: watch::Receiver<Phase>) -> Rc<Health> {
        let mut map: HashMap<String, ServingStatus> = services
            .iter()
            .map(|s| (s.to_string(), ServingStatus::Serving))
            .collect();
        map.insert(String::new(), ServingStatus::Serving);
        Rc::new(Health {
            statuses: watch::Sender::new(map),
            phase,
        })
    }

    /// Sets one service's status (Watch streams see the change).
    pub fn set(&self, service: &str, status: ServingStatus) {
        self.statuses.send_modify(|m| {
            m.insert(service.to_string(), status);
        });
    }

    fn status(&self, service: &str) -> Option<ServingStatus> {
        let known = self.statuses.borrow().get(service).copied()?;
        Some(if *self.phase.borrow() == Phase::Accepting {
            known
        } else {
            ServingStatus::NotServing
        })
    }

    /// Registers Check and Watch on `services`.
    pub fn register(self: &Rc<Self>, services: &mut Services) {
        let h = Rc::clone(self);
        services.unary(
            "/grpc.health.v1.Health/Check",
            move |_call: Call, req: HealthCheckRequest| {
                let status = h.status(&req.service);
                async move {
                    match status {
                        Some(s) => Ok(HealthCheckResponse { status: s as i32 }),
                        None => Err(Status::new(
                            Code::NotFound,
                            format!("unknown service {:?}", req.service),
                        )),
                    }
                }
            },
        );
        let h = Rc::clone(self);
        services.server_streaming(
            "/grpc.health.v1.Health/Watch",
            move |_call: Call, req: HealthCheckRequest, mut out: Stream<HealthCheckResponse>| {
                let h = Rc::clone(&h);
                async move {
                    let mut changes = h.statuses.subscribe();
                    let mut phase = h.phase.clone();
                    let mut last = None;
                    loop {
                        let now = h
                            .status(&req.service)
                            .unwrap_or(ServingStatus::ServiceUnknown);
                        if last != Some(now) {
                            out.send(&HealthCheckResponse { status: now as i32 })
                                .await?;
                            last = Some(now);
                        }
                        monoio::select! {
                            r = changes.changed() => if r.is_err() { return Ok(()) },
                            r = phase.changed() => if r.is_err() { return Ok(()) },
                        }
                    }
                }
            },
        );
    }
}
