//! Kubernetes resource quantities (`500m`, `2`, `512Mi`, `1Gi`, `1e3`) turned into the numbers
//! Docker's resource limits take: bytes for memory, nano-CPUs for CPU.
//!
//! Only what `resources.limits` needs; a quantity this does not understand is an error the pod
//! shows (`CreateContainerConfigError`), never a silently dropped limit.

/// The value of a quantity as a float (`"500m"` → 0.5, `"1Ki"` → 1024).
pub(crate) fn parse(quantity: &str) -> Result<f64, String> {
    let text = quantity.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-')).unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| format!("quantity {quantity:?} does not start with a number"))?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        "Pi" => 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0,
        "Ei" => 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0,
        exponent if exponent.starts_with(['e', 'E']) => {
            let power: i32 = exponent[1..].parse().map_err(|_| format!("quantity {quantity:?} has a bad exponent"))?;
            10f64.powi(power)
        }
        other => return Err(format!("quantity {quantity:?} has an unknown suffix {other:?}")),
    };
    Ok(number * factor)
}

/// A memory quantity in bytes, rounded up as Kubernetes does.
pub(crate) fn bytes(quantity: &str) -> Result<i64, String> {
    Ok(parse(quantity)?.ceil() as i64)
}

/// A CPU quantity in nano-CPUs (Docker's `NanoCpus`: `"500m"` → 500 000 000).
pub(crate) fn nano_cpus(quantity: &str) -> Result<i64, String> {
    Ok((parse(quantity)? * 1e9).round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_bytes(input: &str, expect: i64) {
        assert_eq!(bytes(input), Ok(expect), "{input}");
    }

    #[test]
    fn memory_quantities() {
        check_bytes("512Mi", 512 * 1024 * 1024);
        check_bytes("1Gi", 1024 * 1024 * 1024);
        check_bytes("24Gi", 24 * 1024 * 1024 * 1024);
        check_bytes("1G", 1_000_000_000);
        check_bytes("128974848", 128_974_848);
        check_bytes("129e6", 129_000_000);
        check_bytes("1.5Ki", 1536);
    }

    #[test]
    fn cpu_quantities() {
        assert_eq!(nano_cpus("500m"), Ok(500_000_000));
        assert_eq!(nano_cpus("2"), Ok(2_000_000_000));
        assert_eq!(nano_cpus("0.25"), Ok(250_000_000));
        assert_eq!(nano_cpus("100u"), Ok(100_000));
    }

    #[test]
    fn bad_quantities_are_errors() {
        assert!(parse("lots").is_err());
        assert!(parse("5Xi").is_err());
        assert!(parse("").is_err());
    }
}
