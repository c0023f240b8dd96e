//! The command line's durations (`24h`, `5s`) and byte sizes (`16MiB`).

use std::time::Duration;

/// Why a duration or size did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseUnitError {
    /// Not a duration such as `30s`, `15m`, `24h` or `7d`.
    #[error("{input:?} is not a duration such as 30s, 15m, 24h or 7d")]
    Duration {
        /// The rejected text (shortened).
        input: String,
    },
    /// Not a size such as `65536`, `64KiB` or `16MiB`.
    #[error("{input:?} is not a size such as 65536, 64KiB or 16MiB")]
    Size {
        /// The rejected text (shortened).
        input: String,
    },
    /// Zero where a positive value is needed.
    #[error("{input:?} must be greater than zero")]
    Zero {
        /// The rejected text.
        input: String,
    },
}

/// Parses a positive duration: a number with a unit (`30s`, `15m`, `24h`, `7d`, or
/// combinations such as `1h30m`), as humantime reads them.
pub fn parse_duration(input: &str) -> Result<Duration, ParseUnitError> {
    let duration =
        humantime::parse_duration(input.trim()).map_err(|_| ParseUnitError::Duration {
            input: shorten(input),
        })?;
    if duration.is_zero() {
        return Err(ParseUnitError::Zero {
            input: shorten(input),
        });
    }
    Ok(duration)
}

/// Parses a positive byte size: a whole number with an optional unit, `B`, `KiB`, `MiB` or
/// `GiB` (powers of 1024; `K`, `M`, `G`, `KB`, `MB` and `GB` mean the same, case-insensitive).
pub fn parse_byte_size(input: &str) -> Result<u64, ParseUnitError> {
    let err = || ParseUnitError::Size {
        input: shorten(input),
    };
    let text = input.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits.parse().map_err(|_| err())?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(err()),
    };
    let bytes = number.checked_mul(multiplier).ok_or_else(err)?;
    if bytes == 0 {
        return Err(ParseUnitError::Zero {
            input: shorten(input),
        });
    }
    Ok(bytes)
}

fn shorten(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_the_contract() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(15 * 60)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(24 * 3600)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(matches!(
            parse_duration("0s"),
            Err(ParseUnitError::Zero { .. })
        ));
        for bad in ["", "24", "h", "-5s", "tomorrow", "5 parsecs"] {
            assert!(
                matches!(parse_duration(bad), Err(ParseUnitError::Duration { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn sizes_use_powers_of_1024() {
        assert_eq!(parse_byte_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_byte_size("16mb"), Ok(16 << 20));
        assert_eq!(parse_byte_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_byte_size("1G"), Ok(1 << 30));
        assert_eq!(parse_byte_size("65536"), Ok(65536));
        assert_eq!(parse_byte_size("512 B"), Ok(512));
        assert!(matches!(
            parse_byte_size("0"),
            Err(ParseUnitError::Zero { .. })
        ));
        for bad in [
            "",
            "MiB",
            "16TiB",
            "1.5MiB",
            "-1",
            "99999999999999999999GiB",
        ] {
            assert!(
                matches!(parse_byte_size(bad), Err(ParseUnitError::Size { .. })),
                "{bad:?}"
            );
        }
    }
}
