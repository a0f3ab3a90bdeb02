//! Comparing the two transcripts of one case.

use super::transcript::Transcript;

/// Where two transcripts first differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    /// Index of the first differing line.
    pub line: usize,
    pub sim: Option<String>,
    pub real: Option<String>,
}

/// `None` if the transcripts are identical.
pub fn diff(sim: &Transcript, real: &Transcript) -> Option<Divergence> {
    let n = sim.lines.len().max(real.lines.len());
    (0..n).find_map(|i| {
        let (a, b) = (sim.lines.get(i), real.lines.get(i));
        (a != b).then(|| Divergence { line: i, sim: a.cloned(), real: b.cloned() })
    })
}

/// Both transcripts side by side, the differing lines marked.
pub fn render(sim: &Transcript, real: &Transcript) -> String {
    let mut out = String::new();
    let n = sim.lines.len().max(real.lines.len());
    for i in 0..n {
        let (a, b) = (sim.lines.get(i), real.lines.get(i));
        if a == b {
            out.push_str(&format!("      {}\n", a.map_or("", |s| s.as_str())));
        } else {
            out.push_str(&format!("  sim {}\n", a.map_or("(nothing)", |s| s.as_str())));
            out.push_str(&format!(" real {}\n", b.map_or("(nothing)", |s| s.as_str())));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_difference() {
        let mut a = Transcript::new("/c");
        let mut b = Transcript::new("/c");
        a.push("x".into());
        b.push("x".into());
        assert_eq!(diff(&a, &b), None);
        a.push("y".into());
        let d = diff(&a, &b).unwrap();
        assert_eq!((d.line, d.sim.as_deref(), d.real.as_deref()), (1, Some("y"), None));
        assert!(render(&a, &b).contains(" real (nothing)"));
    }
}
