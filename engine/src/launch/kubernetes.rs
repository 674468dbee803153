//! A pod's place in a Kubernetes Indexed Job: its index (`JOB_COMPLETION_INDEX`, set
//! by the Job controller) and its peers' addresses. Pods of an Indexed Job are named
//! `<job>-<index>` (their hostname), and with the pod template's `subdomain` set to a
//! headless Service each is reachable as `<job>-<index>.<service>`
//! (deploy/kubernetes/).

use super::{number, required, Env, Role};
use crate::error::{Error, Result};

/// This pod's index and every pod's `host:port`: `processes` pods behind `service`.
pub fn role(env: Env, processes: usize, service: &str, port: u16) -> Result<Role> {
    let process = number(env, "JOB_COMPLETION_INDEX")?;
    if process >= processes {
        return Err(Error::setting(
            "JOB_COMPLETION_INDEX",
            format!("{process} is not below --processes {processes} (the Job's completions)"),
        ));
    }
    let hostname = required(env, "HOSTNAME")?;
    let job =
        hostname
            .strip_suffix(&format!("-{process}"))
            .ok_or_else(|| {
                Error::setting(
            "HOSTNAME",
            format!("`{hostname}` is not `<job>-{process}`: is this pod part of an Indexed Job?"),
        )
            })?;
    if service.is_empty() {
        return Err(Error::setting(
            "--service",
            "name the headless Service of the Job's pods",
        ));
    }
    let addresses = (0..processes)
        .map(|i| format!("{job}-{i}.{service}:{port}"))
        .collect();
    Ok(Role { process, addresses })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_finds_its_peers_through_the_headless_service() {
        let env = |k: &str| match k {
            "JOB_COMPLETION_INDEX" => Some("1".to_string()),
            "HOSTNAME" => Some("curate-1m-1".to_string()),
            _ => None,
        };
        let role = role(&env, 3, "synpref", 7100).unwrap();
        assert_eq!(role.process, 1);
        assert_eq!(
            role.addresses,
            [
                "curate-1m-0.synpref:7100",
                "curate-1m-1.synpref:7100",
                "curate-1m-2.synpref:7100"
            ]
        );
        let e = super::role(&env, 1, "synpref", 7100).unwrap_err();
        assert!(e.to_string().contains("JOB_COMPLETION_INDEX"), "{e}");
        let no_index = |k: &str| (k == "HOSTNAME").then(|| "x-0".to_string());
        assert!(super::role(&no_index, 2, "s", 1)
            .unwrap_err()
            .to_string()
            .contains("JOB_COMPLETION_INDEX"));
    }
}
