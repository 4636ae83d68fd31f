//! The ABI's wire formats: header maps (count, lengths, NUL-terminated names and values)
//! and property paths (segments joined by NUL).

/// Encodes `pairs` as a header map.
pub(crate) fn encode_map<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> Vec<u8> {
    let mut size = 4;
    for (name, value) in pairs {
        size += 10 + name.as_ref().len() + value.as_ref().len();
    }
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&len32(pairs.len()).to_le_bytes());
    for (name, value) in pairs {
        out.extend_from_slice(&len32(name.as_ref().len()).to_le_bytes());
        out.extend_from_slice(&len32(value.as_ref().len()).to_le_bytes());
    }
    for (name, value) in pairs {
        out.extend_from_slice(name.as_ref());
        out.push(0);
        out.extend_from_slice(value.as_ref());
        out.push(0);
    }
    out
}

/// Decodes a header map; `None` if the bytes are not one. Names and values that are not
/// UTF-8 are decoded lossily.
pub(crate) fn decode_map(bytes: &[u8]) -> Option<Vec<(String, String)>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let count = read_u32(bytes, 0)? as usize;
    let mut pairs = Vec::with_capacity(count.min(1024));
    let mut data = 4usize.checked_add(count.checked_mul(8)?)?;
    for n in 0..count {
        let name_len = read_u32(bytes, 4 + n * 8)? as usize;
        let value_len = read_u32(bytes, 8 + n * 8)? as usize;
        let name = bytes.get(data..data.checked_add(name_len)?)?;
        data += name_len + 1;
        let value = bytes.get(data..data.checked_add(value_len)?)?;
        data += value_len + 1;
        pairs.push((
            String::from_utf8_lossy(name).into_owned(),
            String::from_utf8_lossy(value).into_owned(),
        ));
    }
    Some(pairs)
}

/// Encodes a property path (`["source", "principal"]` → `source\0principal`).
pub(crate) fn encode_path(path: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, segment) in path.iter().enumerate() {
        if i > 0 {
            out.push(0);
        }
        out.extend_from_slice(segment.as_bytes());
    }
    out
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let word = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([word[0], word[1], word[2], word[3]]))
}

/// A length as the ABI's `u32` (saturating: nothing a filter sends is 4 GiB).
fn len32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_round_trip() {
        let pairs = [(":path", "/a"), ("x-empty", ""), ("ünï", "cödé")];
        let decoded = decode_map(&encode_map(&pairs)).expect("decodes");
        let expected: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(decoded, expected);
    }

    #[test]
    fn truncated_maps_are_refused() {
        let bytes = encode_map(&[("name", "value")]);
        for cut in 1..bytes.len() - 1 {
            assert_eq!(decode_map(&bytes[..cut]), None, "cut at {cut}");
        }
    }

    #[test]
    fn paths_join_with_nul() {
        assert_eq!(encode_path(&["source", "principal"]), b"source\0principal");
        assert_eq!(encode_path(&["route_name"]), b"route_name");
    }
}
