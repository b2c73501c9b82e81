//! Value parsers of `--secret`, `--config` and `--mount`, in docker's syntax.

use std::collections::HashMap;

use shoal_proto::units;
use shoal_proto::v1::{
    BindOptions, ConfigReference, Driver, FileTarget, Mount, MountType, SecretReference,
    TmpfsOptions, VolumeOptions,
};

/// Docker's default permission bits of a secret or config file.
pub const DEFAULT_FILE_MODE: u32 = 0o444;

/// The bind propagation modes docker accepts.
const PROPAGATIONS: &[&str] = &[
    "private", "rprivate", "shared", "rshared", "slave", "rslave",
];

/// The fields common to `--secret` and `--config`.
struct FileRef {
    source: String,
    target: Option<String>,
    uid: String,
    gid: String,
    mode: u32,
}

/// Splits `k=v,k=v` (docker reads these as CSV; no field of ours holds a comma).
fn fields(s: &str) -> Vec<(&str, Option<&str>)> {
    s.split(',')
        .filter(|f| !f.trim().is_empty())
        .map(|f| match f.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (f.trim(), None),
        })
        .collect()
}

/// A numeric uid or gid, as docker requires for secret and config files.
fn numeric_id(what: &str, v: &str) -> Result<String, String> {
    v.parse::<u32>().map(|n| n.to_string()).map_err(|_| {
        format!("{what} {v:?} is not a number (secret and config files take a numeric {what})")
    })
}

/// Octal permission bits ("0440", "440").
fn octal_mode(what: &str, v: &str) -> Result<u32, String> {
    match u32::from_str_radix(v, 8) {
        Ok(m) if m <= 0o7777 => Ok(m),
        _ => Err(format!(
            "{what} {v:?} is not an octal file mode (e.g. 0440)"
        )),
    }
}

fn parse_file_ref(s: &str) -> Result<FileRef, String> {
    let mut r = FileRef {
        source: String::new(),
        target: None,
        uid: "0".into(),
        gid: "0".into(),
        mode: DEFAULT_FILE_MODE,
    };
    if !s.contains('=') {
        let name = s.trim();
        if name.is_empty() || name.contains(',') {
            return Err(format!("{s:?} is not NAME or source=NAME[,target=PATH]"));
        }
        r.source = name.to_string();
        return Ok(r);
    }
    for (k, v) in fields(s) {
        let v = v.ok_or_else(|| format!("{k:?} in {s:?} is not KEY=VALUE"))?;
        match k.to_ascii_lowercase().as_str() {
            "source" | "src" => r.source = v.to_string(),
            "target" => r.target = Some(v.to_string()),
            "uid" => r.uid = numeric_id("uid", v)?,
            "gid" => r.gid = numeric_id("gid", v)?,
            "mode" => r.mode = octal_mode("mode", v)?,
            other => {
                return Err(format!(
                    "unknown key {other:?} in {s:?} (use source, target, uid, gid and mode)"
                ))
            }
        }
    }
    if r.source.is_empty() {
        return Err(format!("{s:?} has no source=NAME"));
    }
    Ok(r)
}

/// Parses `--secret NAME` or `--secret source=NAME,target=T,uid=U,gid=G,mode=0440`: the file
/// is /run/secrets/NAME (or /run/secrets/T, or T when absolute), owned by 0:0, mode 0444.
pub fn parse_secret(s: &str) -> Result<SecretReference, String> {
    let r = parse_file_ref(s)?;
    let name = r.target.unwrap_or_else(|| r.source.clone());
    if name.is_empty() {
        return Err(format!("{s:?}: target must not be empty"));
    }
    Ok(SecretReference {
        secret_id: String::new(),
        secret_name: r.source,
        file: Some(FileTarget {
            name,
            uid: r.uid,
            gid: r.gid,
            mode: r.mode,
        }),
    })
}

/// Parses `--config NAME` or `--config source=NAME,target=/PATH,uid=,gid=,mode=`: the file is
/// /NAME unless a target is given.
pub fn parse_config(s: &str) -> Result<ConfigReference, String> {
    let r = parse_file_ref(s)?;
    let name = match r.target {
        None => format!("/{}", r.source),
        Some(t) if t.starts_with('/') => t,
        // Docker resolves a relative config target against the container's root.
        Some(t) if !t.is_empty() => format!("/{t}"),
        Some(_) => return Err(format!("{s:?}: target must not be empty")),
    };
    Ok(ConfigReference {
        config_id: String::new(),
        config_name: r.source,
        file: Some(FileTarget {
            name,
            uid: r.uid,
            gid: r.gid,
            mode: r.mode,
        }),
    })
}

/// A boolean mount option: bare (`readonly`) is true, else `true|false|1|0`.
fn mount_bool(k: &str, v: Option<&str>) -> Result<bool, String> {
    match v.map(str::to_ascii_lowercase).as_deref() {
        None | Some("true") | Some("1") => Ok(true),
        Some("false") | Some("0") => Ok(false),
        Some(other) => Err(format!("{k} takes true or false, not {other:?}")),
    }
}

/// `K=V` of `volume-opt`/`volume-label` (the value may hold further `=`).
fn key_value(k: &str, v: &str) -> Result<(String, String), String> {
    match v.split_once('=') {
        Some((a, b)) if !a.is_empty() => Ok((a.to_string(), b.to_string())),
        _ if !v.is_empty() && !v.contains('=') => Ok((v.to_string(), String::new())),
        _ => Err(format!("{k} takes KEY=VALUE, not {v:?}")),
    }
}

/// Parses `--mount type=bind|volume|tmpfs,source=,target=,readonly,...` (docker's syntax; the
/// type defaults to volume).
pub fn parse_mount(s: &str) -> Result<Mount, String> {
    let mut kind = MountType::MountVolume;
    let mut m = Mount::default();
    let mut propagation: Option<String> = None;
    let mut no_copy: Option<bool> = None;
    let mut driver: Option<String> = None;
    let mut driver_opts: HashMap<String, String> = HashMap::new();
    let mut labels: HashMap<String, String> = HashMap::new();
    let mut tmpfs_size: Option<i64> = None;
    let mut tmpfs_mode: Option<u32> = None;
    for (k, v) in fields(s) {
        let key = k.to_ascii_lowercase();
        let need = || v.ok_or_else(|| format!("{k} needs a value ({k}=...)"));
        match key.as_str() {
            "type" => {
                kind = match need()? {
                    "bind" => MountType::MountBind,
                    "volume" => MountType::MountVolume,
                    "tmpfs" => MountType::MountTmpfs,
                    other => {
                        return Err(format!(
                            "unsupported mount type {other:?} (use bind, volume or tmpfs)"
                        ))
                    }
                }
            }
            "source" | "src" => m.source = need()?.to_string(),
            "target" | "dst" | "destination" => m.target = need()?.to_string(),
            "readonly" | "ro" => m.read_only = mount_bool(k, v)?,
            "bind-propagation" => {
                let p = need()?.to_ascii_lowercase();
                if !PROPAGATIONS.contains(&p.as_str()) {
                    return Err(format!(
                        "invalid bind-propagation {p:?} (one of {})",
                        PROPAGATIONS.join(", ")
                    ));
                }
                propagation = Some(p);
            }
            "volume-nocopy" => no_copy = Some(mount_bool(k, v)?),
            "volume-driver" => driver = Some(need()?.to_string()),
            "volume-opt" => {
                let (a, b) = key_value(k, need()?)?;
                driver_opts.insert(a, b);
            }
            "volume-label" => {
                let (a, b) = key_value(k, need()?)?;
                labels.insert(a, b);
            }
            "tmpfs-size" => {
                let v = need()?;
                let n = units::parse_bytes(v)
                    .map_err(|_| format!("tmpfs-size {v:?} is not a size (e.g. 64m)"))?;
                tmpfs_size = Some(n);
            }
            "tmpfs-mode" => tmpfs_mode = Some(octal_mode("tmpfs-mode", need()?)?),
            // Docker accepts it for macOS file sharing; it means nothing on Linux.
            "consistency" => {}
            other => {
                return Err(format!(
                    "unknown mount option {other:?} (use type, source, target, readonly, \
                     bind-propagation, volume-driver, volume-opt, volume-label, volume-nocopy, \
                     tmpfs-size, tmpfs-mode)"
                ))
            }
        }
    }
    if m.target.is_empty() {
        return Err(format!("{s:?} has no target=PATH"));
    }
    if !m.target.starts_with('/') {
        return Err(format!("target {:?} must be an absolute path", m.target));
    }
    let volume_opts =
        no_copy.is_some() || driver.is_some() || !driver_opts.is_empty() || !labels.is_empty();
    let tmpfs_opts = tmpfs_size.is_some() || tmpfs_mode.is_some();
    let type_name = match kind {
        MountType::MountBind => "bind",
        MountType::MountVolume => "volume",
        MountType::MountTmpfs => "tmpfs",
    };
    if volume_opts && kind != MountType::MountVolume {
        return Err(format!(
            "cannot mix 'volume-*' options with mount type '{type_name}'"
        ));
    }
    if tmpfs_opts && kind != MountType::MountTmpfs {
        return Err(format!(
            "cannot mix 'tmpfs-*' options with mount type '{type_name}'"
        ));
    }
    if propagation.is_some() && kind != MountType::MountBind {
        return Err(format!(
            "cannot mix 'bind-*' options with mount type '{type_name}'"
        ));
    }
    match kind {
        MountType::MountBind => {
            if m.source.is_empty() {
                return Err(format!("{s:?}: a bind mount needs source=HOSTPATH"));
            }
            if !m.source.starts_with('/') && !m.source.starts_with("{{") {
                return Err(format!(
                    "bind source {:?} must be an absolute path",
                    m.source
                ));
            }
            m.bind_options = propagation.map(|p| BindOptions { propagation: p });
        }
        MountType::MountVolume => {
            if volume_opts {
                m.volume_options = Some(VolumeOptions {
                    no_copy: no_copy.unwrap_or(false),
                    labels,
                    driver_config: driver.map(|name| Driver {
                        name,
                        options: driver_opts,
                    }),
                });
            }
        }
        MountType::MountTmpfs => {
            if !m.source.is_empty() {
                return Err(format!("{s:?}: a tmpfs mount takes no source"));
            }
            if tmpfs_opts {
                m.tmpfs_options = Some(TmpfsOptions {
                    size_bytes: tmpfs_size.unwrap_or(0),
                    mode: tmpfs_mode.unwrap_or(0),
                });
            }
        }
    }
    m.r#type = kind as i32;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_short_and_long_forms() {
        let s = parse_secret("db_pass").unwrap();
        assert_eq!(s.secret_name, "db_pass");
        let f = s.file.unwrap();
        assert_eq!(
            (f.name.as_str(), f.uid.as_str(), f.gid.as_str(), f.mode),
            ("db_pass", "0", "0", 0o444)
        );
        let s = parse_secret("source=db_pass,target=pw,uid=100,gid=101,mode=0440").unwrap();
        let f = s.file.unwrap();
        assert_eq!(
            (f.name.as_str(), f.uid.as_str(), f.gid.as_str(), f.mode),
            ("pw", "100", "101", 0o440)
        );
        assert_eq!(
            parse_secret("src=a,target=/etc/pw")
                .unwrap()
                .file
                .unwrap()
                .name,
            "/etc/pw"
        );
        assert!(parse_secret("target=x").unwrap_err().contains("no source"));
        assert!(parse_secret("source=a,uid=root")
            .unwrap_err()
            .contains("not a number"));
        assert!(parse_secret("source=a,mode=999")
            .unwrap_err()
            .contains("octal"));
        assert!(parse_secret("source=a,bogus=1")
            .unwrap_err()
            .contains("unknown key"));
    }

    #[test]
    fn config_targets_default_to_the_root() {
        let c = parse_config("nginx_conf").unwrap();
        assert_eq!(c.config_name, "nginx_conf");
        assert_eq!(c.file.unwrap().name, "/nginx_conf");
        let c = parse_config("source=nginx_conf,target=/etc/nginx/nginx.conf,mode=0400").unwrap();
        let f = c.file.unwrap();
        assert_eq!(f.name, "/etc/nginx/nginx.conf");
        assert_eq!(f.mode, 0o400);
    }

    #[test]
    fn mounts_in_dockers_syntax() {
        let m = parse_mount("type=volume,source=data,target=/var/lib/data").unwrap();
        assert_eq!(m.r#type, MountType::MountVolume as i32);
        assert_eq!(
            (m.source.as_str(), m.target.as_str()),
            ("data", "/var/lib/data")
        );
        assert!(!m.read_only);
        let m = parse_mount("src=data,dst=/d,ro").unwrap();
        assert_eq!(m.r#type, MountType::MountVolume as i32);
        assert!(m.read_only);
        let m = parse_mount(
            "type=bind,source=/srv,destination=/srv,readonly=false,bind-propagation=rshared",
        )
        .unwrap();
        assert_eq!(m.r#type, MountType::MountBind as i32);
        assert!(!m.read_only);
        assert_eq!(m.bind_options.unwrap().propagation, "rshared");
        let m = parse_mount("type=tmpfs,target=/tmp,tmpfs-size=64m,tmpfs-mode=1770").unwrap();
        let t = m.tmpfs_options.unwrap();
        assert_eq!((t.size_bytes, t.mode), (64 * 1024 * 1024, 0o1770));
        let m = parse_mount(
            "type=volume,source=v,target=/v,volume-driver=local,volume-opt=type=nfs,volume-opt=o=addr=10.0.0.1,volume-label=a=b,volume-nocopy",
        )
        .unwrap();
        let v = m.volume_options.unwrap();
        assert!(v.no_copy);
        assert_eq!(v.labels["a"], "b");
        let d = v.driver_config.unwrap();
        assert_eq!(d.name, "local");
        assert_eq!(d.options["type"], "nfs");
        assert_eq!(d.options["o"], "addr=10.0.0.1");
        // An anonymous volume has no source.
        assert_eq!(parse_mount("target=/cache").unwrap().source, "");
        // A template in a bind source is expanded on the node.
        assert!(parse_mount("type=bind,src={{.Service.Name}},dst=/x").is_ok());
    }

    #[test]
    fn mount_errors_name_the_problem() {
        #[rustfmt::skip]
        let cases: &[(&str, &str)] = &[
            ("type=bind,target=/x", "a bind mount needs source=HOSTPATH"),
            ("type=bind,source=rel,target=/x", "must be an absolute path"),
            ("type=tmpfs,source=a,target=/x", "takes no source"),
            ("type=nfs,target=/x", "unsupported mount type \"nfs\""),
            ("source=a", "has no target=PATH"),
            ("source=a,target=x", "must be an absolute path"),
            ("type=bind,source=/a,target=/x,volume-nocopy", "cannot mix 'volume-*' options with mount type 'bind'"),
            ("type=volume,target=/x,tmpfs-size=1m", "cannot mix 'tmpfs-*' options with mount type 'volume'"),
            ("type=volume,target=/x,bind-propagation=shared", "cannot mix 'bind-*'"),
            ("type=bind,source=/a,target=/x,bind-propagation=weird", "invalid bind-propagation"),
            ("type=tmpfs,target=/x,tmpfs-size=lots", "tmpfs-size \"lots\" is not a size"),
            ("target=/x,readonly=maybe", "readonly takes true or false"),
            ("target=/x,colour=red", "unknown mount option \"colour\""),
        ];
        for (input, want) in cases {
            let err = parse_mount(input).unwrap_err();
            assert!(err.contains(want), "{input}: {err}");
        }
    }
}
