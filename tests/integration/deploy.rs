//! deploy/ (issue 13): the Kubernetes manifests read as the objects docs/cluster.md
//! says they are, consistent with each other and with `synpref launch --kubernetes`;
//! the Slurm scripts are valid bash that start `synpref launch --slurm`.

use super::*;
use serde::Deserialize;
use std::collections::BTreeMap;

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Object {
    api_version: String,
    kind: String,
    metadata: Metadata,
    #[serde(default)]
    spec: serde_norway::Value,
    #[serde(default)]
    string_data: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
struct Metadata {
    #[serde(default)]
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JobSpec {
    completion_mode: String,
    completions: usize,
    parallelism: usize,
    template: PodTemplate,
}

#[derive(Deserialize)]
struct PodTemplate {
    metadata: Metadata,
    spec: PodSpec,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodSpec {
    subdomain: String,
    restart_policy: String,
    containers: Vec<Container>,
    #[serde(default)]
    volumes: Vec<Volume>,
}

#[derive(Deserialize)]
struct Container {
    command: Vec<String>,
    env: Vec<EnvVar>,
    ports: Vec<ContainerPort>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnvVar {
    name: String,
    value: Option<String>,
    value_from: Option<ValueFrom>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ValueFrom {
    secret_key_ref: SecretKeyRef,
}

#[derive(Deserialize)]
struct SecretKeyRef {
    name: String,
    key: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerPort {
    container_port: u16,
}

#[derive(Deserialize)]
struct Volume {
    secret: Option<SecretVolume>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SecretVolume {
    secret_name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServiceSpec {
    #[serde(rename = "clusterIP")]
    cluster_ip: Option<String>,
    selector: BTreeMap<String, String>,
    ports: Vec<ServicePort>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServicePort {
    port: u16,
    target_port: u16,
}

fn objects(path: &str) -> Vec<Object> {
    let text = std::fs::read_to_string(deploy(path)).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| Object::deserialize(doc).unwrap_or_else(|e| panic!("{path}: {e}")))
        .collect()
}

fn spec<T: serde::de::DeserializeOwned>(o: &Object) -> T {
    serde_norway::from_value(o.spec.clone())
        .unwrap_or_else(|e| panic!("{} {}: {e}", o.kind, o.metadata.name))
}

#[test]
fn kubernetes_manifests_are_indexed_jobs_behind_the_headless_service_launch_expects() {
    let headless = objects("kubernetes/service.yaml").remove(0);
    assert_eq!(
        (headless.api_version.as_str(), headless.kind.as_str()),
        ("v1", "Service")
    );
    let headless_spec: ServiceSpec = spec(&headless);
    assert_eq!(
        headless_spec.cluster_ip.as_deref(),
        Some("None"),
        "must be headless"
    );
    let timely_port = synpref_engine::launch::DEFAULT_PORT;
    assert!(headless_spec
        .ports
        .iter()
        .any(|p| p.port == timely_port && p.target_port == timely_port));
    let secret = objects("kubernetes/secret.yaml").remove(0);
    assert_eq!(secret.kind, "Secret");

    for file in ["kubernetes/curate-job.yaml", "kubernetes/serve-job.yaml"] {
        let objs = objects(file);
        let job = objs
            .iter()
            .find(|o| o.kind == "Job")
            .unwrap_or_else(|| panic!("{file}: no Job"));
        assert_eq!(job.api_version, "batch/v1");
        let js: JobSpec = spec(job);
        assert_eq!(js.completion_mode, "Indexed", "{file}");
        assert_eq!(
            js.completions, js.parallelism,
            "{file}: every process must run at once"
        );
        let pod = &js.template.spec;
        assert_eq!(
            pod.subdomain, headless.metadata.name,
            "{file}: peers resolve through the headless Service"
        );
        assert_eq!(pod.restart_policy, "Never");
        for (k, v) in &headless_spec.selector {
            assert_eq!(
                js.template.metadata.labels.get(k),
                Some(v),
                "{file}: the headless Service must select the pods"
            );
        }
        let c = &pod.containers[0];
        assert_eq!(
            &c.command[..4],
            ["synpref", "launch", "--kubernetes", "--"],
            "{file}"
        );
        let env = |name: &str| {
            c.env
                .iter()
                .find(|e| e.name == name)
                .and_then(|e| e.value.clone())
        };
        assert_eq!(
            env("SYNPREF_PROCESSES"),
            Some(js.completions.to_string()),
            "{file}"
        );
        assert_eq!(
            env("SYNPREF_SERVICE"),
            Some(headless.metadata.name.clone()),
            "{file}"
        );
        assert!(
            c.ports.iter().any(|p| p.container_port == timely_port),
            "{file}"
        );
        for e in c.env.iter().filter_map(|e| e.value_from.as_ref()) {
            let r = &e.secret_key_ref;
            assert!(
                r.name == secret.metadata.name && secret.string_data.contains_key(&r.key),
                "{file}: {}/{}",
                r.name,
                r.key
            );
        }
        for v in pod.volumes.iter().filter_map(|v| v.secret.as_ref()) {
            assert_eq!(v.secret_name, secret.metadata.name, "{file}");
        }
        // The launch flags and job arguments are accepted: the only complaint outside a
        // pod is the missing pod identity.
        let out = Command::new(env!("CARGO_BIN_EXE_synpref"))
            .args(&c.command[1..])
            .env("SYNPREF_PROCESSES", js.completions.to_string())
            .env("JOB_COMPLETION_INDEX", "0")
            .env_remove("HOSTNAME")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{file}: {err}");
        assert!(err.contains("HOSTNAME"), "{file}: {err}");

        if file.contains("serve") {
            let api = objs
                .iter()
                .find(|o| o.kind == "Service")
                .expect("serve's API Service");
            let api_spec: ServiceSpec = spec(api);
            assert_eq!(
                api_spec.selector.get("batch.kubernetes.io/job-name"),
                Some(&job.metadata.name)
            );
            assert_eq!(
                api_spec
                    .selector
                    .get("batch.kubernetes.io/job-completion-index")
                    .map(String::as_str),
                Some("0"),
                "only process 0 serves HTTP"
            );
            let listen = c
                .command
                .iter()
                .skip_while(|a| *a != "--listen")
                .nth(1)
                .expect("--listen");
            let port: u16 = listen.rsplit_once(':').unwrap().1.parse().unwrap();
            assert!(api_spec.ports.iter().any(|p| p.target_port == port));
            assert!(c.ports.iter().any(|p| p.container_port == port));
        }
    }
}

#[test]
fn slurm_scripts_are_valid_bash_that_start_launch_slurm_once_per_node() {
    for script in ["slurm/curate.sbatch", "slurm/serve.sbatch"] {
        let path = deploy(script);
        let st = Command::new("bash").arg("-n").arg(&path).status().unwrap();
        assert!(st.success(), "{script} is not valid bash");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("#SBATCH --ntasks-per-node=1"), "{script}");
        let srun = text
            .lines()
            .skip_while(|l| !l.starts_with("srun "))
            .take(3)
            .collect::<String>();
        assert!(srun.contains("synpref launch --slurm"), "{script}: {srun}");
    }
}
