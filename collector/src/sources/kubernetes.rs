//! `type = "kubernetes"`: which pod holds which GPUs and CPUs on this node, from the kubelet's
//! pod-resources API (`List`, v1) on its unix socket.
//!
//! Each pod holding a GPU (a device of one of `gpu_resources`) or exclusive CPUs (the static
//! CPU manager's `cpu_ids`) is a job `pod:<namespace>/<name>` (scheduler `kubernetes`, project =
//! namespace), holding the union of its containers' devices and CPUs from the first tick it is
//! listed to the first tick it is not. The NVIDIA device plugin names GPUs by UUID: set the nvml
//! source's `device_names = "uuid"` so both name them alike, or map ids in `gpu_devices`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use footprint_core::UnixNanos;
use footprint_core::config::Problems;
use footprint_proto::kubelet_podresources_v1::pod_resources_lister_client::PodResourcesListerClient;
use footprint_proto::kubelet_podresources_v1::{ListPodResourcesRequest, PodResources};
use footprint_proto::v1::{Job, MeterInfo};
use serde::{Deserialize, Serialize};
use tonic::transport::{Channel, Endpoint};

use crate::holdings::{Held, Holdings};
use crate::source::{BuildContext, Sample, Source, SourceSettings};

/// Pods on this Kubernetes node.
#[derive(Clone, Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// The kubelet's pod-resources socket.
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
    /// Extended resources that are GPUs.
    #[serde(default = "default_gpu_resources")]
    pub gpu_resources: Vec<String>,
    /// Device id → GPU device name, where they differ (absent ids are used as they are).
    #[serde(default)]
    pub gpu_devices: BTreeMap<String, String>,
    /// Longest wait for the kubelet's answer, ms.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_socket() -> PathBuf {
    PathBuf::from("/var/lib/kubelet/pod-resources/kubelet.sock")
}
fn default_gpu_resources() -> Vec<String> {
    vec!["nvidia.com/gpu".to_owned()]
}
fn default_timeout_ms() -> u64 {
    1_000
}

impl KubernetesConfig {
    pub fn build(&self) -> KubernetesSource {
        KubernetesSource {
            config: self.clone(),
            client: None,
            holdings: Holdings::default(),
        }
    }
}

impl SourceSettings for KubernetesConfig {
    fn meter_ids(&self) -> Vec<String> {
        Vec::new()
    }

    fn validate(&self, path: &str, problems: &mut Problems) {
        super::check_timeout_ms(problems, path, self.timeout_ms);
    }

    fn build_source(&self, _context: &BuildContext<'_>) -> Result<Box<dyn Source>, String> {
        Ok(Box::new(self.build()))
    }
}

/// The job of a pod and what its containers hold; `None` when it holds nothing this source
/// attributes (no GPU, no exclusive CPU).
pub fn pod_holding(pod: &PodResources, config: &KubernetesConfig) -> Option<Held> {
    let mut held = Held::new(Job {
        id: format!("pod:{}/{}", pod.namespace, pod.name),
        scheduler: "kubernetes".into(),
        name: pod.name.clone(),
        project: pod.namespace.clone(),
        ..Job::default()
    });
    for container in &pod.containers {
        for devices in &container.devices {
            if !config.gpu_resources.contains(&devices.resource_name) {
                continue;
            }
            for id in &devices.device_ids {
                held.gpus.insert(
                    config
                        .gpu_devices
                        .get(id)
                        .cloned()
                        .unwrap_or_else(|| id.clone()),
                );
            }
        }
        held.cpus.extend(
            container
                .cpu_ids
                .iter()
                .filter_map(|&cpu| u32::try_from(cpu).ok()),
        );
    }
    (!held.gpus.is_empty() || !held.cpus.is_empty()).then_some(held)
}

/// The running `kubernetes` source.
#[derive(Debug)]
pub struct KubernetesSource {
    config: KubernetesConfig,
    /// Connected at the first sample; dropped after a failure.
    client: Option<PodResourcesListerClient<Channel>>,
    holdings: Holdings,
}

async fn connect(socket: PathBuf) -> Result<PodResourcesListerClient<Channel>, String> {
    // The URI is required by the API but unused: every connection goes to the socket.
    let endpoint = Endpoint::try_from("http://kubelet.invalid").map_err(|e| e.to_string())?;
    let path = socket.clone();
    let channel = endpoint
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
        .map_err(|e| format!("{}: {e}", socket.display()))?;
    Ok(PodResourcesListerClient::new(channel))
}

impl KubernetesSource {
    async fn list(&mut self) -> Result<Vec<PodResources>, String> {
        if self.client.is_none() {
            self.client = Some(connect(self.config.socket.clone()).await?);
        }
        let Some(client) = self.client.as_mut() else {
            return Err("no kubelet connection".into());
        };
        client
            .list(ListPodResourcesRequest {})
            .await
            .map(|response| response.into_inner().pod_resources)
            .map_err(|status| {
                format!(
                    "{}: List: {}",
                    self.config.socket.display(),
                    status.message()
                )
            })
    }
}

#[async_trait]
impl Source for KubernetesSource {
    fn name(&self) -> &str {
        "kubernetes"
    }

    fn meters(&self) -> Vec<MeterInfo> {
        Vec::new()
    }

    async fn sample(&mut self, at: UnixNanos) -> Result<Sample, String> {
        let timeout = Duration::from_millis(self.config.timeout_ms);
        let socket = self.config.socket.display().to_string();
        // Holdings stay as they were until the kubelet answers again.
        let pods = super::within(&socket, timeout, self.list())
            .await
            .inspect_err(|_| self.client = None)?;
        let seen: BTreeMap<String, Held> = pods
            .iter()
            .filter_map(|pod| pod_holding(pod, &self.config))
            .map(|held| (held.job.id.clone(), held))
            .collect();
        Ok(Sample {
            allocations: self.holdings.update(seen, at),
            ..Sample::default()
        })
    }
}
