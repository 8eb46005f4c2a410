//! The stand-in's pod-resources server: `List` answers from the checkpoint, after an optional
//! number of `ResourceExhausted` refusals (kubelet's rate limit).

use std::{collections::BTreeMap, sync::Arc};

use device_plugin_proto::podresources::v1::{
    self as pr, pod_resources_lister_server::PodResourcesLister,
};
use tonic::{Request, Response, Status};

use super::Shared;

pub(super) struct PodResources(pub(super) Arc<Shared>);

#[tonic::async_trait]
impl PodResourcesLister for PodResources {
    async fn list(
        &self,
        _: Request<pr::ListPodResourcesRequest>,
    ) -> Result<Response<pr::ListPodResourcesResponse>, Status> {
        let mut state = self.0.lock();
        if state.rate_limited_lists > 0 {
            state.rate_limited_lists -= 1;
            return Err(Status::resource_exhausted("rejected by rate limit"));
        }
        let mut pods: BTreeMap<&str, BTreeMap<&str, Vec<pr::ContainerDevices>>> = BTreeMap::new();
        for ((pod, container, resource), (ids, _)) in &state.checkpoint {
            pods.entry(pod)
                .or_default()
                .entry(container)
                .or_default()
                .push(pr::ContainerDevices {
                    resource_name: resource.clone(),
                    device_ids: ids.clone(),
                    topology: None,
                });
        }
        let pod_resources = pods
            .into_iter()
            .map(|(pod, containers)| {
                let (namespace, name) = pod.split_once('/').unwrap_or(("default", pod));
                pr::PodResources {
                    name: name.to_owned(),
                    namespace: namespace.to_owned(),
                    containers: containers
                        .into_iter()
                        .map(|(name, devices)| pr::ContainerResources {
                            name: name.to_owned(),
                            devices,
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }
            })
            .collect();
        Ok(Response::new(pr::ListPodResourcesResponse {
            pod_resources,
        }))
    }

    async fn get_allocatable_resources(
        &self,
        _: Request<pr::AllocatableResourcesRequest>,
    ) -> Result<Response<pr::AllocatableResourcesResponse>, Status> {
        Err(Status::unimplemented("not needed by the tests"))
    }

    async fn get(
        &self,
        _: Request<pr::GetPodResourcesRequest>,
    ) -> Result<Response<pr::GetPodResourcesResponse>, Status> {
        Err(Status::unimplemented("not needed by the tests"))
    }
}
