//! Looking up the user the child runs as (`--user USER[:GROUP]`).

use std::ffi::CString;
use std::path::PathBuf;

use nix::unistd::{getgrouplist, Gid, Group, Uid, User};

use super::child::Credentials;
use crate::error::{Error, ErrorKind, Result};

/// The user (and group) the child will run as, with what its environment
/// needs to know about it.
#[derive(Debug, Clone)]
pub struct TargetUser {
    /// uid, gid and supplementary groups.
    pub credentials: Credentials,
    /// The login name (or the numeric uid when there is no passwd entry).
    pub name: String,
    /// The home directory (`/` when there is no passwd entry).
    pub home: PathBuf,
}

fn os_err(what: &str, e: nix::Error) -> Error {
    Error::new(ErrorKind::Os, format!("{what}: {e}"))
}

/// Resolve `USER[:GROUP]`, each a name or a number.
pub fn lookup_user(spec: &str) -> Result<TargetUser> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user_part.is_empty() || group_part == Some("") {
        return Err(Error::usage(format!(
            "--user '{spec}': expected USER or USER:GROUP"
        )));
    }
    let entry = match user_part.parse::<u32>() {
        Ok(uid) => User::from_uid(Uid::from_raw(uid))
            .map_err(|e| os_err("cannot read the user database", e))?,
        Err(_) => {
            User::from_name(user_part).map_err(|e| os_err("cannot read the user database", e))?
        }
    };
    let (uid, primary_gid, name, home) = match (&entry, user_part.parse::<u32>()) {
        (Some(u), _) => (u.uid, u.gid, u.name.clone(), u.dir.clone()),
        (None, Ok(raw)) => (
            Uid::from_raw(raw),
            Gid::from_raw(raw),
            raw.to_string(),
            PathBuf::from("/"),
        ),
        (None, Err(_)) => return Err(Error::usage(format!("--user: no such user '{user_part}'"))),
    };
    let gid = match group_part {
        None => primary_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(raw) => Gid::from_raw(raw),
            Err(_) => Group::from_name(g)
                .map_err(|e| os_err("cannot read the group database", e))?
                .map(|grp| grp.gid)
                .ok_or_else(|| Error::usage(format!("--user: no such group '{g}'")))?,
        },
    };
    let groups = match (&entry, CString::new(name.clone())) {
        (Some(_), Ok(cname)) => {
            getgrouplist(&cname, gid).map_err(|e| os_err("cannot list the user's groups", e))?
        }
        _ => vec![gid],
    };
    Ok(TargetUser {
        credentials: Credentials { uid, gid, groups },
        name,
        home,
    })
}
