//! Tab completion of the path being typed into the Model or Dataset field,
//! as a shell does it: the longest common prefix of the matching entries,
//! a `/` after a lone folder. Pure (the event loop lists the folder), so
//! it is tested without a file system.

/// One entry of the folder the typed path points into.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub is_dir: bool,
}

/// What Tab does to `typed`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The new text of the field (unchanged when nothing matches).
    pub text: String,
    /// The matching names when more than one matches (folders end in `/`),
    /// for the status line; empty when the completion is unique or none.
    pub choices: Vec<String>,
}

/// The folder to list for `typed`, and the partial name after it:
/// `"models/res"` → (`"models/"`, `"res"`); `"res"` → (`""`, `"res"`).
pub fn split(typed: &str) -> (&str, &str) {
    match typed.rfind('/') {
        Some(i) => typed.split_at(i + 1),
        None => ("", typed),
    }
}

/// Complete `typed` against the entries of its folder ([`split`]). Hidden
/// entries only match a partial name that starts with a dot.
pub fn complete(typed: &str, entries: &[Entry]) -> Completion {
    let (dir, partial) = split(typed);
    let mut matches: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.name.starts_with(partial))
        .filter(|e| partial.starts_with('.') || !e.name.starts_with('.'))
        .collect();
    matches.sort_by(|a, b| a.name.cmp(&b.name));
    match matches.as_slice() {
        [] => Completion {
            text: typed.to_string(),
            choices: vec![],
        },
        [one] => Completion {
            text: format!("{dir}{}{}", one.name, if one.is_dir { "/" } else { "" }),
            choices: vec![],
        },
        many => {
            let first = &many[0].name;
            // Longest prefix shared by every match, on char boundaries.
            let common = many[1..].iter().fold(first.len(), |len, e| {
                first
                    .char_indices()
                    .zip(e.name.chars())
                    .take_while(|((i, a), b)| *i < len && a == b)
                    .last()
                    .map_or(0, |((i, a), _)| i + a.len_utf8())
            });
            Completion {
                text: format!("{dir}{}", &first[..common]),
                choices: many
                    .iter()
                    .map(|e| format!("{}{}", e.name, if e.is_dir { "/" } else { "" }))
                    .collect(),
            }
        }
    }
}

/// Ctrl-W: remove the last path component (and the `/` after it, if the
/// text ends there), as a shell's word erase does on paths.
pub fn erase_component(typed: &str) -> String {
    let trimmed = typed.strip_suffix('/').unwrap_or(typed);
    match trimmed.rfind('/') {
        Some(i) => trimmed[..=i].to_string(),
        None => String::new(),
    }
}
