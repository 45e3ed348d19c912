//! "Did you mean …?": the nearest known name to a mistyped one.

/// Words people bring from other firewalls and clouds, and what this
/// document calls them (Alibaba calls basic and advanced groups `normal`
/// and `enterprise`).
const SYNONYMS: &[(&str, &str)] = &[
    ("allow", "accept"),
    ("permit", "accept"),
    ("pass", "accept"),
    ("deny", "drop"),
    ("reject", "drop"),
    ("block", "drop"),
    ("in", "ingress"),
    ("inbound", "ingress"),
    ("out", "egress"),
    ("outbound", "egress"),
    ("icmp6", "icmpv6"),
    ("ipv6-icmp", "icmpv6"),
    ("any", "all"),
    ("-1", "all"),
    ("normal", "basic"),
    ("enterprise", "advanced"),
    ("v4", "ipv4"),
    ("inet", "ipv4"),
    ("v6", "ipv6"),
    ("inet6", "ipv6"),
];

/// The candidate closest to `word`, if one is close enough to be a likely
/// typo: the same apart from case, or within one edit per three characters
/// (at least one). Ties go to the first candidate, so hints are stable.
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    let mut best: Option<(usize, &str)> = None;
    for candidate in candidates {
        if candidate == word {
            continue;
        }
        let distance = if candidate.eq_ignore_ascii_case(word) {
            0
        } else {
            strsim::damerau_levenshtein(word, candidate)
        };
        if distance <= limit && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, c)| c)
}

/// The keyword `word` was probably meant to be: a synonym, or a near miss.
pub(crate) fn keyword<'a>(word: &str, choices: &[&'a str]) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    let synonym = SYNONYMS
        .iter()
        .find(|(from, _)| *from == lower)
        .and_then(|(_, to)| choices.iter().copied().find(|c| c == to));
    synonym.or_else(|| closest(word, choices.iter().copied()))
}

pub(crate) fn did_you_mean(what: impl std::fmt::Display) -> String {
    format!("did you mean {what}?")
}
