//! The ProjectService and SimulationService with a tonic client on their own listeners
//! (project.grpc_listen, simulation.grpc_listen): every method, live metrics as a server
//! stream until the run ends, error details (reason and fields in `grpc-status-details-bin`),
//! and who may act for whom (a user's own token, a service token forwarding a user).

mod support;

use prost::Message;
use sdsim_net::grpc::status::{BadRequest, ErrorInfo, RpcStatus};
use sdsim_projects::pb::project as pp;
use sdsim_simulations::pb as ps;
use serde_json::Value;
use std::net::SocketAddr;
use support::{login, register, runtime, start, stop, STRONG};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic_prost::ProstCodec;

const SERVICE_TOKEN: &str = "svc-token-0123456789abcdef";

struct Client {
    grpc: tonic::client::Grpc<Channel>,
    service: &'static str,
}

impl Client {
    async fn connect(addr: SocketAddr, service: &'static str) -> Client {
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        Client {
            grpc: tonic::client::Grpc::new(channel),
            service,
        }
    }

    async fn call<M, R>(
        &mut self,
        token: Option<&str>,
        extra: &[(&'static str, &str)],
        method: &str,
        m: M,
    ) -> Result<R, tonic::Status>
    where
        M: prost::Message + Default + Send + 'static,
        R: prost::Message + Default + Send + 'static,
    {
        self.grpc.ready().await.unwrap();
        let path = PathAndQuery::from_maybe_shared(format!("/{}/{method}", self.service)).unwrap();
        let mut req = tonic::Request::new(m);
        if let Some(t) = token {
            req.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        for (k, v) in extra {
            req.metadata_mut().insert(*k, v.parse().unwrap());
        }
        self.grpc
            .unary(req, path, ProstCodec::<M, R>::default())
            .await
            .map(|r| r.into_inner())
    }
}

impl Client {
    /// The GetLiveMetrics stream of run `id`, as the holder of `token`.
    async fn live(
        &mut self,
        token: &str,
        id: &str,
    ) -> tonic::Streaming<ps::GetLiveMetricsResponse> {
        self.grpc.ready().await.unwrap();
        let mut req = tonic::Request::new(ps::GetLiveMetricsRequest {
            simulation_id: id.to_string(),
            ..Default::default()
        });
        req.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        self.grpc
            .server_streaming(
                req,
                PathAndQuery::from_static("/sdsim.simulation.v1.SimulationService/GetLiveMetrics"),
                ProstCodec::<ps::GetLiveMetricsRequest, ps::GetLiveMetricsResponse>::default(),
            )
            .await
            .unwrap()
            .into_inner()
    }
}

/// The reason and the field violations of a failed call.
fn details(s: &tonic::Status) -> (String, Vec<(String, String)>) {
    let rpc = RpcStatus::decode(s.details()).expect("grpc-status-details-bin decodes");
    let mut reason = String::new();
    let mut fields = Vec::new();
    for any in rpc.details {
        match any.type_url.as_str() {
            "type.googleapis.com/google.rpc.ErrorInfo" => {
                let info = ErrorInfo::decode(any.value.as_slice()).unwrap();
                assert_eq!(info.domain, "sdsim");
                reason = info.reason;
            }
            "type.googleapis.com/google.rpc.BadRequest" => {
                for v in BadRequest::decode(any.value.as_slice())
                    .unwrap()
                    .field_violations
                {
                    fields.push((v.field, v.description));
                }
            }
            other => panic!("unexpected detail {other}"),
        }
    }
    (reason, fields)
}

fn token_of(addr: SocketAddr, email: &str) -> (String, String) {
    let u = register(addr, email);
    let (status, t) = login(addr, email, STRONG);
    assert_eq!(status, 200, "{t}");
    (
        u["id"].as_str().unwrap().to_string(),
        t["access_token"].as_str().unwrap().to_string(),
    )
}

#[sdsim_testing::backends(epoll, io_uring, epoll_postgres, io_uring_postgres)]
fn both_services_with_a_tonic_client() {
    let tokens =
        format!(r#"auth.tokens=[{{token="{SERVICE_TOKEN}",user="gateway-1",roles=["service"]}}]"#);
    let server = start(&[
        "ratelimit.enabled=false",
        "simulation.metrics_interval=100ms",
        &tokens,
    ]);
    let addr = server.local_addr();
    let (ada_id, ada) = token_of(addr, "ada@example.com");
    let (bob_id, bob) = token_of(addr, "bob@example.com");
    let project_addr = server.project_grpc_addr().unwrap();
    let sim_addr = server.simulation_grpc_addr().unwrap();
    runtime().block_on(async {
        let mut p = Client::connect(project_addr, "sdsim.project.v1.ProjectService").await;
        let mut s = Client::connect(sim_addr, "sdsim.simulation.v1.SimulationService").await;

        // Who may call.
        let e = p
            .call::<_, pp::ListTemplatesResponse>(
                None,
                &[],
                "ListTemplates",
                pp::ListTemplatesRequest::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
        let e = p
            .call::<_, pp::ListTemplatesResponse>(
                Some("not-a-token"),
                &[],
                "ListTemplates",
                pp::ListTemplatesRequest::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");

        let templates: pp::ListTemplatesResponse = p
            .call(
                Some(&ada),
                &[],
                "ListTemplates",
                pp::ListTemplatesRequest {
                    kind: "system".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert!(templates.templates.iter().any(|t| t.id == "url-shortener"));
        assert!(templates.templates.iter().all(|t| t.kind == "system"));
        let t: pp::GetTemplateResponse = p
            .call(
                Some(&ada),
                &[],
                "GetTemplate",
                pp::GetTemplateRequest {
                    template_id: "url-shortener".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert!(t.template.unwrap().design_json.contains("components"));

        let created: pp::CreateProjectResponse = p
            .call(
                Some(&ada),
                &[],
                "CreateProject",
                pp::CreateProjectRequest {
                    name: "Links".into(),
                    template_id: "url-shortener".into(),
                    settings_json: r#"{"region":"eu"}"#.into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let project = created.project.unwrap();
        assert_eq!(project.my_role, pp::ProjectRole::Owner as i32);
        assert_eq!(project.version, 1);
        assert_eq!(project.owner_id, ada_id);
        let settings: Value = serde_json::from_str(&project.settings_json).unwrap();
        assert_eq!(settings["region"], "eu");
        let id = created.project_id.clone();

        // A user's token acts for that user only.
        let e = p
            .call::<_, pp::GetProjectResponse>(
                Some(&ada),
                &[],
                "GetProject",
                pp::GetProjectRequest {
                    user_id: bob_id.clone(),
                    project_id: id.clone(),
                },
            )
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
        // A stranger does not see the project.
        let e = p
            .call::<_, pp::GetProjectResponse>(
                Some(&bob),
                &[],
                "GetProject",
                pp::GetProjectRequest {
                    project_id: id.clone(),
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);
        assert_eq!(details(&e).0, "NOT_FOUND");

        let shared: pp::ShareProjectResponse = p
            .call(
                Some(&ada),
                &[],
                "ShareProject",
                pp::ShareProjectRequest {
                    project_id: id.clone(),
                    grantee: "bob@example.com".into(),
                    role: pp::ProjectRole::Viewer as i32,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert!(shared
            .members
            .iter()
            .any(|m| m.user_id == bob_id && m.role == pp::ProjectRole::Viewer as i32));
        let perms: pp::GetProjectPermissionsResponse = p
            .call(
                Some(&bob),
                &[],
                "GetProjectPermissions",
                pp::GetProjectPermissionsRequest {
                    project_id: id.clone(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(perms.my_role, pp::ProjectRole::Viewer as i32);
        assert!(perms.can_read && !perms.can_write && !perms.can_share && !perms.can_delete);

        // A service token acts for the user it names, with the permissions it forwards.
        let as_bob = [("sdsim-user-permissions", "project:read,project:write")];
        let got: pp::GetProjectResponse = p
            .call(
                Some(SERVICE_TOKEN),
                &as_bob,
                "GetProject",
                pp::GetProjectRequest {
                    user_id: bob_id.clone(),
                    project_id: id.clone(),
                },
            )
            .await
            .unwrap();
        assert_eq!(got.project.unwrap().my_role, pp::ProjectRole::Viewer as i32);
        let e = p
            .call::<_, pp::GetProjectResponse>(
                Some(SERVICE_TOKEN),
                &as_bob,
                "GetProject",
                pp::GetProjectRequest {
                    project_id: id.clone(),
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert_eq!(details(&e).1[0].0, "user_id");
        // ... and the service still enforces that user's role: a viewer cannot write.
        let e = p
            .call::<_, pp::UpdateProjectResponse>(
                Some(SERVICE_TOKEN),
                &as_bob,
                "UpdateProject",
                pp::UpdateProjectRequest {
                    user_id: bob_id.clone(),
                    project_id: id.clone(),
                    name: Some("Mine now".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");

        // A bad design: every problem, by path, in the details.
        let e = p
            .call::<_, pp::UpdateProjectResponse>(
                Some(&ada),
                &[],
                "UpdateProject",
                pp::UpdateProjectRequest {
                    project_id: id.clone(),
                    design_json: Some(
                        r#"{"version":1,"components":[{"id":"a","kind":"service","instances":0}]}"#
                            .into(),
                    ),
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        let (reason, fields) = details(&e);
        assert_eq!(reason, "INVALID_DESIGN");
        assert!(
            fields.iter().all(|(path, _)| path.starts_with('$')),
            "{fields:?}"
        );
        assert!(!fields.is_empty());
        let v: ps::ValidateConfigurationResponse = s
            .call(
                Some(&ada),
                &[],
                "ValidateConfiguration",
                ps::ValidateConfigurationRequest {
                    design_json:
                        r#"{"version":1,"components":[{"id":"a","kind":"service","instances":0}]}"#
                            .into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert!(!v.valid);
        assert_eq!(v.problems.len(), fields.len());
        // Optimistic concurrency and versions.
        let updated: pp::UpdateProjectResponse = p
            .call(
                Some(&ada),
                &[],
                "UpdateProject",
                pp::UpdateProjectRequest {
                    project_id: id.clone(),
                    expected_version: 1,
                    description: Some("short links".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(updated.project.unwrap().version, 2);
        let e = p
            .call::<_, pp::UpdateProjectResponse>(
                Some(&ada),
                &[],
                "UpdateProject",
                pp::UpdateProjectRequest {
                    project_id: id.clone(),
                    expected_version: 1,
                    description: Some("stale".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert_eq!(details(&e).0, "CONFLICT");
        let versions: pp::ListVersionsResponse = p
            .call(
                Some(&bob),
                &[],
                "ListVersions",
                pp::ListVersionsRequest {
                    project_id: id.clone(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(versions.versions.len(), 2);
        assert!(versions.versions[0].summary_json.contains("description"));
        let rolled: pp::UpdateProjectResponse = p
            .call(
                Some(&ada),
                &[],
                "RollbackProject",
                pp::RollbackProjectRequest {
                    project_id: id.clone(),
                    version: 1,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let rolled = rolled.project.unwrap();
        assert_eq!((rolled.version, rolled.description.as_str()), (3, ""));
        let doc: pp::ExportProjectResponse = p
            .call(
                Some(&ada),
                &[],
                "ExportProject",
                pp::ExportProjectRequest {
                    project_id: id.clone(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let copy: pp::GetProjectResponse = p
            .call(
                Some(&bob),
                &[],
                "ImportProject",
                pp::ImportProjectRequest {
                    document_json: doc.document_json,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let copy = copy.project.unwrap();
        assert_eq!(
            (copy.owner_id.as_str(), copy.name.as_str()),
            (bob_id.as_str(), "Links")
        );
        let list: pp::ListProjectsResponse = p
            .call(
                Some(&bob),
                &[],
                "ListProjects",
                pp::ListProjectsRequest {
                    page_size: 1,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!((list.total, list.projects.len()), (2, 1));
        assert_eq!(list.next_page_token, "2");
        let page2: pp::ListProjectsResponse = p
            .call(
                Some(&bob),
                &[],
                "ListProjects",
                pp::ListProjectsRequest {
                    page_size: 1,
                    page_token: "2".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(page2.projects.len(), 1);
        assert!(page2.next_page_token.is_empty());
        assert_ne!(page2.projects[0].id, list.projects[0].id);
        let mine: pp::ListProjectsResponse = p
            .call(
                Some(&bob),
                &[],
                "ListProjects",
                pp::ListProjectsRequest {
                    min_role: pp::ProjectRole::Owner as i32,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(mine.projects.len(), 1);
        let user_template: pp::GetTemplateResponse = p
            .call(
                Some(&ada),
                &[],
                "CreateTemplate",
                pp::CreateTemplateRequest {
                    name: "My links".into(),
                    design_json: rolled.design_json.clone(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(user_template.template.unwrap().kind, "user");

        // A viewer may not start a run; the owner may, and watches it live.
        let e = s
            .call::<_, ps::StartSimulationResponse>(
                Some(&bob),
                &[],
                "StartSimulation",
                ps::StartSimulationRequest {
                    project_id: id.clone(),
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
        let started: ps::StartSimulationResponse = s
            .call(
                Some(&ada),
                &[],
                "StartSimulation",
                ps::StartSimulationRequest {
                    project_id: id.clone(),
                    duration_s: Some(30.0),
                    seed: Some(3),
                    // 2 s of wall time: the live stream below must attach before the end.
                    speed: Some(15.0),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let run = started.simulation.unwrap();
        assert_eq!(
            run.websocket_channel,
            format!("simulation:data:{}", started.simulation_id)
        );
        assert_eq!((run.seed, run.duration_s), (3, 30.0));
        let sid = started.simulation_id.clone();
        let mut stream = s.live(&bob, &sid).await;
        let mut points = Vec::new();
        while let Some(m) = stream.message().await.unwrap() {
            points.push(m);
        }
        assert!(points.len() >= 3, "{points:?}");
        let last = points.last().unwrap();
        assert_eq!(last.state, ps::RunState::Completed as i32);
        let lp = last.point.as_ref().unwrap();
        assert_eq!(lp.progress, 1.0);
        assert!(lp.completed > 0 && lp.events > 0);
        assert!(lp.components.iter().any(|c| c.utilization > 0.0), "{lp:?}");
        assert!(points
            .windows(2)
            .all(|w| w[0].point.as_ref().unwrap().t_s <= w[1].point.as_ref().unwrap().t_s));
        assert!(points[..points.len() - 1]
            .iter()
            .all(|m| m.state == ps::RunState::Running as i32));
        assert!(points
            .iter()
            .any(|m| m.point.as_ref().unwrap().throughput_per_s > 0.0));

        // Results, analysis and history, read by the viewer.
        // Recorded once the analysis (a re-run of the design) is done: up to 60 s on a busy
        // machine.
        let mut results: Option<ps::GetSimulationResultsResponse> = None;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            match s
                .call(
                    Some(&bob),
                    &[],
                    "GetSimulationResults",
                    ps::GetSimulationResultsRequest {
                        simulation_id: sid.clone(),
                        ..Default::default()
                    },
                )
                .await
            {
                Ok(r) => {
                    results = Some(r);
                    break;
                }
                Err(e) if e.code() == tonic::Code::FailedPrecondition => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await
                }
                Err(e) => panic!("{e:?}"),
            }
        }
        let results = results.expect("results once the run is recorded");
        assert_eq!(results.state, ps::RunState::Completed as i32);
        assert!(results.completed > 0 && results.requests >= results.completed);
        let e2e = results.end_to_end.unwrap();
        assert!(e2e.p99_ms >= e2e.p50_ms && e2e.max_ms >= e2e.p99_ms && e2e.p50_ms > 0.0);
        assert!(!results.components.is_empty());
        let report: Value = serde_json::from_str(&results.report_json).unwrap();
        assert_eq!(
            report["end_to_end"]["completed"].as_u64(),
            Some(results.completed)
        );
        let analysis: ps::GetPerformanceAnalysisResponse = s
            .call(
                Some(&bob),
                &[],
                "GetPerformanceAnalysis",
                ps::GetPerformanceAnalysisRequest {
                    simulation_id: sid.clone(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let findings: Value = serde_json::from_str(&analysis.analysis_json).unwrap();
        assert!(findings.is_array());
        let history: ps::GetSimulationHistoryResponse = s
            .call(
                Some(&bob),
                &[],
                "GetSimulationHistory",
                ps::GetSimulationHistoryRequest {
                    project_id: id.clone(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(history.runs.len(), 1);
        assert_eq!(history.runs[0].simulation_id, sid);
        let status: ps::GetSimulationStatusResponse = s
            .call(
                Some(&ada),
                &[],
                "GetSimulationStatus",
                ps::GetSimulationStatusRequest {
                    simulation_id: sid.clone(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert!(status.finished_at >= status.started_at && status.started_at > 0);
        let e = s
            .call::<_, ps::StopSimulationResponse>(
                Some(&ada),
                &[],
                "StopSimulation",
                ps::StopSimulationRequest {
                    simulation_id: sid.clone(),
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");

        // A live stream of a run that has ended answers with its state at once.
        let mut ended = s.live(&ada, &sid).await;
        let only = ended.message().await.unwrap().unwrap();
        assert_eq!(only.state, ps::RunState::Completed as i32);
        assert!(ended.message().await.unwrap().is_none());

        let h: ps::HealthCheckResponse = s
            .call(None, &[], "HealthCheck", ps::HealthCheckRequest {})
            .await
            .unwrap();
        assert_eq!((h.status.as_str(), h.queued, h.running), ("SERVING", 0, 0));
        let h: pp::HealthCheckResponse = p
            .call(None, &[], "HealthCheck", pp::HealthCheckRequest {})
            .await
            .unwrap();
        assert_eq!(h.dependencies["storage"], "up");
        let deleted: pp::DeleteProjectResponse = p
            .call(
                Some(&ada),
                &[],
                "DeleteProject",
                pp::DeleteProjectRequest {
                    project_id: id.clone(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert!(deleted.deleted);
    });
    stop(server);
}
