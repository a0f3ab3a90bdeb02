//! Flavors: named overlays deep-merged over the base manifest.

use serde_json::Value;

/// Merges `overlay` into `base`: where both hold an object, keys are merged recursively;
/// anything else (scalars, arrays, an object over a non-object) is replaced by the overlay.
///
/// Arrays are replaced, not concatenated: a flavor's `rpc_tags` is the whole tag list, which
/// is what a reader of the flavor expects to see. Recursion depth is that of `overlay`, which
/// `serde_json` caps at 128 levels when parsing.
pub(crate) fn deep_merge(base: &mut Value, overlay: &Value) {
    match (base, overlay) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(bv) => deep_merge(bv, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn objects_merge_and_everything_else_is_replaced() {
        let mut base = json!({
            "A": {"x": 1, "y": {"deep": true, "keep": 1}, "list": [1, 2]},
            "B": {"z": "base"},
            "C": 5
        });
        let overlay = json!({
            "A": {"y": {"deep": false}, "list": [3], "new": null},
            "C": {"now": "an object"},
            "D": {"added": 1}
        });
        deep_merge(&mut base, &overlay);
        assert_eq!(
            base,
            json!({
                "A": {"x": 1, "y": {"deep": false, "keep": 1}, "list": [3], "new": null},
                "B": {"z": "base"},
                "C": {"now": "an object"},
                "D": {"added": 1}
            })
        );
    }
}
