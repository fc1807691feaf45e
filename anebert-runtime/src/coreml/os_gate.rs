//! Which OS versions the Core ML backend may run a package on. Rust binaries start on macOS 11,
//! but the backend calls `+[MLModel compileModelAtURL:completionHandler:]` and asks for
//! `MLComputeUnitsCPUAndNeuralEngine` (macOS 13 / iOS 16), and a spec-8 package needs macOS 14 /
//! iOS 17 (spec 9: macOS 15 / iOS 18). Below that a missing selector would raise an Objective-C
//! exception; the loader checks first and falls back to the CPU backend (`Backend::Auto`) or fails
//! with the reason (`Backend::CoreMl`). A pure function of the version, tested everywhere.

/// An OS version (`NSOperatingSystemVersion`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct OsVersion {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
}

impl std::fmt::Display for OsVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The Apple platform the binary runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplePlatform {
    /// macOS.
    MacOs,
    /// iOS / iPadOS.
    Ios,
}

impl ApplePlatform {
    /// The platform this binary was built for (`None` off Apple platforms).
    pub fn current() -> Option<ApplePlatform> {
        if cfg!(target_os = "macos") {
            Some(ApplePlatform::MacOs)
        } else if cfg!(target_vendor = "apple") {
            Some(ApplePlatform::Ios)
        } else {
            None
        }
    }

    fn name(self) -> &'static str {
        match self {
            ApplePlatform::MacOs => "macOS",
            ApplePlatform::Ios => "iOS",
        }
    }
}

/// The oldest OS on which the backend runs a package of specification version `spec`.
pub fn min_os(platform: ApplePlatform, spec: i32) -> OsVersion {
    // (macOS, iOS) majors: the backend's own calls need 13 / 16; spec 8 needs 14 / 17; spec 9
    // (multifunction, iOS18 opsets) needs 15 / 18.
    let (mac, ios) = match spec {
        i32::MIN..=7 => (13, 16),
        8 => (14, 17),
        _ => (15, 18),
    };
    OsVersion {
        major: match platform {
            ApplePlatform::MacOs => mac,
            ApplePlatform::Ios => ios,
        },
        minor: 0,
    }
}

/// `Ok` when `current` runs a spec-`spec` package through the backend, else why not.
pub fn check(platform: ApplePlatform, current: OsVersion, spec: i32) -> Result<(), String> {
    let need = min_os(platform, spec);
    if current >= need {
        return Ok(());
    }
    Err(format!(
        "Core ML runs this package (specification version {spec}) from {} {need} on; this is {} \
         {current}. Convert for an older target (`--target ios17`, one head and length per package) \
         or use the CPU backend",
        platform.name(),
        platform.name()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(major: u32, minor: u32) -> OsVersion {
        OsVersion { major, minor }
    }

    #[test]
    fn packages_run_from_their_minimum_os_on() {
        use ApplePlatform::*;
        for (platform, spec, ok, too_old) in [
            (MacOs, 8, v(14, 0), v(13, 6)),
            (MacOs, 9, v(15, 0), v(14, 7)),
            (Ios, 8, v(17, 0), v(16, 7)),
            (Ios, 9, v(18, 1), v(17, 5)),
            (MacOs, 7, v(13, 0), v(12, 7)),
            (Ios, 6, v(16, 0), v(15, 8)),
        ] {
            assert!(
                check(platform, ok, spec).is_ok(),
                "{platform:?} {spec} {ok}"
            );
            let e = check(platform, too_old, spec).unwrap_err();
            assert!(
                e.contains(&format!("{} {}", platform.name(), min_os(platform, spec)))
                    && e.contains(&too_old.to_string())
                    && e.contains("CPU backend"),
                "{e}"
            );
        }
        // macOS 11 (where Rust binaries start) never reaches the Core ML calls.
        assert!(check(MacOs, v(11, 7), 6).is_err());
        assert!(v(14, 10) > v(14, 9) && v(15, 0) > v(14, 10));
    }
}
