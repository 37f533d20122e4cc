//! The limit of open files: raised at start from the soft limit to the hard
//! one, as nginx (`worker_rlimit_nofile`) and Go's runtime do. Every idle
//! connection is a descriptor (a WebSocket through the connector is two: one
//! at the service, one at the connector to the backend), and the usual soft
//! limit of 1024 would refuse connections long before memory runs short.

use std::sync::OnceLock;

/// What [`raise`] did, kept for the log (which starts later).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Raised {
    /// The soft limit was below the hard one and is now equal to it.
    To { from: Option<u64>, to: Option<u64> },
    /// The soft limit already equalled the hard one.
    Already(Option<u64>),
    /// The kernel refused the change (the soft limit stays as it was).
    Refused {
        soft: Option<u64>,
        hard: Option<u64>,
        errno: i32,
    },
}

static RAISED: OnceLock<Raised> = OnceLock::new();

/// Raises the soft limit of open files to the hard limit, once per process.
pub(crate) fn raise() -> Raised {
    *RAISED.get_or_init(|| {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let limit = getrlimit(Resource::Nofile);
        let (soft, hard) = (limit.current, limit.maximum);
        if soft == hard {
            return Raised::Already(soft);
        }
        let mut raised = limit;
        raised.current = hard;
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => Raised::To { from: soft, to: hard },
            Err(errno) => Raised::Refused {
                soft,
                hard,
                errno: errno.raw_os_error(),
            },
        }
    })
}

/// Logs what [`raise`] did (at debug; a refusal at warn), if it ran.
pub(crate) fn log() {
    let shown = |v: Option<u64>| v.map_or_else(|| "unlimited".to_owned(), |n| n.to_string());
    match RAISED.get() {
        Some(Raised::To { from, to }) => {
            tracing::debug!(from = %shown(*from), to = %shown(*to), "open-file limit raised to the hard limit");
        }
        Some(Raised::Already(limit)) => {
            tracing::debug!(limit = %shown(*limit), "open-file limit already at the hard limit");
        }
        Some(Raised::Refused { soft, hard, errno }) => {
            tracing::warn!(soft = %shown(*soft), hard = %shown(*hard), errno, "could not raise the open-file limit");
        }
        None => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_soft_limit_ends_at_the_hard_limit() {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let before = getrlimit(Resource::Nofile);
        // Start below the hard limit, so raising has something to do.
        if let Some(hard) = before.maximum
            && hard > 64
        {
            let mut lower = before;
            lower.current = Some(hard / 2);
            setrlimit(Resource::Nofile, lower).unwrap();
        }
        let raised = raise();
        let after = getrlimit(Resource::Nofile);
        assert_eq!(after.current, after.maximum, "{raised:?}");
        assert!(matches!(raised, Raised::To { .. } | Raised::Already(_)), "{raised:?}");
        // Idempotent: the second call reports the first.
        assert_eq!(raise(), raised);
    }
}
