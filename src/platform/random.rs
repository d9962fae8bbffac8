//! Passwords nobody can guess, from the operating system's random source.

/// `length` random ASCII letters and digits.
///
/// # Errors
///
/// When the operating system gives no random bytes.
pub fn alphanumeric(length: usize) -> std::io::Result<String> {
    const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    // 256 = 4 × 62 + 8: bytes from 248 on would favour the first eight letters, so they are
    // skipped.
    const FAIR_BELOW: u8 = 248;
    let mut text = String::with_capacity(length);
    let mut bytes = [0_u8; 64];
    while text.len() < length {
        getrandom::fill(&mut bytes)?;
        let wanted = length - text.len();
        text.extend(
            bytes
                .iter()
                .filter(|&&byte| byte < FAIR_BELOW)
                .map(|&byte| char::from(ALPHABET[usize::from(byte % 62)]))
                .take(wanted),
        );
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::alphanumeric;

    #[test]
    fn passwords_have_the_length_asked_for_only_letters_and_digits_and_differ() {
        let (first, second) = (alphanumeric(32).unwrap(), alphanumeric(32).unwrap());
        assert_eq!(first.len(), 32);
        assert!(
            first
                .chars()
                .all(|character| character.is_ascii_alphanumeric())
        );
        assert_ne!(first, second);
        assert_eq!(alphanumeric(200).unwrap().len(), 200);
    }
}
