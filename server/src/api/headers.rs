//! Header names of the distribution spec, and the parsers for range headers.

use axum::http::HeaderName;

pub const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
pub const DOCKER_UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");
pub const DOCKER_DISTRIBUTION_API_VERSION: HeaderName =
    HeaderName::from_static("docker-distribution-api-version");
pub const OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");
pub const OCI_FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");
/// The upload progress header (`Range: 0-<last>`), a response header in the upload protocol.
pub const RANGE: HeaderName = axum::http::header::RANGE;

/// A blob `Range` request resolved against the blob's size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ByteRange {
    /// No usable range: serve the whole blob.
    Whole,
    /// Serve `start..end` (end exclusive).
    Part(std::ops::Range<u64>),
    /// A syntactically valid range that lies outside the blob.
    Unsatisfiable,
}

/// Parses `bytes=a-b`, `bytes=a-` and `bytes=-n` (RFC 9110). Anything else, including several
/// ranges, is ignored and the whole blob served, as the RFC allows.
pub fn parse_range(header: Option<&str>, size: u64) -> ByteRange {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return ByteRange::Whole;
    };
    if spec.contains(',') {
        return ByteRange::Whole;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return ByteRange::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    let range = match (first.parse::<u64>(), last.parse::<u64>()) {
        (Ok(start), Ok(end)) if start <= end => start..end.saturating_add(1).min(size),
        (Ok(start), Err(_)) if last.is_empty() => start..size,
        (Err(_), Ok(suffix)) if first.is_empty() => {
            if suffix == 0 {
                return ByteRange::Unsatisfiable;
            }
            size.saturating_sub(suffix)..size
        }
        _ => return ByteRange::Whole,
    };
    if range.start >= size {
        ByteRange::Unsatisfiable
    } else {
        ByteRange::Part(range)
    }
}

/// Parses an upload chunk's `Content-Range`: `<start>-<end>` (inclusive), as the spec writes it,
/// also accepting a `bytes ` or `bytes=` prefix and a `/<total>` suffix that some clients send.
pub fn parse_content_range(header: &str) -> Option<(u64, u64)> {
    let spec = header.trim();
    let spec = spec
        .strip_prefix("bytes")
        .map_or(spec, |s| s.trim_start_matches([' ', '=']));
    let spec = spec.split_once('/').map_or(spec, |(range, _total)| range);
    let (start, end) = spec.split_once('-')?;
    let (start, end) = (start.trim().parse().ok()?, end.trim().parse().ok()?);
    (start <= end).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_ranges() {
        use ByteRange::*;
        let cases = [
            (None, Whole),
            (Some("bytes=0-0"), Part(0..1)),
            (Some("bytes=2-5"), Part(2..6)),
            (Some("bytes=2-"), Part(2..10)),
            (Some("bytes=-3"), Part(7..10)),
            (Some("bytes=-30"), Part(0..10)),
            (Some("bytes=5-100"), Part(5..10)),
            (Some("bytes=10-"), Unsatisfiable),
            (Some("bytes=10-20"), Unsatisfiable),
            (Some("bytes=-0"), Unsatisfiable),
            (Some("bytes=5-2"), Whole),
            (Some("bytes=0-1,3-4"), Whole),
            (Some("items=0-1"), Whole),
            (Some("bytes=x-y"), Whole),
        ];
        for (header, expected) in cases {
            assert_eq!(parse_range(header, 10), expected, "{header:?}");
        }
    }

    #[test]
    fn content_ranges() {
        assert_eq!(parse_content_range("0-99"), Some((0, 99)));
        assert_eq!(parse_content_range("bytes 100-199/*"), Some((100, 199)));
        assert_eq!(parse_content_range("bytes=5-5"), Some((5, 5)));
        for bad in [
            "",
            "-",
            "5-",
            "-5",
            "9-3",
            "a-b",
            "1-2-3",
            "18446744073709551616-1",
        ] {
            assert_eq!(parse_content_range(bad), None, "{bad:?}");
        }
    }
}
