//! The table of problem codes ([`backroom_kernel::Code`]) against what documents it: the list
//! in `docs/api.md` and the OpenAPI document's error descriptions.
//! Refresh the list with `UPDATE_DOCS=1 cargo test -p backroom-api --test error_codes`.

use backroom_kernel::Code;

const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api.md");
const START: &str = "<!-- error-codes:start -->";
const END: &str = "<!-- error-codes:end -->";

/// The list of codes as the Markdown table that sits between the markers.
fn table() -> String {
    let mut out = String::from("| status | code | when |\n|---|---|---|\n");
    for code in Code::ALL {
        out.push_str(&format!("| {} | `{}` | {} |\n", code.status(), code.as_str(), code.when()));
    }
    out
}

/// `doc` with the block between the markers replaced by the table (markers added under an
/// `## Error codes` heading at the end when missing).
fn with_table(doc: &str) -> String {
    let block = format!("{START}\n{}{END}", table());
    match (doc.find(START), doc.find(END)) {
        (Some(start), Some(end)) if start < end => format!("{}{block}{}", &doc[..start], &doc[end + END.len()..]),
        _ => {
            let sep = match doc {
                "" => "",
                d if d.ends_with("\n\n") => "",
                d if d.ends_with('\n') => "\n",
                _ => "\n\n",
            };
            format!("{doc}{sep}## Error codes\n\n{block}\n")
        }
    }
}

#[test]
fn the_documented_codes_are_the_table() {
    let doc = std::fs::read_to_string(DOC).unwrap_or_default();
    let expected = with_table(&doc);
    if std::env::var("UPDATE_DOCS").is_ok_and(|v| v == "1") {
        if expected != doc {
            std::fs::write(DOC, &expected).expect("write docs/api.md");
        }
        return;
    }
    assert!(
        doc == expected,
        "the error codes in docs/api.md differ from backroom_kernel::Code: run \
         `UPDATE_DOCS=1 cargo test -p backroom-api --test error_codes` and commit docs/api.md"
    );
}

/// Names in backticks that are members of the problem document, not codes.
const MEMBERS: [&str; 4] = ["errors", "items", "reason", "order_id"];

#[test]
fn error_descriptions_in_openapi_name_codes_of_their_status() {
    let doc: serde_json::Value = serde_json::from_str(&backroom_api::openapi::json()).unwrap();
    let mut named = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            for (status, res) in op["responses"].as_object().unwrap() {
                if !status.starts_with(['4', '5']) {
                    continue;
                }
                let description = res["description"].as_str().unwrap_or_default();
                // Every `lower_snake` word in backticks is a code or a member of the problem.
                let words = description.split('`').skip(1).step_by(2);
                let snake = |w: &&str| w.chars().all(|c| c.is_ascii_lowercase() || c == '_') && !w.is_empty();
                for word in words.filter(snake).filter(|w| !MEMBERS.contains(w)) {
                    let code = Code::parse(word)
                        .unwrap_or_else(|| panic!("{method} {path} {status}: `{word}` is not a code in the table"));
                    assert_eq!(
                        code.status().to_string(),
                        *status,
                        "{method} {path}: `{word}` is listed under {status}, but the table answers it {}",
                        code.status()
                    );
                    named += 1;
                }
            }
        }
    }
    assert!(named > 0, "no error description names a code");
}

#[test]
fn the_block_is_replaced_and_the_rest_kept() {
    let doc = format!("# API\n\nBefore.\n\n{START}\nold\n{END}\n\nAfter.\n");
    let new = with_table(&doc);
    assert!(new.starts_with("# API\n\nBefore.\n\n<!-- error-codes:start -->\n| status | code | when |\n"));
    assert!(new.ends_with(&format!("{END}\n\nAfter.\n")));
    assert_eq!(with_table(&new), new);
    assert_eq!(with_table(""), format!("## Error codes\n\n{START}\n{}{END}\n", table()));
}
