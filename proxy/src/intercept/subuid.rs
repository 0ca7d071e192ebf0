//! The subordinate uids of the intercepted users (`/etc/subuid`, shadow's
//! format: `user:start:count` or `uid:start:count`, one per line). With the
//! setuid `newuidmap` a user may map them into a user namespace and run
//! processes as them; the kernel sees those processes under the
//! subordinate uids, so interception selected by uid must cover them too.

use std::path::Path;

use super::settings::UidRange;

/// Where shadow keeps the subordinate uid ranges.
pub const SUBUID: &str = "/etc/subuid";

/// The ranges of `text` (an `/etc/subuid`) that belong to one of `users`,
/// each given by uid and, when it has one, name. Comments, blank and
/// malformed lines are skipped.
pub fn ranges_for(text: &str, users: &[(u32, Option<String>)]) -> Vec<UidRange> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                return None;
            }
            let mut f = line.split(':');
            let (owner, start, count) = (f.next()?, f.next()?, f.next()?);
            let range = UidRange {
                start: start.trim().parse().ok()?,
                count: count.trim().parse().ok()?,
            };
            let owner = owner.trim();
            let ours = users.iter().any(|(uid, name)| {
                owner.parse::<u32>().ok() == Some(*uid) || name.as_deref() == Some(owner)
            });
            (ours && range.count > 0).then_some(range)
        })
        .collect()
}

/// [`ranges_for`] over the file at `path`; none when it does not exist.
pub fn read_ranges(path: &Path, uids: &[u32]) -> std::io::Result<Vec<UidRange>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let users: Vec<(u32, Option<String>)> = uids
        .iter()
        .map(|&uid| {
            let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                .ok()
                .flatten()
                .map(|u| u.name);
            (uid, name)
        })
        .collect();
    Ok(ranges_for(&text, &users))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_of_the_users_by_name_or_uid() {
        let text = "# shadow\nrunner:100000:65536\nother:165536:65536\n1001:231072:65536\n\
                    broken\nrunner:x:1\nrunner:300000:0\n  runner : 400000 : 10 \n";
        let users = vec![(1000, Some("runner".to_string())), (1001, None)];
        assert_eq!(
            ranges_for(text, &users),
            vec![
                UidRange {
                    start: 100000,
                    count: 65536
                },
                UidRange {
                    start: 231072,
                    count: 65536
                },
                UidRange {
                    start: 400000,
                    count: 10
                },
            ]
        );
        assert_eq!(ranges_for(text, &[(5, None)]), vec![]);
    }

    #[test]
    fn a_missing_file_means_no_ranges() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            read_ranges(&dir.path().join("subuid"), &[1000]).expect("read"),
            vec![]
        );
    }
}
