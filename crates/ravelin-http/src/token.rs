//! HTTP syntax shared by every crate that parses or writes field values.

/// RFC 9110 §5.6.2 `tchar`: a byte allowed in a `token` (method names, directive names, list
/// members written without quotes).
pub const fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_separators() {
        assert!(b"GET!#$%&'*+-.^_`|~09azAZ".iter().all(|b| is_tchar(*b)));
        assert!(
            !b"\"(),/:;<=>?@[\\]{} \t\x7f\x00"
                .iter()
                .any(|b| is_tchar(*b))
        );
    }
}
