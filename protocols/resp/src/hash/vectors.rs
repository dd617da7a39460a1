//! Replays placements recorded from a real twemproxy (see the module docs
//! of `hash` and the header of each `testdata/*.txt` file).
//!
//! File format: `distribution`, `hash`, optional `hash_tag`, one `server`
//! line per backend in twemproxy syntax, optional `ejected <index>`, then one
//! `<server index> <key>` line per key, the key with `\xNN` escapes for
//! bytes outside printable ASCII, space and backslash.

use super::{Distribution, Distributor, HashFunction, HashTag, ServerSpec};

macro_rules! vector_files {
    ($($name:literal),* $(,)?) => {
        [$(($name, include_str!(concat!("testdata/", $name, ".txt")))),*]
    };
}

const FILES: [(&str, &str); 22] = vector_files![
    "ketama_fnv1a_64",
    "ketama_md5_weighted_named",
    "ketama_murmur_named",
    "ketama_fnv1a_64_hash_tag",
    "ketama_md5_weighted_named_ejected",
    "modula_crc32a",
    "modula_crc32",
    "modula_crc16",
    "modula_hsieh_weighted",
    "modula_hsieh_weighted_ejected",
    "ketama_all_one_at_a_time",
    "ketama_all_md5",
    "ketama_all_crc16",
    "ketama_all_crc32",
    "ketama_all_crc32a",
    "ketama_all_fnv1_64",
    "ketama_all_fnv1a_64",
    "ketama_all_fnv1_32",
    "ketama_all_fnv1a_32",
    "ketama_all_hsieh",
    "ketama_all_murmur",
    "ketama_all_jenkins",
];

struct Case {
    distributor: Distributor,
    placements: Vec<(usize, Vec<u8>)>,
}

fn parse(name: &str, text: &str) -> Case {
    let mut distribution = None;
    let mut hash = None;
    let mut tag = None;
    let mut servers = Vec::new();
    let mut ejected = None;
    let mut placements = Vec::new();
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        let (head, rest) = line.split_once(' ').unwrap_or((line, ""));
        match head {
            "distribution" => distribution = Some(rest.parse::<Distribution>().unwrap()),
            "hash" => hash = Some(rest.parse::<HashFunction>().unwrap()),
            "hash_tag" => tag = Some(rest.parse::<HashTag>().unwrap()),
            "server" => servers.push(rest.parse::<ServerSpec>().unwrap()),
            "ejected" => ejected = Some(rest.parse::<usize>().unwrap()),
            index => placements.push((index.parse().unwrap(), unescape(rest))),
        }
    }
    let mut distributor = Distributor::new(
        distribution.unwrap_or_else(|| panic!("{name}: no distribution")),
        hash.unwrap_or_else(|| panic!("{name}: no hash")),
        tag,
        &servers,
    )
    .unwrap();
    if let Some(ejected) = ejected {
        let live: Vec<bool> = (0..servers.len()).map(|i| i != ejected).collect();
        distributor = distributor.with_live(&live).unwrap();
    }
    Case {
        distributor,
        placements,
    }
}

fn unescape(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            let hex = std::str::from_utf8(&bytes[i + 2..i + 4]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

#[test]
fn every_key_lands_where_twemproxy_put_it() {
    let mut checked = 0;
    let mut failures = Vec::new();
    for (name, text) in FILES {
        let case = parse(name, text);
        assert!(case.placements.len() >= 200, "{name}: too few keys");
        let wrong: Vec<String> = case
            .placements
            .iter()
            .filter_map(|(index, key)| {
                let got = case.distributor.server_for_key(key);
                (got != *index)
                    .then(|| format!("{}: twemproxy {index}, attache {got}", key.escape_ascii()))
            })
            .collect();
        if !wrong.is_empty() {
            failures.push(format!(
                "{name}: {} of {} keys misplaced, first {}",
                wrong.len(),
                case.placements.len(),
                wrong[0]
            ));
        }
        checked += case.placements.len();
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(checked > 5000);
}

#[test]
fn vectors_cover_every_hash_function() {
    for function in HashFunction::ALL {
        let covered = FILES
            .iter()
            .any(|(_, text)| text.lines().any(|line| line == format!("hash {function}")));
        assert!(covered, "no vectors for {function}");
    }
}
