//! The roles table in `docs/api.md` against the one table in code ([`Role::grants`]).
//! Refresh it with `UPDATE_DOCS=1 cargo test -p backroom-api --test roles_doc`.

use backroom_auth::{Permission, Role};

const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api.md");
const START: &str = "<!-- roles:start -->";
const END: &str = "<!-- roles:end -->";

/// What each role may do, as the Markdown table that sits between the markers.
fn table() -> String {
    let mut out = String::from("| permission | lets a key |");
    for r in Role::ALL {
        out.push_str(&format!(" `{r}` |"));
    }
    out.push_str("\n|---|---|");
    out.push_str(&":-:|".repeat(Role::ALL.len()));
    out.push('\n');
    for &p in Permission::ALL {
        out.push_str(&format!("| `{p:?}` | {} |", p.describe()));
        for r in Role::ALL {
            out.push_str(if r.allows(p) { " ✓ |" } else { " – |" });
        }
        out.push('\n');
    }
    out
}

#[test]
fn the_documented_roles_are_the_table() {
    let doc = std::fs::read_to_string(DOC).expect("docs/api.md");
    let (Some(start), Some(end)) = (doc.find(START), doc.find(END)) else {
        panic!("docs/api.md lacks the {START} … {END} markers");
    };
    let expected = format!("{}{START}\n{}{END}{}", &doc[..start], table(), &doc[end + END.len()..]);
    if std::env::var("UPDATE_DOCS").is_ok_and(|v| v == "1") {
        if expected != doc {
            std::fs::write(DOC, &expected).expect("write docs/api.md");
        }
        return;
    }
    assert!(
        doc == expected,
        "the roles table in docs/api.md differs from backroom_auth::Role::grants: run \
         `UPDATE_DOCS=1 cargo test -p backroom-api --test roles_doc` and commit docs/api.md"
    );
}
