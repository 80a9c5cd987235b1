//! Python's renderings that Stonegate's id hash depends on
//! (merchant-feeds.md §5): `str()` of the decoded JSON amount. The
//! timestamp's `isoformat()` is `accord_plugin_sdk::time::format_iso`.

use serde_json::Value;

/// `str(value)` as Python renders the value `json.loads` produced: a float
/// as its shortest round-trip repr (`24.5`, `24.0`, `1e+16`), an integer as
/// its digits, a string verbatim. `None` for other types.
pub fn str_of(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) if n.is_f64() => n.as_f64().map(float_repr),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// CPython's `repr(float)`: the shortest digits that round-trip, written
/// positionally when the decimal exponent is in -4..16 (always with a `.0`
/// when there is no fraction), otherwise as `d.ddde±XX`.
pub fn float_repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".to_string();
    }
    if x.is_infinite() {
        return if x < 0.0 { "-inf" } else { "inf" }.to_string();
    }
    // Rust's `{:e}` gives the same shortest round-trip digits: "2.45e1".
    let sci = format!("{:e}", x.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if x.is_sign_negative() { "-" } else { "" };
    // Python's rule: decpt = exp + 1 (point after decpt digits);
    // exponent form when decpt <= -4 or decpt > 16.
    let decpt = exp + 1;
    if decpt <= -4 || decpt > 16 {
        let (first, rest) = digits.split_at(1);
        let frac = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let esign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{first}{frac}e{esign}{:02}", exp.unsigned_abs());
    }
    let n = digits.len() as i32;
    let body = if decpt <= 0 {
        format!("0.{}{digits}", "0".repeat((-decpt) as usize))
    } else if decpt >= n {
        format!("{digits}{}.0", "0".repeat((decpt - n) as usize))
    } else {
        let (int, frac) = digits.split_at(decpt as usize);
        format!("{int}.{frac}")
    };
    format!("{sign}{body}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_render_like_python_repr() {
        for (x, want) in [
            (24.5, "24.5"),
            (24.0, "24.0"),
            (23.99, "23.99"),
            (3.85, "3.85"),
            (0.1 + 0.2, "0.30000000000000004"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (-12.5, "-12.5"),
            (100.0, "100.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (123456789012345680.0, "1.2345678901234568e+17"),
            (1e100, "1e+100"),
        ] {
            assert_eq!(float_repr(x), want, "{x:e}");
        }
    }

    #[test]
    fn json_values_render_like_python_str() {
        let v: Value = serde_json::from_str(r#"[24.5, 24.0, 24, -3, "24.50", 1e2, null]"#).unwrap();
        let got: Vec<_> = v.as_array().unwrap().iter().map(str_of).collect();
        assert_eq!(
            got,
            [
                Some("24.5".to_string()),
                Some("24.0".to_string()),
                Some("24".to_string()),
                Some("-3".to_string()),
                Some("24.50".to_string()),
                Some("100.0".to_string()),
                None
            ]
        );
    }
}
