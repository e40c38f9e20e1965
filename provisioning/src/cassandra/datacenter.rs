//! `spec.cassandra.localDatacenter` against the datacenters the cluster reports: a name the
//! cluster does not have would silently make every node "remote" (load balancing, LOCAL_*
//! consistency), so it is refused, naming the field and the cluster's datacenters.

use std::collections::BTreeSet;

use rtdp_crds::CassandraSpec;
use scylla::client::session::Session;

use crate::ProvisionError;

/// The datacenters of the nodes the session knows, as the driver read them from
/// `system.local` and `system.peers`.
pub fn cluster_datacenters(session: &Session) -> BTreeSet<String> {
    session
        .get_cluster_state()
        .get_nodes_info()
        .iter()
        .filter_map(|node| node.datacenter.clone())
        .collect()
}

/// Whether `local` is one of `datacenters` (those of a reachable cluster). None known means
/// the cluster's metadata could not be read: a transient failure, not a verdict. Pure.
pub fn check_datacenter(local: &str, datacenters: &BTreeSet<String>) -> Result<(), ProvisionError> {
    if datacenters.contains(local) {
        return Ok(());
    }
    if datacenters.is_empty() {
        return Err(ProvisionError::cassandra(
            format!("checking spec.cassandra.localDatacenter {local:?}"),
            "the cluster reported no datacenters (its node metadata could not be read)",
        ));
    }
    Err(ProvisionError::UnknownDatacenter {
        name: local.to_string(),
        known: datacenters.iter().cloned().collect(),
    })
}

/// Checks the Pipeline's `localDatacenter` against the cluster behind `session`.
pub fn check_local_datacenter(
    session: &Session,
    spec: &CassandraSpec,
) -> Result<(), ProvisionError> {
    check_datacenter(&spec.local_datacenter, &cluster_datacenters(session))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_datacenter_of_the_cluster_passes_and_another_is_refused_naming_the_field() {
        assert!(check_datacenter("dc1", &set(&["dc1", "dc2"])).is_ok());
        let error = check_datacenter("datacenter1", &set(&["eu-west", "us-east"]))
            .expect_err("a datacenter the cluster does not have");
        assert!(error.is_permanent(), "{error:?}");
        assert_eq!(error.reason(), "UnknownDatacenter");
        assert_eq!(
            error.to_string(),
            "spec.cassandra.localDatacenter \"datacenter1\" is not a datacenter of the \
             Cassandra cluster, whose datacenters are: eu-west, us-east"
        );
        // Names are compared exactly, as Cassandra does.
        assert!(check_datacenter("DC1", &set(&["dc1"])).is_err());
    }

    #[test]
    fn no_datacenter_known_is_transient() {
        let error = check_datacenter("dc1", &BTreeSet::new()).expect_err("nothing known");
        assert!(!error.is_permanent(), "{error:?}");
        assert_eq!(error.reason(), "CassandraUnavailable");
    }
}
