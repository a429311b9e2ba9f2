//! Names and address lines as people will read them: one rule, used wherever a name, a title or
//! an address line is accepted (product and category titles, option and attribute labels,
//! location names, API key names, shipping addresses).
//!
//! Refused:
//! - control characters (C0, DEL, C1) and the line and paragraph separators U+2028/U+2029:
//!   they break logs, CSV exports and labels;
//! - bidirectional overrides and isolates (U+202A–U+202E, U+2066–U+2069): they make a value
//!   display as something other than what it is ("Trojan Source");
//! - a value made only of whitespace and invisible characters (zero-width space and joiners,
//!   word joiner, byte-order mark, soft hyphen, …): it would show as nothing.
//!
//! Invisible characters inside visible text stay allowed (a zero-width joiner in an emoji or an
//! Indic name, a right-to-left mark in Hebrew or Arabic text).

/// Why a value is refused; its `Display` is the message a client is shown for the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("must not contain control characters")]
    Control,
    #[error("must not contain bidirectional override or isolate characters (U+202A–U+202E, U+2066–U+2069)")]
    BidiControl,
    #[error("must contain a visible character")]
    Invisible,
}

/// Bidirectional embeddings, overrides and isolates.
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Characters that render as nothing on their own (besides whitespace).
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'                     // soft hyphen
            | '\u{034F}'               // combining grapheme joiner
            | '\u{061C}'               // Arabic letter mark
            | '\u{115F}' | '\u{1160}'  // Hangul fillers
            | '\u{17B4}' | '\u{17B5}'  // Khmer inherent vowels
            | '\u{180B}'..='\u{180F}'  // Mongolian variation selectors and vowel separator
            | '\u{200B}'..='\u{200F}'  // zero-width space, non-joiner, joiner, LRM, RLM
            | '\u{2060}'..='\u{2064}'  // word joiner, invisible operators
            | '\u{206A}'..='\u{206F}'  // deprecated format characters
            | '\u{3164}'               // Hangul filler
            | '\u{FE00}'..='\u{FE0F}'  // variation selectors
            | '\u{FEFF}'               // zero-width no-break space (byte-order mark)
            | '\u{FFA0}'               // half-width Hangul filler
            | '\u{FFF9}'..='\u{FFFB}'  // interlinear annotation
            | '\u{E0000}'..='\u{E007F}' // tags
            | '\u{E0100}'..='\u{E01EF}' // variation selectors supplement
    )
}

/// Checks a name, title, label or address line (already trimmed or not: surrounding
/// whitespace does not matter here).
pub fn check_display(s: &str) -> Result<(), TextError> {
    let mut visible = false;
    for c in s.chars() {
        if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
            return Err(TextError::Control);
        }
        if is_bidi_control(c) {
            return Err(TextError::BidiControl);
        }
        if !c.is_whitespace() && !is_invisible(c) {
            visible = true;
        }
    }
    if visible { Ok(()) } else { Err(TextError::Invisible) }
}

/// A label people give (a name, an option value): trimmed, 1–`max` characters, readable as it
/// shows ([`check_display`]). Answers the trimmed text, or what is wrong with it.
pub fn label(s: &str, max: usize) -> Result<String, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("must not be empty".into());
    }
    if t.chars().count() > max {
        return Err(format!("must be at most {max} characters"));
    }
    check_display(t).map_err(|e| e.to_string())?;
    Ok(t.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ordinary_names_pass() {
        for s in [
            "Linen shirt",
            "Ana Silva",
            "Rua Augusta 1, 2º Esq.",
            "São Paulo",
            "Łódź",
            "東京都渋谷区",
            "שלום\u{200F}",        // a right-to-left mark inside Hebrew text
            "👩\u{200D}💻 Studio", // a zero-width joiner inside an emoji
            "क्\u{200D}ष",
            "5901234123457",
        ] {
            assert_eq!(check_display(s), Ok(()), "{s:?}");
        }
    }

    #[test]
    fn control_characters_are_refused() {
        for s in ["a\u{0}b", "line\nbreak", "tab\there", "del\u{7F}", "c1\u{85}", "sep\u{2028}", "para\u{2029}"] {
            assert_eq!(check_display(s), Err(TextError::Control), "{s:?}");
        }
    }

    #[test]
    fn bidi_overrides_and_isolates_are_refused() {
        for c in
            ['\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}', '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}']
        {
            let s = format!("Invoice{c}fdp.exe");
            assert_eq!(check_display(&s), Err(TextError::BidiControl), "{s:?}");
        }
    }

    #[test]
    fn invisible_only_values_are_refused() {
        for s in [
            "",
            " ",
            "\u{200B}",
            "\u{200B}\u{200C}\u{200D}",
            " \u{2060} ",
            "\u{FEFF}",
            "\u{00AD}",
            "\u{3164}",
            "\u{E0041}",
        ] {
            assert_eq!(check_display(s), Err(TextError::Invisible), "{s:?}");
        }
    }

    proptest! {
        #[test]
        fn any_bidi_control_anywhere_is_refused(prefix in "[a-zA-Z0-9 ]{0,20}", suffix in "[a-zA-Z0-9 ]{0,20}",
                                                c in prop::sample::select(vec!['\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}', '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}'])) {
            prop_assert_eq!(check_display(&format!("{prefix}{c}{suffix}")), Err(TextError::BidiControl));
        }

        #[test]
        fn letters_with_zero_width_characters_pass(word in "[a-zA-Zà-ÿ]{1,10}", zw in "[\u{200B}\u{200C}\u{200D}\u{2060}\u{FEFF}]{0,5}") {
            prop_assert_eq!(check_display(&format!("{zw}{word}{zw}")), Ok(()));
        }

        #[test]
        fn only_invisible_characters_never_pass(s in "[ \u{200B}\u{200C}\u{200D}\u{2060}\u{FEFF}\u{00AD}\u{3000}]{0,12}") {
            prop_assert_eq!(check_display(&s), Err(TextError::Invisible));
        }

        #[test]
        fn any_control_character_is_refused(s in "[a-z]{0,5}", c in prop::char::range('\u{0}', '\u{1F}')) {
            prop_assert_eq!(check_display(&format!("{s}{c}{s}x")), Err(TextError::Control));
        }
    }
}
