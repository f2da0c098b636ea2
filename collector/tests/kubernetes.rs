//! The Kubernetes source against a server implementing the kubelet's pod-resources v1 API (the
//! vendored proto) on a unix socket, as the kubelet serves it; no kubelet can run here.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use footprint_collector::source::Source;
use footprint_collector::sources::kubernetes::KubernetesConfig;
use footprint_core::UnixNanos;
use footprint_proto::kubelet_podresources_v1::pod_resources_lister_server::{
    PodResourcesLister, PodResourcesListerServer,
};
use footprint_proto::kubelet_podresources_v1::{
    AllocatableResourcesRequest, AllocatableResourcesResponse, ContainerDevices,
    ContainerResources, ListPodResourcesRequest, ListPodResourcesResponse, PodResources,
};
use tonic::{Request, Response, Status};

/// An allocation as (job, GPUs, CPUs, start, end).
type Held = (String, Vec<String>, Vec<u32>, i64, i64);

#[derive(Clone, Default)]
struct Kubelet {
    pods: Arc<Mutex<Vec<PodResources>>>,
}

#[tonic::async_trait]
impl PodResourcesLister for Kubelet {
    async fn list(
        &self,
        _: Request<ListPodResourcesRequest>,
    ) -> Result<Response<ListPodResourcesResponse>, Status> {
        Ok(Response::new(ListPodResourcesResponse {
            pod_resources: self.pods.lock().unwrap().clone(),
        }))
    }

    async fn get_allocatable_resources(
        &self,
        _: Request<AllocatableResourcesRequest>,
    ) -> Result<Response<AllocatableResourcesResponse>, Status> {
        Err(Status::unimplemented("not used"))
    }
}

fn pod(namespace: &str, name: &str, containers: Vec<ContainerResources>) -> PodResources {
    PodResources {
        name: name.into(),
        namespace: namespace.into(),
        containers,
    }
}

fn container(resource: &str, devices: &[&str], cpus: &[i64]) -> ContainerResources {
    ContainerResources {
        name: "main".into(),
        devices: vec![ContainerDevices {
            resource_name: resource.into(),
            device_ids: devices.iter().map(|d| (*d).to_owned()).collect(),
            topology: None,
        }],
        cpu_ids: cpus.to_vec(),
        memory: vec![],
    }
}

fn serve(socket: &std::path::Path, kubelet: Kubelet) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::UnixListener::bind(socket).unwrap();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(PodResourcesListerServer::new(kubelet))
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
            .await
            .unwrap();
    })
}

#[tokio::test]
async fn pods_holding_gpus_and_cpus_are_jobs_while_listed() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("kubelet.sock");
    let config: KubernetesConfig = toml::from_str(&format!(
        "socket = {socket:?}\n[gpu_devices]\n\"GPU-bbbb\" = \"gpu1\"\n"
    ))
    .unwrap();
    let mut source = config.build();

    // No kubelet yet: a clear error, and nothing reported.
    let error = source.sample(UnixNanos(1_000)).await.unwrap_err();
    assert!(error.contains("kubelet.sock"), "{error}");

    let kubelet = Kubelet::default();
    *kubelet.pods.lock().unwrap() = vec![
        pod(
            "ml",
            "trainer-0",
            vec![container("nvidia.com/gpu", &["GPU-aaaa", "GPU-bbbb"], &[])],
        ),
        pod(
            "serving",
            "llm-7f9",
            vec![container("example.com/nic", &["eth1"], &[4, 5])],
        ),
        pod("kube-system", "coredns", vec![container("cpu", &[], &[])]),
    ];
    let _server = serve(&socket, kubelet.clone());

    let first = source.sample(UnixNanos(2_000)).await.unwrap();
    let held: Vec<Held> = first
        .allocations
        .iter()
        .map(|a| {
            (
                a.job.as_ref().unwrap().id.clone(),
                a.gpus.clone(),
                a.cpus.clone(),
                a.start_ns,
                a.end_ns,
            )
        })
        .collect();
    assert_eq!(
        held,
        [
            (
                "pod:ml/trainer-0".into(),
                vec!["GPU-aaaa".into(), "gpu1".into()],
                vec![],
                2_000,
                0
            ),
            ("pod:serving/llm-7f9".into(), vec![], vec![4, 5], 2_000, 0)
        ]
    );
    let job = first.allocations[0].job.as_ref().unwrap();
    assert_eq!(
        (job.scheduler.as_str(), job.project.as_str()),
        ("kubernetes", "ml")
    );

    assert!(
        source
            .sample(UnixNanos(3_000))
            .await
            .unwrap()
            .allocations
            .is_empty()
    );

    // The trainer finishes.
    kubelet.pods.lock().unwrap().remove(0);
    let ended = source.sample(UnixNanos(4_000)).await.unwrap();
    assert_eq!(ended.allocations.len(), 1);
    assert_eq!(
        ended.allocations[0].job.as_ref().unwrap().id,
        "pod:ml/trainer-0"
    );
    assert_eq!(
        (ended.allocations[0].start_ns, ended.allocations[0].end_ns),
        (2_000, 4_000)
    );
}
