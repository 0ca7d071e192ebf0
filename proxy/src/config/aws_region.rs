//! AWS region names in `aws_auth` (`allowed_regions`, and the workload
//! identity provider's `region`) and in the AWS secret sources: a near miss of an AWS region's name
//! (`us-east1`, `US-EAST-1`, `us-esat-1`) loads with a warning that names
//! the region probably meant.
//!
//! A region is judged by its shape, not by a list that goes stale when AWS
//! opens one: a partition prefix (those of the AWS SDK's partition table:
//! `us`, `eu`, `ap`, ..., `cn`, `us-gov`, `us-iso`, `us-isob`, `us-isof`,
//! `eu-isoe`, `eusc-de`), a direction and a number, as in `ap-southeast-7`.
//! Only the hint for a misspelt direction (`us-esat-1`) comes from the
//! regions of today ([`REGIONS`]); a well-shaped name that is not among them
//! (`us-east-3`) is taken as a region AWS opened since.
//!
//! A warning, never an error: `aws_auth` also signs for S3-compatible
//! services (MinIO, Ceph, Garage, R2) whose region is any name their
//! operator chose (`auto`, `garage`), so no value is certain never to work.
//! Names that are not close to an AWS region's are left alone.

/// The partition prefixes of the AWS SDK's partition table (its
/// `regionRegex`es), longest first so that `us-gov-...` is not read as `us`.
const PREFIXES: [&str; 16] = [
    "eusc-de", "us-isob", "us-isof", "eu-isoe", "us-iso", "us-gov", "us", "eu", "ap", "sa", "ca",
    "me", "af", "il", "mx", "cn",
];

/// The directions of region names, longest first (`northeast` before `north`).
const DIRECTIONS: [&str; 9] = [
    "northeast",
    "northwest",
    "southeast",
    "southwest",
    "central",
    "north",
    "south",
    "east",
    "west",
];

/// AWS's regions when this was written (the AWS SDK's partition table), for
/// hints about a misspelt direction only; see the module doc.
const REGIONS: [&str; 46] = [
    "af-south-1",
    "ap-east-1",
    "ap-east-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-south-1",
    "ap-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ap-southeast-6",
    "ap-southeast-7",
    "ca-central-1",
    "ca-west-1",
    "eu-central-1",
    "eu-central-2",
    "eu-north-1",
    "eu-south-1",
    "eu-south-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "il-central-1",
    "me-central-1",
    "me-south-1",
    "mx-central-1",
    "sa-east-1",
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "cn-north-1",
    "cn-northwest-1",
    "eusc-de-east-1",
    "us-iso-east-1",
    "us-iso-west-1",
    "us-isob-east-1",
    "us-isob-west-1",
    "eu-isoe-west-1",
    "us-isof-east-1",
    "us-isof-south-1",
    "us-gov-east-1",
    "us-gov-west-1",
];

/// True for a name of an AWS region's shape: prefix, direction, number.
pub(crate) fn is_region_shaped(name: &str) -> bool {
    let Some((head, number)) = name.rsplit_once('-') else {
        return false;
    };
    let Some((prefix, direction)) = head.rsplit_once('-') else {
        return false;
    };
    !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit())
        && DIRECTIONS.contains(&direction)
        && PREFIXES.contains(&prefix)
}

/// The region `name` was probably meant to be, when it is not a region's
/// name itself but close to one: written in capitals, with `_` or spaces for
/// `-`, a `-` left out (`us-east1`, `useast1`), or one letter off in the
/// direction (`us-esat-1`). `None` for a well-shaped name and for names not
/// close to any region (another service's own region names).
pub(crate) fn meant(name: &str) -> Option<Vec<String>> {
    if is_region_shaped(name) {
        return None;
    }
    let compact: String = name
        .chars()
        .filter(|c| !matches!(c, '-' | '_' | ' ' | '.'))
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if let Some(region) = reassemble(&compact) {
        return Some(vec![region]);
    }
    let lower = name.trim().to_ascii_lowercase();
    let close: Vec<String> = REGIONS
        .iter()
        .filter(|r| strsim::damerau_levenshtein(&lower, r) == 1)
        .map(|r| r.to_string())
        .collect();
    (!close.is_empty()).then_some(close)
}

/// `compact` (a name without separators, lowercase) read as prefix,
/// direction and number, and written as a region's name.
fn reassemble(compact: &str) -> Option<String> {
    PREFIXES.iter().find_map(|prefix| {
        let rest = compact.strip_prefix(&prefix.replace('-', ""))?;
        DIRECTIONS.iter().find_map(|direction| {
            let number = rest.strip_prefix(direction)?;
            let whole = !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit());
            whole.then(|| format!("{prefix}-{direction}-{number}"))
        })
    })
}

/// The warning for a near miss (see [`meant`]): what is wrong with `name`
/// and what was meant, then `consequence`.
pub(crate) fn warning(name: &str, consequence: &str) -> Option<String> {
    let meant = meant(name)?;
    let why = if meant.len() == 1 && name.trim().to_ascii_lowercase() == meant[0] {
        "AWS region names are lowercase"
    } else {
        "this is not the name of an AWS region (a partition, a direction and a number, as in \
         us-east-1)"
    };
    let list: Vec<String> = meant.iter().map(|r| format!("'{r}'")).collect();
    Some(format!(
        "'{name}': {why}; did you mean {}? {consequence}",
        list.join(" or ")
    ))
}

/// Why `name` cannot be the region of an AWS secret source: the region is a
/// label of the service's host name (`secretsmanager.<region>.amazonaws.com`),
/// so anything but ASCII letters, digits, `-` and `_` (a `.`, a `/`, a
/// space) would make another host, or no host; empty, it is no region at
/// all. `None` for a name a host can hold, which [`warning`] then judges
/// (`_`, which a DNS label may hold, is left to it: the spec's examples
/// write `YOUR_REGION` for the reader to fill in).
pub(crate) fn label_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some(
            "region must not be empty (leave it out for the AWS SDK's default region)".into(),
        );
    }
    let bad = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_')));
    let why = match bad {
        Some(c) => format!("it holds {c:?}"),
        None if name.len() > 63 => "it is longer than 63 characters".to_string(),
        None if name.starts_with('-') || name.ends_with('-') => {
            "it starts or ends with '-'".to_string()
        }
        None => return None,
    };
    Some(format!(
        "{name:?} is not an AWS region: the region is part of the service's host name, which \
         takes letters, digits, '-' and '_' ({why}); write a region such as us-east-1"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_region_of_today_is_region_shaped() {
        for r in REGIONS {
            assert!(is_region_shaped(r), "{r}");
            assert_eq!(meant(r), None, "{r}");
        }
        // A region AWS opens later has the same shape, and gets no hint.
        for r in [
            "us-east-3",
            "ap-southeast-9",
            "us-isof-west-1",
            "eu-isoe-north-2",
        ] {
            assert!(is_region_shaped(r), "{r}");
            assert_eq!(meant(r), None, "{r}");
        }
    }

    #[test]
    fn near_misses_name_the_region_meant() {
        for (typo, region) in [
            ("us-east1", "us-east-1"),
            ("US-EAST-1", "us-east-1"),
            ("Us-East-1", "us-east-1"),
            ("us_east_1", "us-east-1"),
            ("useast1", "us-east-1"),
            ("us east 1", "us-east-1"),
            ("apsoutheast2", "ap-southeast-2"),
            ("us-gov-west1", "us-gov-west-1"),
            ("usgovwest1", "us-gov-west-1"),
            ("us-isob-east1", "us-isob-east-1"),
            ("eusc-de-east1", "eusc-de-east-1"),
            ("cn-northwest1", "cn-northwest-1"),
            ("us-esat-1", "us-east-1"),
            ("eu-wset-2", "eu-west-2"),
            ("ap-southest-1", "ap-southeast-1"),
        ] {
            assert_eq!(meant(typo), Some(vec![region.to_string()]), "{typo}");
        }
        // One letter from two regions: both are named.
        assert_eq!(
            meant("us-est-1"),
            Some(vec!["us-east-1".to_string(), "us-west-1".to_string()])
        );
    }

    /// Other services' region names (S3-compatible stores sign with SigV4
    /// too) are not close to an AWS region's: no hint, no warning.
    #[test]
    fn names_far_from_any_region_are_left_alone() {
        for name in [
            "auto",
            "garage",
            "minio",
            "default",
            "local",
            "xx-east-1",
            "sg-central-1",
        ] {
            assert_eq!(meant(name), None, "{name}");
            assert_eq!(warning(name, "."), None, "{name}");
        }
    }

    /// A secret source's region goes into a host name: what no host label
    /// can hold is refused, whatever else it looks like.
    #[test]
    fn a_region_a_host_name_cannot_hold_is_named() {
        for name in ["us-east-1", "US-EAST-1", "auto", "us-east1", "YOUR_REGION"] {
            assert_eq!(label_problem(name), None, "{name}");
        }
        assert_eq!(
            label_problem("../../etc").as_deref(),
            Some(
                "\"../../etc\" is not an AWS region: the region is part of the service's host \
                 name, which takes letters, digits, '-' and '_' (it holds '.'); write a region \
                 such as us-east-1"
            )
        );
        for (name, why) in [
            ("us-east-1.evil.example", "it holds '.'"),
            ("us east 1", "it holds ' '"),
            ("-us-east-1", "it starts or ends with '-'"),
        ] {
            let p = label_problem(name).expect(name);
            assert!(p.contains(why), "{name}: {p}");
        }
        assert!(label_problem(&"a".repeat(64)).is_some());
        assert!(label_problem("").is_some_and(|p| p.contains("must not be empty")));
    }

    #[test]
    fn the_warning_says_what_is_wrong_and_what_was_meant() {
        assert_eq!(
            warning("US-EAST-1", "Then.").as_deref(),
            Some("'US-EAST-1': AWS region names are lowercase; did you mean 'us-east-1'? Then.")
        );
        assert_eq!(
            warning("us-east1", "Then.").as_deref(),
            Some(
                "'us-east1': this is not the name of an AWS region (a partition, a direction \
                 and a number, as in us-east-1); did you mean 'us-east-1'? Then."
            )
        );
        assert_eq!(
            warning("us-est-1", "Then.").as_deref(),
            Some(
                "'us-est-1': this is not the name of an AWS region (a partition, a direction \
                 and a number, as in us-east-1); did you mean 'us-east-1' or 'us-west-1'? Then."
            )
        );
    }
}
