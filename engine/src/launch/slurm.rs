//! A Slurm task's place in its job step: its index (`SLURM_PROCID`), the step's nodes
//! (`SLURM_STEP_NODELIST`, else `SLURM_JOB_NODELIST`, in Slurm's compressed form, e.g.
//! `node[01-04,07]`) and the tasks on each node (`SLURM_STEP_TASKS_PER_NODE`, else
//! `SLURM_TASKS_PER_NODE`, e.g. `2(x3),1`). Tasks are numbered node by node, as Slurm's
//! default block distribution places them (`srun --distribution=block`); a task's port
//! is the base port plus its index on its node.

use super::{number, required, Env, Role};
use crate::error::{Error, Result};

/// Expands a compressed host list as `scontrol show hostnames` does:
/// `node[01-03,07],gpu[1-2]-ib,login` → node01, node02, node03, node07, gpu1-ib,
/// gpu2-ib, login. Ranges keep their zero padding; several bracket groups in one name
/// expand left to right (`r[1-2]n[1-2]` → r1n1, r1n2, r2n1, r2n2).
pub fn expand_hostlist(list: &str) -> Result<Vec<String>> {
    let bad = |why: &str| Error::setting("SLURM_JOB_NODELIST", format!("`{list}`: {why}"));
    let mut hosts = Vec::new();
    // Split at commas outside brackets.
    let (mut depth, mut start) = (0i32, 0usize);
    let mut names = Vec::new();
    for (i, c) in list.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ',' if depth == 0 => {
                names.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err(bad("brackets do not match"));
        }
    }
    if depth != 0 {
        return Err(bad("brackets do not match"));
    }
    names.push(&list[start..]);
    for name in names.into_iter().map(str::trim) {
        if name.is_empty() {
            return Err(bad("an empty host name"));
        }
        let mut expanded = vec![String::new()];
        let mut rest = name;
        while let Some(open) = rest.find('[') {
            let close = rest[open..]
                .find(']')
                .map(|c| open + c)
                .ok_or_else(|| bad("`[` without `]`"))?;
            let prefix = &rest[..open];
            let values = expand_ranges(&rest[open + 1..close], &bad)?;
            expanded = expanded
                .iter()
                .flat_map(|head| values.iter().map(move |v| format!("{head}{prefix}{v}")))
                .collect();
            rest = &rest[close + 1..];
        }
        hosts.extend(expanded.into_iter().map(|h| h + rest));
    }
    Ok(hosts)
}

/// `01-04,07` → 01, 02, 03, 04, 07 (the width of a range's first bound is kept); `bad`
/// turns a reason into the host list's setting error.
fn expand_ranges(ranges: &str, bad: &dyn Fn(&str) -> Error) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for part in ranges.split(',').map(str::trim) {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let parse = |s: &str| {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                Err(bad(&format!(
                    "`{part}` is not a number or a range of numbers"
                )))
            } else {
                s.parse::<u64>().map_err(|e| bad(&format!("`{part}`: {e}")))
            }
        };
        let (a, b) = (parse(lo)?, parse(hi)?);
        if b < a {
            return Err(bad(&format!("the range `{part}` runs backwards")));
        }
        if b - a > 1_000_000 {
            return Err(bad(&format!("the range `{part}` is implausibly long")));
        }
        out.extend((a..=b).map(|v| format!("{v:0width$}", width = lo.len())));
    }
    Ok(out)
}

/// `2(x3),1` → [2, 2, 2, 1]: the tasks on each node of the step, in node order.
pub fn expand_tasks_per_node(spec: &str) -> Result<Vec<usize>> {
    let bad = |why: String| Error::setting("SLURM_TASKS_PER_NODE", format!("`{spec}`: {why}"));
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim) {
        let (tasks, repeat) = match part.split_once("(x") {
            Some((t, r)) => (
                t,
                r.strip_suffix(')')
                    .ok_or_else(|| bad(format!("`{part}`")))?,
            ),
            None => (part, "1"),
        };
        let tasks: usize = tasks.parse().map_err(|_| bad(format!("`{part}`")))?;
        let repeat: usize = repeat.parse().map_err(|_| bad(format!("`{part}`")))?;
        out.extend(std::iter::repeat_n(tasks, repeat));
    }
    Ok(out)
}

/// This task's index and every task's `host:port`, from Slurm's environment.
pub fn role(env: Env, base_port: u16) -> Result<Role> {
    let process = number(env, "SLURM_PROCID")?;
    let tasks = env("SLURM_STEP_NUM_TASKS")
        .map(|_| number(env, "SLURM_STEP_NUM_TASKS"))
        .unwrap_or_else(|| number(env, "SLURM_NTASKS"))?;
    let nodes = match env("SLURM_STEP_NODELIST") {
        Some(l) if !l.trim().is_empty() => expand_hostlist(&l)?,
        _ => expand_hostlist(&required(env, "SLURM_JOB_NODELIST")?)?,
    };
    let per_node = match env("SLURM_STEP_TASKS_PER_NODE").or_else(|| env("SLURM_TASKS_PER_NODE")) {
        Some(s) if !s.trim().is_empty() => expand_tasks_per_node(&s)?,
        _ => vec![1; nodes.len()],
    };
    if per_node.len() != nodes.len() {
        return Err(Error::setting(
            "SLURM_TASKS_PER_NODE",
            format!(
                "names {} nodes where the node list has {}",
                per_node.len(),
                nodes.len()
            ),
        ));
    }
    let mut addresses = Vec::with_capacity(tasks);
    for (node, &n) in nodes.iter().zip(&per_node) {
        for local in 0..n {
            let port = base_port as usize + local;
            let port = u16::try_from(port)
                .map_err(|_| Error::setting("--port", "too high for the tasks per node"))?;
            addresses.push(format!("{node}:{port}"));
        }
    }
    if addresses.len() != tasks {
        return Err(Error::setting(
            "SLURM_NTASKS",
            format!(
                "{tasks} tasks, but the nodes' task counts add up to {}",
                addresses.len()
            ),
        ));
    }
    if process >= tasks {
        return Err(Error::setting(
            "SLURM_PROCID",
            format!("{process} is not below the {tasks} tasks"),
        ));
    }
    Ok(Role { process, addresses })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn compressed_node_lists_expand_as_scontrol_show_hostnames_does() {
        let cases: [(&str, &[&str]); 6] = [
            (
                "node[01-04,07]",
                &["node01", "node02", "node03", "node04", "node07"],
            ),
            ("login", &["login"]),
            ("a1,b[8-10]", &["a1", "b8", "b9", "b10"]),
            (
                "gpu[1-2]-ib,cpu[009-011]",
                &["gpu1-ib", "gpu2-ib", "cpu009", "cpu010", "cpu011"],
            ),
            ("r[1-2]n[1-2]", &["r1n1", "r1n2", "r2n1", "r2n2"]),
            ("n[0]", &["n0"]),
        ];
        for (list, want) in cases {
            assert_eq!(expand_hostlist(list).unwrap(), want, "{list}");
        }
        for bad in ["node[01-04", "node]", "n[4-2]", "n[a-b]", "a,,b", "n[1-]"] {
            let e = expand_hostlist(bad).unwrap_err();
            assert!(e.to_string().contains(bad), "{bad}: {e}");
            assert_eq!(e.exit_code(), 2);
        }
    }

    #[test]
    fn tasks_per_node_expand_with_their_repeat_counts() {
        assert_eq!(expand_tasks_per_node("2(x3),1").unwrap(), vec![2, 2, 2, 1]);
        assert_eq!(expand_tasks_per_node("1").unwrap(), vec![1]);
        assert!(expand_tasks_per_node("2(x").is_err());
    }

    fn env_of(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_task_finds_every_peer_from_slurms_environment() {
        let vars = env_of(&[
            ("SLURM_PROCID", "3"),
            ("SLURM_NTASKS", "5"),
            ("SLURM_JOB_NODELIST", "node[01-02,07]"),
            ("SLURM_TASKS_PER_NODE", "2(x2),1"),
        ]);
        let role = role(&|k| vars.get(k).cloned(), 7100).unwrap();
        assert_eq!(role.process, 3);
        assert_eq!(
            role.addresses,
            [
                "node01:7100",
                "node01:7101",
                "node02:7100",
                "node02:7101",
                "node07:7100"
            ]
        );
        // One task per node when the step does not say.
        let vars = env_of(&[
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "2"),
            ("SLURM_JOB_NODELIST", "c[1-2]"),
        ]);
        assert_eq!(role_of(&vars).addresses, ["c1:7100", "c2:7100"]);
    }

    fn role_of(vars: &HashMap<String, String>) -> Role {
        role(&|k| vars.get(k).cloned(), 7100).unwrap()
    }

    #[test]
    fn a_missing_or_inconsistent_slurm_variable_is_named() {
        let vars = env_of(&[("SLURM_NTASKS", "2"), ("SLURM_JOB_NODELIST", "c[1-2]")]);
        let e = role(&|k| vars.get(k).cloned(), 7100).unwrap_err();
        assert!(e.to_string().contains("SLURM_PROCID"), "{e}");
        let vars = env_of(&[
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "3"),
            ("SLURM_JOB_NODELIST", "c[1-2]"),
        ]);
        let e = role(&|k| vars.get(k).cloned(), 7100).unwrap_err();
        assert!(e.to_string().contains("SLURM_NTASKS"), "{e}");
    }
}
